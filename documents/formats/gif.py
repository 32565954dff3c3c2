"""GIF images (``image/gif``) -> their first frame, read like any uploaded image (one page, one image work).

The header is checked first (:func:`~documents.images.probe_image`: an image bomb is refused before any pixel
is decoded); only the first frame is decoded (an animation's other frames are never read), flattened on white
when it has transparency, and handed on as a PNG: what is stored, shown, OCRed and embedded is that frame.
"""

from __future__ import annotations

import io

from ..extract import DocumentRejected
from ..filetypes import describe_format, sniff_image_format
from ..images import ImageRejected, decode_image


def parse_gif(data: bytes, settings):  # -> ParsedDocument (documents.reader imports this module lazily)
    from ..reader import OcrWork, ParsedDocument, ParsedPage

    png, width, height = first_frame(data)
    work = OcrWork("image", 1, (0.0, 0.0, float(width), float(height)), png, mime="image/png", width=width,
                   height=height)  # fmt: skip
    return ParsedDocument(1, iter([ParsedPage(1, (), (work,))]))


def first_frame(data: bytes) -> tuple[bytes, int, int]:
    """(PNG bytes, width, height) of the first frame of a GIF; DocumentRejected for anything else."""
    real = sniff_image_format(data)
    if real != "GIF":
        raise DocumentRejected(f"not a GIF: its bytes are {describe_format(real)}; upload it with the right type "
                               "or extension")  # fmt: skip
    try:
        frame = decode_image(data)  # header checked first; the first frame only
    except ImageRejected as err:
        raise DocumentRejected(str(err)) from err  # its message already says what to do
    out = io.BytesIO()
    frame.save(out, format="PNG", compress_level=1)
    return out.getvalue(), frame.width, frame.height
