"""The prompt (numbered sources) and the reading of `[n]` citation markers in a streamed answer."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.messages import Hit

MAX_PICTURES = 4  # pictures of image hits sent to a vision provider per question: the best-ranked ones
MAX_PICTURE_BYTES = 4 * 1024 * 1024  # a larger stored image is described by its text only


@dataclass(frozen=True)
class Picture:
    """An image hit's stored picture, as a vision provider receives it."""

    mime: str
    data: bytes

SYSTEM_PROMPT = (
    "You answer questions about the user's documents. Use only the numbered sources given with the question; "
    "never use other knowledge. After each statement, cite the sources it comes from as [n] (for example [1] or "
    "[2][3]), using only the numbers of the sources given. If the sources do not contain the answer, say so "
    "plainly instead of guessing. Answer in the language of the question, briefly."
)


def format_source(n: int, hit: Hit) -> str:
    """`[n] <filename>, page <p> (<section path>): <text>` (an office file's locator for its page), the text
    labelled for image and table hits."""
    where = f"{hit.filename}, {hit.locator}" if hit.locator else f"{hit.filename}, page {hit.page}"
    if hit.headings and not hit.locator:  # a locator names the section path already
        where += f" ({' > '.join(hit.headings)})"
    text = " ".join(hit.text.split()) if hit.modality != "table" else hit.text.strip()
    if hit.modality == "image":
        caption = hit.image.caption if hit.image is not None else None
        if caption and caption not in hit.text:
            text = f"{caption} {text}"
        text = f"Image caption/OCR text: {text}"
    elif hit.modality == "table":
        text = f"Table:\n{text}"
    return f"[{n}] {where}: {text}"


def build_messages(
    question: str, hits: Sequence[Hit], pictures: Mapping[int, Picture] | None = None
) -> list[dict[str, Any]]:
    """Chat messages for an OpenAI-compatible model: the instructions, then the numbered sources and the question.
    With `pictures` (source number -> the image hit's picture, for a provider that reads images) the user message
    is OpenAI's list of content parts: that text, then each picture after a line naming its source."""
    sources = "\n\n".join(format_source(n, hit) for n, hit in enumerate(hits, start=1)) or "(no sources)"
    text = f"Sources:\n\n{sources}\n\nQuestion: {question}"
    content: str | list[dict[str, Any]] = text
    if pictures:
        content = [{"type": "text", "text": text}]
        for n, picture in sorted(pictures.items()):
            content.append({"type": "text", "text": f"Picture of source [{n}]:"})
            url = f"data:{picture.mime};base64,{base64.b64encode(picture.data).decode()}"
            content.append({"type": "image_url", "image_url": {"url": url}})
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


# "[3]" or "[1, 2]"; numbers are short, so a marker split across streamed pieces is held back briefly.
_MARKER = re.compile(r"\[(\d{1,4}(?:\s*,\s*\d{1,4})*)\]")
_MAX_PENDING = 32


class CitationTracker:
    """Reads `[n]` markers from an answer fed piece by piece (a marker may be split across pieces).

    `numbers` lists each valid number once, in order of first use; numbers outside 1..`n_sources` (citations
    the model invented) are counted in `invented` and otherwise ignored.
    """

    def __init__(self, n_sources: int) -> None:
        self.n_sources = n_sources
        self.numbers: list[int] = []
        self.invented: list[int] = []
        self._pending = ""

    def feed(self, text: str) -> None:
        scan = self._pending + text
        last_end = 0
        for match in _MARKER.finditer(scan):
            last_end = match.end()
            for number in (int(part) for part in match.group(1).split(",")):
                if 1 <= number <= self.n_sources:
                    if number not in self.numbers:
                        self.numbers.append(number)
                elif number not in self.invented:
                    self.invented.append(number)
        opening = scan.rfind("[")
        # An unclosed "[" near the end may be the start of a marker completed by the next piece.
        self._pending = scan[opening:] if opening >= last_end and len(scan) - opening <= _MAX_PENDING else ""
