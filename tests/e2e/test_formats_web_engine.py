"""Web and text formats on a real engine (the shared `mmrag up`, a tenant per test): a web page uploaded over
HTTP is searched and answered from its main content, never from its scripts; an EPUB's chapters are pages;
a GIF is read by OCR."""

from __future__ import annotations

import aiohttp

from tests.engine import TenantEngine, sse_events, upload_bytes, wait_status
from tests.factories import EPUB_SCRIPT, make_epub, render_text_image

SCRIPT_FACT = "The vault combination is 88-31-07"
PAGE = f"""<!DOCTYPE html><html><head><title>Boiler room | Facilities wiki</title>
<script>var note = "{SCRIPT_FACT}. The boiler room key hangs in drawer 99.";</script></head>
<body><nav><a href="/">Wiki home</a> | <a href="/keys">All keys</a></nav>
<main><h1>Boiler room</h1>
<p>The boiler room key hangs in locker 17, next to the fire extinguisher.</p>
<h2>Opening hours</h2><p>The boiler room is open from 7 am to 5 pm on weekdays.</p>
<script>document.title = "{SCRIPT_FACT}";</script></main>
<footer>Facilities team, building C</footer></body></html>"""


async def _ingest(http: aiohttp.ClientSession, engine: TenantEngine, data: bytes, name: str, ctype: str) -> dict:
    resp = await upload_bytes(http, engine.url, data, name, ctype)
    assert resp.status == 202, await resp.text()
    return await wait_status(http, engine.url, (await resp.json())["doc_id"], {"indexed", "failed"}, timeout_s=240)


async def _search(http: aiohttp.ClientSession, engine: TenantEngine, query: str) -> list[dict]:
    async with http.post(f"{engine.url}/v1/search", json={"query": query, "top_k": 10}) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["hits"]


async def test_a_web_page_is_searched_and_answered_from_its_main_content_never_its_scripts(
    engine: TenantEngine, http: aiohttp.ClientSession
) -> None:
    status = await _ingest(http, engine, PAGE.encode(), "boiler-room.html", "text/html")
    assert status["status"] == "indexed", status

    hits = await _search(http, engine, "Where does the boiler room key hang?")
    assert hits and "locker 17" in hits[0]["text"] and hits[0]["doc_id"] == status["doc_id"]
    for hit in hits + await _search(http, engine, "vault combination"):
        assert "88-31" not in hit["text"] and "drawer 99" not in hit["text"] and "Wiki home" not in hit["text"]

    for question in ("Where does the boiler room key hang?", "What is the vault combination?"):
        events = await sse_events(http, engine.url, {"question": question})
        said = "".join(d.get("text", "") for k, d in events if k == "token")
        assert "88-31" not in said and "drawer 99" not in said, said
        assert all("88-31" not in str(d) for _k, d in events)  # no citation or retrieval event quotes it either
        if "key" in question:
            assert "locker 17" in said, said


async def test_an_epub_is_indexed_chapter_by_chapter(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    status = await _ingest(http, engine, make_epub(), "pump-manual.epub", "application/epub+zip")
    assert status["status"] == "indexed" and status["pages"] == 3, status

    hits = await _search(http, engine, "Which spanner size do I need?")
    assert hits and "13 mm spanner" in hits[0]["text"] and hits[0]["page"] == 1
    hits = await _search(http, engine, "What torque for the anchor bolt?")
    assert any(h["modality"] == "table" and h["page"] == 2 and "12 Nm" in h["text"] for h in hits), hits
    assert all(EPUB_SCRIPT not in h["text"] for h in hits)


async def test_a_gif_is_read_from_its_first_frame(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    gif = render_text_image(["The spare fuse box is in cellar room 4."], fontsize=16, fmt="GIF")
    status = await _ingest(http, engine, gif, "fuses.gif", "image/gif")
    assert status["status"] == "indexed", status

    hits = await _search(http, engine, "Where is the spare fuse box?")
    assert hits and hits[0]["modality"] == "image" and "cellar room 4" in hits[0]["text"].lower()


async def test_a_misnamed_epub_is_refused_and_an_epub_without_chapters_fails_with_the_fix(
    engine: TenantEngine, http: aiohttp.ClientSession
) -> None:
    resp = await upload_bytes(http, engine.url, b"not a zip at all", "book.epub", "application/epub+zip")
    assert resp.status == 415 and "not an EPUB" in (await resp.json())["error"]["message"]

    status = await _ingest(http, engine, make_epub([("Blank", "<p> </p>")]), "blank.epub", "application/epub+zip")
    assert status["status"] == "failed" and "EPUB without chapters" in status["error"], status
    assert "convert it to PDF" in status["error"]


async def test_an_email_is_indexed_and_found(engine: TenantEngine, http: aiohttp.ClientSession) -> None:
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "ada@example.org", "team@example.org", "Generator test"
    message.set_content("The emergency generator is tested every first Monday at 6 am.\n")
    status = await _ingest(http, engine, bytes(message), "generator.eml", "message/rfc822")
    assert status["status"] == "indexed", status

    hits = await _search(http, engine, "When is the emergency generator tested?")
    assert hits and "first Monday" in hits[0]["text"]


async def test_a_markdown_code_block_is_found_whole_under_its_headings(
    engine: TenantEngine, http: aiohttp.ClientSession
) -> None:
    code = "sudo systemctl enable pumpd\n    pumpctl calibrate --sensor inlet"
    text = f"# Pump service\n\nIntro words.\n\n## Calibration\n\nRun these once:\n\n```bash\n{code}\n```\n"
    status = await _ingest(http, engine, text.encode(), "service.md", "text/markdown")
    assert status["status"] == "indexed", status

    hits = await _search(http, engine, "How do I calibrate the inlet sensor with pumpctl?")
    assert hits and f"```bash\n{code}\n```" in hits[0]["text"]
    assert hits[0]["headings"] == ["Pump service", "Calibration"]
