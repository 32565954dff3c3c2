"""Reading speed of the web and text formats (documents/formats) against plain text, on the same prose.

    .venv/bin/python bench/parse_formats.py             # 1 and 4 MB of each (~3-6 minutes on 2 busy cores)
    .venv/bin/python bench/parse_formats.py --mb 0.5    # one size, for a smoke run

Each case is one ``documents.parse`` of a generated file, as the parser agent runs it (whole file, one unit):
plain text; Markdown (a heading every 8 paragraphs, a fenced code block and a table every 40); a web page with
landmarks (``<main>``: no readability) and one without (a link menu, then the content in ``<div>``s: readability
picks it); an EPUB of 20 chapters of the same content. MB/s is the content's size (an EPUB's unpacked) over
the wall time of the parse
(chunks counted in word pieces included); "max RSS" is the process's, cumulative over the run. Figures from one
run on a shared machine: compare the rows of one run, not with numbers from elsewhere.
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from documents import parse  # noqa: E402
from documents.chunks import wordpiece_counter  # noqa: E402
from tests.factories import make_epub  # noqa: E402

SENTENCE = ("The pump moves forty litres of water per minute when it is primed, and its seal is replaced every "
            "six months by the maintenance team. ")  # fmt: skip


def _paragraphs(size: int) -> list[str]:
    paragraph = SENTENCE * 4
    return [f"Paragraph {i}. {paragraph}" for i in range(size // (len(paragraph) + 16) + 1)]


def plain(size: int) -> bytes:
    return "\n\n".join(_paragraphs(size)).encode()


def markdown(size: int) -> bytes:
    out = []
    for i, p in enumerate(_paragraphs(size)):
        if i % 8 == 0:
            out.append(f"## Section {i // 8}")
        if i % 40 == 20:
            out.append("```python\nfor bolt in bolts:\n    tighten(bolt, torque=12)\n```")
            out.append("| Bolt | Torque |\n|---|---|\n| Anchor | 12 Nm |\n| Cover | 3 Nm |")
        out.append(p)
    return "\n\n".join(out).encode()


def _html_body(size: int) -> str:
    out = []
    for i, p in enumerate(_paragraphs(size)):
        if i % 8 == 0:
            out.append(f"<h2>Section {i // 8}</h2>")
        if i % 40 == 20:
            out.append("<table><tr><th>Bolt</th><th>Torque</th></tr><tr><td>Anchor</td><td>12 Nm</td></tr></table>")
        out.append(f"<div class='para'><p>{p} <a href='/more/{i}'>more</a></p></div>")
    return "\n".join(out)


def html_landmarks(size: int) -> bytes:
    return (f"<html><head><title>Manual</title><script>var x = 1;</script></head><body><nav><a href='/'>Home</a></nav>"
            f"<main><h1>Manual</h1>{_html_body(size)}</main><footer>Footer</footer></body></html>").encode()  # fmt: skip


def html_soup(size: int) -> bytes:
    menu = "".join(f"<a href='/{i}'>Menu item {i}</a> | " for i in range(60))
    return (f"<html><head><title>Manual</title></head><body><div class='menu'>{menu}</div><div id='content'>"
            f"{_html_body(size)}</div><div class='footer'>Copyright</div></body></html>").encode()  # fmt: skip


def epub(size: int) -> bytes:
    per = max(1, size // 20)
    return make_epub([(f"Chapter {i}", f"<h1>Chapter {i}</h1>{_html_body(per)}") for i in range(1, 21)])


CASES = {
    "text/plain": ("plain text", plain),
    "text/markdown": ("Markdown", markdown),
    "text/html landmarks": ("web page, <main>", html_landmarks),
    "text/html": ("web page, readability", html_soup),
    "application/epub+zip": ("EPUB, 20 chapters", epub),
}


def _unpacked(data: bytes) -> int:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return sum(entry.file_size for entry in archive.infolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[1.0, 4.0], help="file sizes in MB")
    args = parser.parse_args()
    wordpiece_counter()  # the tokenizer and each reader's libraries load once, outside the timings
    for key, (_label, make) in CASES.items():
        with parse(make(20_000), key.split(" ")[0]) as document:
            list(document)
    print("| format | content MB | parse s | MB/s | chunks | pages | max RSS MB |\n|---|---|---|---|---|---|---|")
    for mb in args.mb:
        for key, (label, make) in CASES.items():
            data = make(int(mb * 1_000_000))
            started = time.perf_counter()
            with parse(data, key.split(" ")[0]) as document:
                pages = list(document)
            seconds = time.perf_counter() - started
            chunks = sum(len(p.chunks) for p in pages)
            size = _unpacked(data) if key == "application/epub+zip" else len(data)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(f"| {label} | {size / 1e6:.2f} | {seconds:.1f} | {size / 1e6 / seconds:.2f} | {chunks} "
                  f"| {len(pages)} | {rss} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("parse_formats"):
        main()
