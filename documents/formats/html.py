"""Web pages (``text/html``) -> the main content's blocks: headings, paragraphs, lists, code, tables.

- Parsed by lxml (libxml2's HTML parser, which repairs malformed markup); UTF-8 when the bytes are UTF-8,
  else the page's own ``<meta charset>``. Refused: more than ``MAX_HTML_BYTES``, and markup nested deeper
  than libxml2's 256 levels (the parser would drop what lies deeper).
- Never text: ``<script>``, ``<style>``, ``<noscript>``, ``<template>``, SVG/MathML, embedded objects, form
  controls, comments, elements that are ``hidden``, ``aria-hidden="true"`` or ``display: none``, and the "¶"
  permalinks that Sphinx and MkDocs put in headings (``a.headerlink``).
- The main content: the page's one ``<main>`` (or ``role="main"``), else its one ``<article>``; a page without
  such landmarks goes through readability-lxml (Mozilla Readability's scoring of text and link density), unless
  it holds less than ``READABILITY_MIN_CHARS`` of text (too little to score: read whole). In the main content,
  ``<nav>``, ``<aside>``, ARIA navigation/banner/contentinfo/complementary/search regions, and
  ``<header>``/``<footer>`` outside any ``<article>``/``<section>``/``<main>`` (or ``role="main"``) are
  boilerplate and dropped.
  When the main content has no ``<h1>`` nor a heading that repeats it, the page's ``<title>`` is the context
  above its headings.
- Blocks: ``<h1>``-``<h6>`` are headings (the chunks' context); ``<pre>`` is code, verbatim; a ``<table>`` is
  a table (cells as text on a grid: a ``colspan`` leaves the columns it covers empty, a ``rowspan`` repeats its
  text down the rows it covers; the first row is the header)
  unless it holds another table or has a single column (a layout table: its cells are read as content);
  every other block element (``<p>``, ``<li>`` as "- item", ``<div>``, ``<blockquote>``, ...) is a paragraph;
  links, emphasis and other inline elements are their text; ``<br>`` is a line break; images are skipped.
"""

from __future__ import annotations

import copy
import logging
import re

import lxml.etree
import lxml.html

from ..extract import DocumentRejected
from .flow import Block, Code, Heading, Paragraph, TableBlock, to_chunks

log = logging.getLogger(__name__)

MAX_HTML_BYTES = 32 * 1024 * 1024
MAX_COLSPAN = 20
MAX_ROWSPAN = 1000
MAX_COLUMNS = 64
READABILITY_MIN_CHARS = 500  # a shorter page is read whole: readability's scoring needs paragraphs to weigh
_SKIP = ("script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object", "embed", "head",
         "button", "select", "input", "textarea", "option", "datalist", "img", "picture", "video", "audio", "map",
         "meta", "link", "base", "title", "dialog")  # fmt: skip
_BLOCKS = {"p", "div", "section", "article", "main", "body", "ul", "ol", "li", "dl", "dt", "dd", "blockquote",
           "figure", "figcaption", "address", "form", "fieldset", "legend", "details", "summary", "center", "hr",
           "header", "footer", "nav", "aside", "table", "tr", "td", "th", "caption", "thead", "tbody", "tfoot",
           "html", "hgroup", "search"}  # fmt: skip
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BOILERPLATE = ("//nav | //aside | //*[@role='navigation' or @role='banner' or @role='contentinfo' or "
                "@role='complementary' or @role='search']")  # fmt: skip
_SECTIONED = "ancestor::article or ancestor::section or ancestor::main or ancestor::*[@role='main']"
_PAGE_CHROME = f"//header[not({_SECTIONED})] | //footer[not({_SECTIONED})]"
_DISPLAY_NONE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)
_NUMBER = "data-mmrag-n"
_SPACES = re.compile(r"\s+")  # in HTML a line break of the source is a space; only <br> breaks a line
_LANGUAGE = re.compile(r"(?:^|\s)(?:language|lang)-([\w+#.-]+)")


def parse_html(data: bytes, settings):  # -> ParsedDocument (documents.reader imports this module lazily)
    from ..reader import ParsedDocument, ParsedPage

    blocks = html_blocks(data)
    chunks = to_chunks(blocks, settings.chunk_max_tokens, settings.chunk_max_chars)
    if not chunks:
        raise DocumentRejected(
            "empty web page: its main content has no text (is it rendered by JavaScript?); open it in a browser, "
            "print it to PDF and upload the PDF"
        )
    return ParsedDocument(1, iter([ParsedPage(1, tuple(chunks))]))


def html_blocks(data: bytes, *, main_content: bool = True, what: str = "web page") -> list[Block]:
    """The blocks of an HTML document (see the module docstring); ``main_content=False`` reads the whole body
    (an e-book chapter: no site chrome to remove, only its ``<nav>``). Raises DocumentRejected."""
    if len(data) > MAX_HTML_BYTES:
        raise DocumentRejected(
            f"{what} too large: {len(data):,} bytes of HTML is over the limit of {MAX_HTML_BYTES:,}; save it "
            "without embedded images or split it, and upload the parts"
        )
    root = _parse_tree(data, what)
    title = " ".join((root.findtext(".//title") or "").split())
    _drop(root, " | ".join(f"//{tag}" for tag in _SKIP))
    _drop(root, "//*[@hidden] | //*[@aria-hidden='true'] | //a[contains(concat(' ', @class, ' '), ' headerlink ')]")
    for el in root.xpath("//*[@style]"):
        if _DISPLAY_NONE.search(el.get("style") or "") and el.getparent() is not None:
            el.drop_tree()
    for node in root.xpath("//comment() | //processing-instruction()"):
        if node.getparent() is not None:
            node.drop_tree()
    body = root.find(".//body")
    parts = _main(root) if main_content else [body if body is not None else root]
    walker = _Walker()
    for part in parts:  # in document order; inline parts (and their tails) run on in one paragraph
        _drop(part, _BOILERPLATE.replace("//", ".//"))
        if main_content:
            _drop(part, _PAGE_CHROME.replace("//", ".//"))
        walker.walk(part)
    walker.flush()
    blocks = walker.blocks
    if title and main_content and not any(isinstance(b, Heading) and (b.level == 1 or b.text == title) for b in blocks):
        blocks.insert(0, Heading(0, title))
    return blocks


def _parse_tree(data: bytes, what: str) -> lxml.html.HtmlElement:
    try:
        data.decode("utf-8")
        encoding: str | None = "utf-8"
    except UnicodeDecodeError:
        encoding = None  # the page's <meta charset>, else libxml2's default
    parser = lxml.html.HTMLParser(encoding=encoding, remove_comments=True, remove_pis=True)
    try:
        root = lxml.html.document_fromstring(data.removeprefix(b"\xef\xbb\xbf"), parser=parser)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError) as err:
        raise DocumentRejected(f"unreadable {what}: {err}; check it opens in a browser and upload it again") from err
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        raise DocumentRejected(
            f"{what} nested too deeply: its markup is nested more than 256 levels deep, and what lies deeper "
            "would be lost; open it in a browser, print it to PDF and upload the PDF"
        )
    return root


def _drop(root: lxml.html.HtmlElement, xpath: str) -> None:
    for el in root.xpath(xpath):
        if el.getparent() is not None:  # drop_tree keeps the element's tail text
            el.drop_tree()


def _main(root: lxml.html.HtmlElement) -> list[lxml.html.HtmlElement]:
    """The main content: the one <main> / role=main, else the one <article>, else the elements readability
    picks (found again in this tree by the paths it reports, so its own cleaning drops no table or heading)."""
    for xpath in ("//main", "//*[@role='main']", "//article"):
        found = root.xpath(xpath)
        if len(found) == 1:
            return found
    body = root.find(".//body")
    whole = [body if body is not None else root]
    if _text_length(whole[0]) < READABILITY_MIN_CHARS:
        return whole
    from readability import Document  # only pages without landmarks need it

    # Readability returns a cleaned copy of what it picks; each element is numbered first so that the picked
    # elements are found again here (its own xpath option computes paths in time quadratic in sibling counts).
    elements = list(root.iter())
    numbered = copy.deepcopy(root)
    for number, el in enumerate(numbered.iter()):
        el.set(_NUMBER, str(number))
    try:
        summary = lxml.html.fromstring(Document(numbered).summary(html_partial=True))
    except Exception as err:  # readability raises its own Unparseable, and lxml's errors on odd input
        log.info("html: readability found no main content (%s); reading the whole body", err)
        return whole
    picked = [elements[int(n)] for child in summary if (n := child.get(_NUMBER) or "").isdigit() and int(n) < len(elements)]
    if not any(_text_length(el) for el in picked):
        return whole
    # Readability lists a container's children one by one when it picks most of them (a page whose text lies
    # in <body> itself): the container is read whole then, its text between those children included.
    parents = {el.getparent() for el in picked}
    if len(parents) == 1 and (parent := parents.pop()) is not None and 2 * len(picked) >= len(parent):
        return [parent]
    return picked


def _text_length(el: lxml.html.HtmlElement) -> int:
    return len("".join(el.itertext()).strip())


def _cell_text(el: lxml.html.HtmlElement) -> str:
    return " ".join("".join(el.itertext()).split())


class _Walker:
    """Block elements -> blocks, inline text gathered into paragraphs (whitespace collapsed as a browser does)."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._inline: list[str] = []

    def flush(self) -> None:
        lines = (" ".join(line.split()) for line in "".join(self._inline).split("\n"))
        text = "\n".join(line for line in lines if line)
        self._inline.clear()
        if text and text != "-":
            self.blocks.append(Paragraph(text))

    def walk(self, el: lxml.html.HtmlElement) -> None:
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if tag in _HEADINGS:
            self.flush()
            if text := _cell_text(el):
                self.blocks.append(Heading(_HEADINGS[tag], text))
        elif tag == "pre":
            self.flush()
            code = el.find(".//code")
            classes = " ".join(e.get("class") or "" for e in (el, code) if e is not None)
            language = m.group(1) if (m := _LANGUAGE.search(classes)) else ""
            self.blocks.append(Code("".join(el.itertext()), language))
        elif tag == "table" and _is_data_table(el):
            self.flush()
            self.blocks.append(_table(el))
        elif tag == "br":
            self._inline.append("\n")
        else:
            block = tag in _BLOCKS
            if block:
                self.flush()
            if tag == "li":
                self._inline.append("- ")
            if el.text:
                self._inline.append(_SPACES.sub(" ", el.text))
            for child in el:
                self.walk(child)
            if block:
                self.flush()
        if el.tail:
            self._inline.append(_SPACES.sub(" ", el.tail))


def _is_data_table(table: lxml.html.HtmlElement) -> bool:
    """A table of data, not one laid out for the page: it holds no table, and its rows have 2+ cells."""
    if table.find(".//table") is not None:
        return False
    return any(len([c for c in tr if c.tag in ("td", "th")]) >= 2 for tr in table.iter("tr"))


def _table(table: lxml.html.HtmlElement) -> TableBlock:
    """The cells on a grid: a ``colspan`` leaves the columns it covers empty, a ``rowspan`` repeats its text in
    the rows it covers (so that each row reads on its own)."""
    rows: list[list[str]] = []
    above: dict[int, tuple[int, str]] = {}  # column -> (rows it still covers, text) of a rowspan from above

    def take_from_above(row: list[str]) -> None:
        while (column := len(row)) in above:
            left, text = above.pop(column)
            row.append(text)
            if left > 1:
                above[column] = (left - 1, text)

    for tr in table.iter("tr"):
        row: list[str] = []
        for cell in tr:
            if cell.tag not in ("td", "th"):
                continue
            take_from_above(row)
            text = _cell_text(cell)
            rowspan = _span(cell.get("rowspan"), MAX_ROWSPAN)
            for k in range(_span(cell.get("colspan"), MAX_COLSPAN)):
                if rowspan > 1:
                    above[len(row)] = (rowspan - 1, text if k == 0 else "")
                row.append(text if k == 0 else "")
        while above and max(above) >= len(row):  # spans from above at the end of a short row
            take_from_above(row)
            if above and max(above) >= len(row):  # a column no cell and no span fills
                row.append("")
        if any(row):
            rows.append(row[:MAX_COLUMNS])
    width = max(map(len, rows), default=0)
    caption = table.find("caption")
    return TableBlock(tuple(tuple(row + [""] * (width - len(row))) for row in rows),
                      _cell_text(caption) or None if caption is not None else None)  # fmt: skip


def _span(value: str | None, limit: int) -> int:
    try:
        return min(max(int(value or 1), 1), limit)
    except ValueError:
        return 1
