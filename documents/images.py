"""Image bytes we can trust: sniffing, header-only size checks, bounded decoding. Pure and synchronous.

Guard rails (every refusal is an :class:`ImageRejected` whose message says what is wrong):

- the real type is sniffed from the leading bytes (magic numbers), never taken from a file name or a declared
  content type; only PNG, JPEG, WebP and TIFF are accepted;
- the dimensions are read from the header (PIL's lazy ``Image.open`` does not decode pixels) and checked
  *before* any pixel is decoded: 0 on a side is refused, more than ``MAX_IMAGE_PIXELS`` pixels (an "image
  bomb": a tiny file claiming e.g. 100000 x 100000) is refused at once, in microseconds and without memory;
- decoding errors (truncated or corrupt streams) become a refusal, not a crash; JPEGs larger than the OCR
  budget are decoded at a reduced scale (``Image.draft``), so an accepted image costs at most
  ``MAX_IMAGE_PIXELS`` * 4 bytes while decoding.

``Image.MAX_IMAGE_PIXELS`` is set to the same budget on import, so that any other PIL use in this process
also raises instead of allocating gigabytes (PIL raises DecompressionBombError above twice that value).
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# 40 megapixels: a 300-dpi A3 scan (3508 x 4961 = 17.4 MP) or a 6000 x 6000 photo pass; 100000 x 100000 does not.
# Decoded as RGBA that is 160 MB at most, for one image at a time.
MAX_IMAGE_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

class ImageRejected(Exception):
    """An image that cannot be used; ``str(exc)`` says why (meant for the person who uploaded it)."""


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, before decoding: ``format`` as PIL names it ("PNG", "JPEG", "WEBP", "TIFF")."""

    format: str
    width: int
    height: int
    mode: str


def probe_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> ImageHeader:
    """Header dimensions of an image, refusing empty, 0-sized, undecodable-header and over-budget images.

    Reads only the header: constant time and memory whatever the claimed size.
    """
    if not data:
        raise ImageRejected("empty image: 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height, fmt, mode = img.width, img.height, img.format or "?", img.mode
    except Image.DecompressionBombError as exc:  # PIL's own check on open (> 2 * MAX_IMAGE_PIXELS)
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(claimed.group(1)):,} pixels" if claimed else "the claimed size"
        raise ImageRejected(f"image too large: {pixels} is over the limit of {max_pixels:,} (a decompression bomb, "
                            "or a scan at an excessive resolution); downscale it and upload it again") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected(f"undecodable image: the header cannot be read ({exc})") from exc
    if width <= 0 or height <= 0:
        raise ImageRejected(f"empty image: {width}x{height} pixels")
    if width * height > max_pixels:
        raise ImageRejected(
            f"image too large: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} "
            "(a decompression bomb, or a scan at an excessive resolution); downscale it and upload it again"
        )
    return ImageHeader(fmt, width, height, mode)


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS, target_pixels: int | None = None) -> Image.Image:
    """Decode an image (first frame) to RGB or L after :func:`probe_image` passed.

    ``target_pixels``: when the image is larger, JPEGs are decoded at a reduced scale (cheap) and other
    formats are downscaled after decoding, so the result has at most about that many pixels.
    Raises ImageRejected for anything that cannot be decoded.
    """
    header = probe_image(data, max_pixels=max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if target_pixels and header.width * header.height > target_pixels and header.format == "JPEG":
                scale = (target_pixels / (header.width * header.height)) ** 0.5
                img.draft("RGB", (max(1, int(header.width * scale)), max(1, int(header.height * scale))))
            img.load()
            if img.mode not in ("RGB", "L"):
                img = _flatten(img)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(f"image too large: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageRejected(f"undecodable image: the pixel data is corrupt or truncated ({exc})") from exc
    if target_pixels and img.width * img.height > target_pixels * 1.05:
        scale = (target_pixels / (img.width * img.height)) ** 0.5
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.Resampling.BILINEAR)
    return img


def _flatten(img: Image.Image) -> Image.Image:
    """RGB on a white background for images with alpha or a palette; L for 1-bit and 16-bit greys."""
    if img.mode in ("1", "I;16", "I;16B", "I;16L", "I"):
        return img.convert("L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def digest(data: bytes) -> str:
    """Content address of stored image bytes (sha256 hex, first 32 chars)."""
    return hashlib.sha256(data).hexdigest()[:32]
