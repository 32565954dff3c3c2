"""Markdown (``text/markdown``) -> blocks, read by markdown-it-py (CommonMark, with GitHub's pipe tables).

- ATX (``#``) and setext (underlined) headings are the context of the chunks under them;
- fenced and indented code blocks are kept whole and verbatim (never re-wrapped or merged into prose);
- pipe tables are tables (the header row, then the rows; cells as their text);
- paragraphs are their text: emphasis marks dropped, links as their text, images as their alt text, a soft
  line break as a space (hard-wrapped prose is unwrapped), a hard break as a line break; list items read
  "- item"; a raw HTML block goes through the HTML reader (so a ``<script>`` in it is never text);
- a leading YAML front matter block (``---`` ... ``---``) is metadata, not text: skipped.
Refused: quotes or lists nested ``MAX_NESTING`` levels deep (markdown-it would drop what lies deeper); the file
must be UTF-8 (as a .txt).
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ..extract import DocumentRejected, _decode_utf8
from .flow import Block, Code, Heading, Paragraph, TableBlock, to_chunks
from .html import html_blocks

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
MAX_NESTING = 100  # markdown-it stops reading a container at its maxNesting: what lies deeper would be lost
_PARSER = MarkdownIt("commonmark", {"maxNesting": MAX_NESTING}).enable("table").enable("strikethrough")


def parse_markdown(data: bytes, settings):  # -> ParsedDocument (documents.reader imports this module lazily)
    from ..reader import ParsedDocument, ParsedPage

    chunks = to_chunks(markdown_blocks(_decode_utf8(data)), settings.chunk_max_tokens, settings.chunk_max_chars)
    if not chunks:
        raise DocumentRejected("empty document: the file contains no text; upload a file with content")
    return ParsedDocument(1, iter([ParsedPage(1, tuple(chunks))]))


def markdown_blocks(text: str) -> list[Block]:
    tokens = _PARSER.parse(_FRONT_MATTER.sub("", text, count=1))
    if any(token.level >= MAX_NESTING - 1 for token in tokens):
        raise DocumentRejected(
            f"Markdown nested too deeply: quotes or lists more than {MAX_NESTING} levels deep, and what lies deeper "
            "would be lost; flatten them, or upload the file as .txt"
        )
    blocks: list[Block] = []
    bullet = False  # the next paragraph opens a list item
    row: list[str] | None = None
    rows: list[tuple[str, ...]] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        kind = token.type
        if kind == "heading_open":
            if heading := _inline(tokens[i + 1]).replace("\n", " ").strip():
                blocks.append(Heading(int(token.tag[1]), heading))
            i += 2
        elif kind == "list_item_open":
            bullet = True
        elif kind == "inline" and row is not None:
            row.append(" ".join(_inline(token).split()))
        elif kind == "inline":
            if paragraph := _inline(token).strip():
                blocks.append(Paragraph(f"- {paragraph}" if bullet else paragraph))
            bullet = False
        elif kind in ("fence", "code_block"):
            blocks.append(Code(token.content, (token.info or "").split(" ")[0]))
            bullet = False
        elif kind == "html_block":
            blocks += [b for b in html_blocks(token.content.encode(), main_content=False) if not isinstance(b, Heading)
                       or b.level > 0]  # fmt: skip
        elif kind == "tr_open":
            row = []
        elif kind == "tr_close" and row is not None:
            rows.append(tuple(row))
            row = None
        elif kind == "table_close":
            width = max(map(len, rows), default=0)
            if rows:
                blocks.append(TableBlock(tuple(r + ("",) * (width - len(r)) for r in rows)))
            rows = []
        i += 1
    return blocks


def _inline(token: Token) -> str:
    """An inline token as plain text (see the module docstring)."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type == "softbreak":
            parts.append(" ")
        elif child.type == "hardbreak":
            parts.append("\n")
        elif child.type == "image":
            parts.append(_inline(child))  # its children are the alt text
    return "".join(parts)
