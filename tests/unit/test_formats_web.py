"""The readers of web and text formats (documents/formats: HTML, Markdown, EPUB, GIF) on files made here with
known ground truth, and their registration (filetypes sniffing, reader dispatch)."""

from __future__ import annotations

import io
import re
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from documents import DocumentRejected, parse, read_image
from documents.chunks import wordpiece_counter
from documents.filetypes import (
    ACCEPTED,
    FORMAT_SUFFIXES,
    IMAGE_SUFFIXES,
    TEXT_SUFFIXES,
    UnsupportedFile,
    detect_content_type,
)
from documents.formats import epub as epub_reader
from documents.formats.html import MAX_HTML_BYTES
from documents.reader import ParseSettings
from tests.factories import EPUB_SCRIPT, make_epub, render_text_image


def _chunks(data: bytes, content_type: str, settings: ParseSettings = ParseSettings()):
    with parse(data, content_type, settings) as document:
        return [chunk for page in document for chunk in page.chunks]


# --------------------------------------------------------------------------- HTML

SCRIPT = "SECRETSCRIPTTEXT"
PAGE = f"""<!DOCTYPE html>
<html><head><title>Pump docs | ACME</title><script>var token = "{SCRIPT}1";</script>
<style>.nav {{ color: red }} /* STYLETEXT */</style></head>
<body>
<header><a href="/">ACME home</a><nav><a href="/">Home</a> | <a href="/pricing">Pricing</a></nav></header>
<main>
  <h1>Pump manual</h1>
  <p>The P-100 pump moves <b>forty litres</b> of water per minute when it is <a href="/prime">primed</a>.</p>
  <h2>Installation</h2>
  <p>Mount the pump on a flat surface before connecting the hose.</p>
  <table><caption>Bolt torques</caption>
    <thead><tr><th>Bolt</th><th>Torque</th></tr></thead>
    <tbody><tr><td>Anchor bolt</td><td>12 Nm</td></tr><tr><td>Cover screw</td><td>3 Nm</td></tr></tbody>
  </table>
  <h3>Linux</h3>
  <p>Install the driver package, then load the kernel module.</p>
  <pre><code class="language-bash">sudo apt install pumpctl
    pumpctl --start --verbose
</code></pre>
  <script>document.write("{SCRIPT}2")</script><noscript>{SCRIPT}3</noscript>
  <div hidden>{SCRIPT}4</div><p style="display: none">{SCRIPT}5</p>
  <h2>Maintenance</h2>
  <ul><li>Replace the filter every six months.</li><li>Check the seal yearly.</li></ul>
</main>
<aside>Related products: the P-200 booster</aside>
<footer>Copyright 2026 ACME. Cookie settings.</footer>
<script src="/app.js"></script><script>console.log("{SCRIPT}6")</script>
</body></html>"""


def test_html_reads_the_main_content_with_headings_tables_and_code() -> None:
    chunks = _chunks(PAGE.encode(), "text/html")
    text = "\n".join(c.embed_text for c in chunks)

    assert SCRIPT not in text and "STYLETEXT" not in text and "color: red" not in text
    for boilerplate in ("Pricing", "ACME home", "P-200 booster", "Cookie settings", "Pump docs | ACME"):
        assert boilerplate not in text, boilerplate
    by_text = {c.text: c for c in chunks}
    first = next(c for c in chunks if "forty litres" in c.text)
    assert first.text == "The P-100 pump moves forty litres of water per minute when it is primed."  # links as text
    assert first.headings == ("Pump manual",) and first.locator == "section Pump manual"
    [table] = [c for c in chunks if c.modality == "table"]
    assert table.table is not None and table.table.header == ("Bolt", "Torque")
    assert table.table.rows == (("Anchor bolt", "12 Nm"), ("Cover screw", "3 Nm"))
    assert table.headings == ("Pump manual", "Installation", "Bolt torques")
    assert table.locator == "section Pump manual > Installation"
    linux = next(c for c in chunks if "kernel module" in c.text)
    assert linux.headings == ("Pump manual", "Installation", "Linux")
    assert "```bash\nsudo apt install pumpctl\n    pumpctl --start --verbose\n```" in linux.text  # verbatim
    maintenance = next(c for c in chunks if "filter" in c.text)
    assert maintenance.headings == ("Pump manual", "Maintenance")  # an h2 closes the h3 and the h2 before it
    assert "- Replace the filter every six months.\n\n- Check the seal yearly." in maintenance.text
    assert all(c.bbox is None and c.page == 1 for c in by_text.values())


def test_a_role_main_keeps_its_own_header() -> None:
    page = """<body><header>Site banner</header><div role="main"><header><h1>Pump manual</h1></header>
    <p>The pump is quiet.</p><footer>Page footer</footer></div><footer>Site footer</footer></body>"""

    [chunk] = _chunks(page.encode(), "text/html")

    assert chunk.headings == ("Pump manual",) and chunk.text == "The pump is quiet.\n\nPage footer"


def test_html_without_landmarks_drops_link_lists_and_keeps_small_tables() -> None:
    page = """<html><head><title>Spec sheet</title></head><body>
    <div class="menu"><a href="/">Home</a> | <a href="/a">About us</a> | <a href="/c">Contact</a> | <a href="/j">Jobs</a></div>
    <div id="content">
      <p>The P-100 pump moves forty litres of water per minute, quietly, and it fits in a small cabinet under
      the sink, where its rubber feet keep it from walking across the floor when the motor starts.</p>
      <table><tr><th>Model</th><th>Flow</th></tr><tr><td>P-100</td><td>40</td></tr></table>
      <p>Its motor draws 1.1 kW and it is rated for continuous duty at up to forty degrees Celsius, which covers
      a boiler room in summer; above that, its thermal switch stops it until the winding has cooled down.</p>
      <p>The pump ships with a two-year warranty, a spare seal, a filter cartridge, and a printed manual in
      English, French and German; the warranty covers the motor, the housing and the controller board.</p>
    </div>
    <div class="footer"><a href="/privacy">Privacy</a> | <a href="/terms">Terms</a></div></body></html>"""

    chunks = _chunks(page.encode(), "text/html")
    text = "\n".join(c.text for c in chunks)

    assert "About us" not in text and "Privacy" not in text
    assert "forty litres" in text and "1.1 kW" in text
    [table] = [c for c in chunks if c.modality == "table"]
    assert table.table is not None and table.table.rows == (("P-100", "40"),)
    assert chunks[0].headings == ("Spec sheet",)  # no <h1>: the page's title is the context


def test_text_written_straight_into_body_reads_as_paragraphs_not_pieces() -> None:
    """An old page's text lies in <body> between inline elements; source line breaks are spaces."""
    sentence = "We often get questions about how the <tt>deflate()</tt> and <tt>inflate()</tt> functions\nshould be used. "
    page = f"<html><head><title>zlib usage</title></head><body><h2>zlib usage</h2>{sentence * 8}<p>Second part.</body>"

    chunks = _chunks(page.encode(), "text/html")

    assert chunks[0].headings == ("zlib usage",)  # the <h2> repeats the title: once
    expected = "We often get questions about how the deflate() and inflate() functions should be used."
    assert chunks[0].text == " ".join([expected] * 8) + "\n\nSecond part."


@pytest.mark.parametrize(
    "page",
    [
        b"<p>Unclosed <b>bold <i>italic <table><tr><td>Cell A<td>Cell B<tr><td>Cell C</table> tail &amp; more",
        b"<html><body><div><p>Cell A</div></span></p><td>Cell B</td><p>Cell C</body></html></html>",
        "<meta charset='windows-1252'><p>Cell A caf\xe9</p><p>Cell B</p><p>Cell C</p>".encode("cp1252"),
        "<p>Cell A caf\xe9</p><p>Cell B</p><p>Cell C</p>".encode("utf-16"),
    ],
)
def test_malformed_html_is_repaired_and_read(page: bytes) -> None:
    text = "\n".join(c.text for c in _chunks(page, "text/html"))

    assert all(cell in text for cell in ("Cell A", "Cell B", "Cell C")), text
    if b"caf" in page:
        assert "café" in text


def test_html_without_text_or_too_deep_or_too_large_is_rejected_with_the_fix() -> None:
    with pytest.raises(DocumentRejected, match="main content has no text.*print it to PDF"):
        parse(b"<html><body><script>render()</script><div id=app></div></body></html>", "text/html")
    deep = b"<div>" * 5000 + b"deep text" + b"</div>" * 5000
    started = time.monotonic()
    with pytest.raises(DocumentRejected, match="nested too deeply"):
        parse(deep, "text/html")
    with pytest.raises(DocumentRejected, match="too large.*split it"):
        parse(b"<p>" + b"x" * MAX_HTML_BYTES + b"</p>", "text/html")
    assert time.monotonic() - started < 10  # refused without reading the content through


def test_html_table_spans_are_laid_on_a_grid() -> None:
    page = """<main><table>
      <tr><th>Model</th><th>Part</th><th>Torque</th></tr>
      <tr><td rowspan="2">P-100</td><td>Anchor</td><td>12 Nm</td></tr>
      <tr><td>Cover</td><td>3 Nm</td></tr>
      <tr><td colspan="2">Any other screw</td><td>2 Nm</td></tr>
      <tr><td>P-200</td><td>Anchor</td><td rowspan="9">20 Nm</td></tr>
      <tr><td>P-200</td><td>Cover</td></tr>
    </table></main>"""

    [chunk] = _chunks(page.encode(), "text/html")

    assert chunk.table is not None and chunk.table.header == ("Model", "Part", "Torque")
    assert chunk.table.rows == (
        ("P-100", "Anchor", "12 Nm"), ("P-100", "Cover", "3 Nm"), ("Any other screw", "", "2 Nm"),
        ("P-200", "Anchor", "20 Nm"), ("P-200", "Cover", "20 Nm"),
    )  # fmt: skip


def test_a_huge_html_table_is_cut_between_rows_under_its_header() -> None:
    rows = "".join(f"<tr><td>part {i}</td><td>{i} Nm</td></tr>" for i in range(3000))
    page = f"<html><body><main><h1>Torques</h1><table><tr><th>Part</th><th>Torque</th></tr>{rows}</table></main>"

    chunks = _chunks(page.encode(), "text/html")

    assert all(c.modality == "table" and c.table and c.table.header == ("Part", "Torque") for c in chunks)
    assert [row for c in chunks for row in c.table.rows] == [(f"part {i}", f"{i} Nm") for i in range(3000)]
    count = wordpiece_counter()
    assert all(count(c.embed_text) <= 254 and len(c.text) <= 1000 for c in chunks)


# --------------------------------------------------------------------------- Markdown

CODE = 'def hello(name):\n\n    # a blank line above, four spaces here\n    return f"hi {name}"'
MARKDOWN = f"""---
title: front matter is metadata
---
# Pump manual

The P-100 pump moves **forty litres** of water per
minute when [primed](https://example.org/prime).

## Installation

Mount the pump on a flat surface.

```python
{CODE}
```

| Bolt | Torque |
|------|-------:|
| Anchor bolt | 12 Nm |
| Cover \\| screw | 3 Nm |

### Linux

Install the driver package.

<div><script>alert("{SCRIPT}")</script><p>Raw HTML paragraph.</p></div>

Setext section
--------------

- first item
- second item
"""


def test_markdown_headings_are_context_code_is_kept_whole_and_tables_are_tables() -> None:
    chunks = _chunks(MARKDOWN.encode(), "text/markdown")
    text = "\n".join(c.embed_text for c in chunks)

    assert SCRIPT not in text and "front matter" not in text and "**" not in text and "https://" not in text
    intro = next(c for c in chunks if "forty litres" in c.text)
    assert intro.text == "The P-100 pump moves forty litres of water per minute when primed."  # unwrapped
    assert intro.headings == ("Pump manual",) and intro.locator == "section Pump manual"
    [code] = [c for c in chunks if "def hello" in c.text]
    assert f"```python\n{CODE}\n```" in code.text and code.headings == ("Pump manual", "Installation")
    [table] = [c for c in chunks if c.modality == "table"]
    assert table.table is not None and table.table.header == ("Bolt", "Torque")
    assert table.table.rows == (("Anchor bolt", "12 Nm"), ("Cover | screw", "3 Nm"))
    linux = next(c for c in chunks if "driver" in c.text)
    assert linux.headings == ("Pump manual", "Installation", "Linux")
    assert linux.locator == "section Pump manual > Installation > Linux"
    raw = next(c for c in chunks if "Raw HTML paragraph." in c.text)
    assert raw.headings == ("Pump manual", "Installation", "Linux")
    items = next(c for c in chunks if "first item" in c.text)
    assert items.headings == ("Pump manual", "Setext section") and "- first item\n\n- second item" in items.text
    # Every heading is the context of the chunks under it.
    assert {h for c in chunks for h in c.headings} == {"Pump manual", "Installation", "Linux", "Setext section"}


def test_a_long_code_block_is_cut_between_lines_each_piece_fenced() -> None:
    lines = [f"    result_{i} = compute(value_{i}, factor={i})  # step {i}" for i in range(200)]
    markdown = "# Script\n\n```python\n" + "\n".join(lines) + "\n```\n"

    chunks = _chunks(markdown.encode(), "text/markdown")

    assert len(chunks) > 1 and all(c.text.startswith("```python\n") and c.text.endswith("\n```") for c in chunks)
    assert [line for c in chunks for line in c.text.split("\n")[1:-1]] == lines  # every line whole, in order
    count = wordpiece_counter()
    assert all(count(c.embed_text) <= 254 and len(c.text) <= 1000 for c in chunks)


def test_markdown_nested_too_deeply_is_rejected_with_the_fix() -> None:
    started = time.monotonic()
    with pytest.raises(DocumentRejected, match="nested too deeply.*upload the file as .txt"):
        parse(("> " * 20000 + "deep text\n").encode(), "text/markdown")
    assert time.monotonic() - started < 10
    nested = "".join("  " * i + f"- item {i}\n" for i in range(30))  # deep, but within the limit: all read
    text = "\n".join(c.text for c in _chunks(nested.encode(), "text/markdown"))
    assert all(f"- item {i}" in text for i in range(30))


def test_empty_or_binary_markdown_is_rejected() -> None:
    with pytest.raises(DocumentRejected, match="empty"):
        parse(b"---\ntitle: x\n---\n\n   \n", "text/markdown")
    with pytest.raises(DocumentRejected, match="not valid UTF-8"):
        parse(b"caf\xe9", "text/markdown")


# --------------------------------------------------------------------------- EPUB

def test_every_epub_chapter_is_found_in_reading_order_with_its_locator() -> None:
    data = make_epub()

    assert detect_content_type("manual.epub", None, data[:4096]) == "application/epub+zip"
    assert detect_content_type("upload.bin", "application/octet-stream", data[:4096]) == "application/epub+zip"
    with parse(data, "application/epub+zip") as document:
        pages = list(document)
        assert document.page_count == 3
    assert [p.page for p in pages] == [1, 2, 3]  # the cover has no text: it is no chapter
    chunks = [c for p in pages for c in p.chunks]
    assert EPUB_SCRIPT not in "\n".join(c.embed_text for c in chunks)
    tools = next(c for c in chunks if "spanner" in c.text)
    assert (tools.page, tools.headings) == (1, ("Getting started", "Tools"))
    assert tools.locator == "chapter 1 Getting started, section Tools"
    [table] = [c for c in chunks if c.modality == "table"]
    assert table.page == 2 and table.locator == "chapter 2 Installation" and table.table.rows == (("Anchor", "12 Nm"),)
    filters = next(c for c in chunks if "filter" in c.text)
    assert (filters.page, filters.headings, filters.locator) == (3, ("Maintenance",), "chapter 3 Maintenance")


def _zip(entries: dict[str, bytes], *, mimetype: bool = True) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        if mimetype:
            archive.writestr("mimetype", "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, data in entries.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_an_epub_zip_bomb_is_refused_before_inflating_it() -> None:
    bomb = _zip({"OEBPS/chapter.xhtml": b"\0" * (epub_reader.MAX_UNCOMPRESSED_BYTES + 1)})  # ~260 KB packed
    many = _zip({f"OEBPS/{i}.xhtml": b"" for i in range(epub_reader.MAX_ENTRIES + 1)})

    started = time.monotonic()
    with pytest.raises(DocumentRejected, match="unpacks to .* over the limit"):
        parse(bomb, "application/epub+zip")
    with pytest.raises(DocumentRejected, match="files in the archive is over the limit"):
        parse(many, "application/epub+zip")
    assert time.monotonic() - started < 5


def test_epubs_without_chapters_corrupt_or_with_drm_are_rejected_with_the_fix() -> None:
    with pytest.raises(DocumentRejected, match="EPUB without chapters.*convert it to PDF"):
        parse(make_epub([("Blank", "<p> </p>")], cover=True), "application/epub+zip")
    with pytest.raises(DocumentRejected, match="corrupt EPUB.*upload it again"):
        parse(_zip({"META-INF/container.xml": b"<container/>"}), "application/epub+zip")
    with pytest.raises(DocumentRejected, match="corrupt EPUB: not a readable ZIP"):
        parse(b"PK\x03\x04" + b"\0" * 100, "application/epub+zip")
    drm = '<encryption><EncryptedData><EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
    with pytest.raises(DocumentRejected, match="DRM-protected"):
        parse(_zip({"META-INF/encryption.xml": f"{drm}</EncryptedData></encryption>".encode()}), "application/epub+zip")


# --------------------------------------------------------------------------- GIF


def _animated_gif(first: str, second: str) -> bytes:
    frames = [Image.open(io.BytesIO(render_text_image([text], width_pt=320, fontsize=18, dpi=100))).convert("P")
              for text in (first, second)]  # fmt: skip
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=500, loop=0)
    return out.getvalue()


def test_a_gif_is_read_by_ocr_from_its_first_frame() -> None:
    data = _animated_gif("Invoice number 4711", "Delivery note 9988")
    assert detect_content_type("scan.gif", "image/gif", data[:4096]) == "image/gif"

    with parse(data, "image/gif") as document:
        [page] = list(document)
    [work] = page.ocr
    assert page.chunks == () and (work.kind, work.mime, work.digest) == ("image", "image/png", None)
    assert Image.open(io.BytesIO(work.raster)).format == "PNG"
    assert (work.width, work.height) == Image.open(io.BytesIO(data)).size
    [chunk] = read_image(work.raster, None, None, work.bbox)
    assert "4711" in chunk.text and "9988" not in chunk.text


def test_a_gif_bomb_or_a_fake_gif_is_rejected() -> None:
    small = io.BytesIO()
    Image.new("P", (1, 1)).save(small, format="GIF")
    bomb = bytearray(small.getvalue())
    bomb[6:10] = (60000).to_bytes(2, "little") * 2  # the logical screen claims 60000 x 60000
    with pytest.raises(DocumentRejected, match="image too large"):
        parse(bytes(bomb), "image/gif")
    with pytest.raises(DocumentRejected, match="not a GIF"):
        parse(render_text_image(["x"]), "image/gif")


# --------------------------------------------------------------------------- what an upload is


@pytest.mark.parametrize(
    ("filename", "declared", "head", "expected"),
    [
        ("page.html", "text/html", b"<p>fragment", "text/html"),
        ("page.htm", None, b"<!DOCTYPE html><html>", "text/html"),
        ("saved", "application/octet-stream", b"\n  <!doctype html>\n<html>", "text/html"),  # by content
        ("page.xhtml", "application/xhtml+xml", b"<?xml version='1.0'?><html>", "text/html"),
        ("latin1.html", "text/html", "<p>caf\xe9</p>".encode("latin-1"), "text/html"),  # its meta charset decides
        ("windows.htm", None, "<html><p>Unicode</p>".encode("utf-16"), "text/html"),  # UTF-16, by its BOM
        ("notes.txt", "text/plain", b"<!DOCTYPE html><html>", "text/plain"),  # the name says text: it is text
        ("notes.md", None, b"# Title", "text/markdown"),
    ],
)
def test_web_and_text_formats_are_detected(filename: str, declared: str | None, head: bytes, expected: str) -> None:
    assert detect_content_type(filename, declared, head) == expected


def test_a_misnamed_epub_or_html_is_refused_with_what_is_accepted() -> None:
    with pytest.raises(UnsupportedFile, match="not an EPUB") as err:
        detect_content_type("book.epub", None, b"just text")
    assert ACCEPTED in str(err.value) and ".html" in ACCEPTED and ".epub" in ACCEPTED and "GIF" in ACCEPTED
    with pytest.raises(UnsupportedFile, match="NUL"):
        detect_content_type("page.html", None, b"<p>\x00\x00")


def test_the_ui_file_picker_offers_every_accepted_type() -> None:
    """The picker once hid types that drag-and-drop accepted: it lists every suffix the sniffer takes."""
    page = (Path(__file__).parents[2] / "edge_api" / "static" / "ui" / "index.html").read_text()
    [accept] = re.findall(r'id="files"[^>]*accept="([^"]+)"', page)
    offered = set(accept.split(","))

    assert {".pdf", *TEXT_SUFFIXES, *IMAGE_SUFFIXES, *FORMAT_SUFFIXES} <= offered
    assert {"text/html", "application/epub+zip"} <= offered


# --------------------------------------------------------------------------- e-mail


def _mail(*, html: bool = False, attachment: bool = True) -> bytes:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = "Ada Lovelace <ada@example.org>"
    message["To"] = "facilities@example.org"
    message["Subject"] = "=?utf-8?q?Boiler_room_key_=E2=80=93_new_place?="  # RFC 2047, as mail programs send
    message["Date"] = "Mon, 07 Dec 2026 09:00:00 +0000"
    message.set_content("Hello team,\n\nthe boiler room key now hangs in locker 17.\nIt moved on Friday.\n\nAda\n")
    if html:
        message.add_alternative(f"<p>Hello team,</p><p>the key hangs in <b>locker 17</b>.</p><script>{SCRIPT}</script>",
                                subtype="html")  # fmt: skip
    if attachment:
        message.add_attachment(b"%PDF-1.4 plan", maintype="application", subtype="pdf", filename="floor-plan.pdf")
    return bytes(message)


def test_an_email_is_read_with_its_subject_as_context_and_its_attachments_named() -> None:
    data = _mail(html=True)
    assert detect_content_type("key.eml", None, data[:4096]) == "message/rfc822"

    chunks = _chunks(data, "message/rfc822")
    text = "\n".join(c.text for c in chunks)

    assert all(c.headings == ("Boiler room key – new place",) for c in chunks)
    assert "From: Ada Lovelace <ada@example.org>" in text and "To: facilities@example.org" in text
    assert "the boiler room key now hangs in locker 17.\nIt moved on Friday." in text  # the plain part, first
    assert SCRIPT not in text and "floor-plan.pdf" in text and "upload them on their own" in text


def test_an_html_only_email_is_read_through_the_html_reader() -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "Key"
    message.set_content(f"<p>The key hangs in <b>locker 17</b>.</p><script>{SCRIPT}</script>", subtype="html")

    text = "\n".join(c.text for c in _chunks(bytes(message), "message/rfc822"))

    assert "The key hangs in locker 17." in text and SCRIPT not in text and "<b>" not in text


def test_a_file_named_eml_that_is_no_email_is_refused() -> None:
    with pytest.raises(UnsupportedFile, match="not an e-mail message.*save the message"):
        detect_content_type("notes.eml", None, b"Just some notes\nwith no headers")
    with pytest.raises(DocumentRejected, match="empty e-mail"):
        parse(b"From: a@example.org\n\n", "message/rfc822")
