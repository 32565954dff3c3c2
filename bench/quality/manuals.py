"""The paraphrase set's corpus: real PDF manuals from Debian documentation packages, fetched by the bench.

`manuals()` returns the documents; a missing package is fetched once with `apt-get download` and unpacked with
`dpkg-deb -x` into a cache outside the repository (`MMRAG_BENCH_CACHE`, default `~/.cache/mmrag-bench/debian`).
`apt-get download` needs the package lists: run `apt-get update` once on a fresh machine (the error says so).
The PDFs are never committed; their page texts are checked against the questions (`bench/quality/paraphrase.py`).

Held out for hidden checks elsewhere, never used here: the R manuals, gnuplot's, Octave's, the Debian handbook.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pymupdf

from bench import debian
from bench.quality.corpus import Document


@dataclass(frozen=True)
class Manual:
    doc_id: str
    package: str  # the Debian package that ships it
    path: str  # inside the package


# Seven manuals, 517 pages: a programming language for figures, a music typesetter's command-line guide, and
# five LaTeX package manuals (typography, colours, code listings, table rules, captions).
MANUALS = (
    Manual("asymptote", "asymptote-doc", "usr/share/doc/asymptote/asymptote.pdf"),
    Manual("lilypond-usage", "lilypond-doc-pdf", "usr/share/doc/lilypond/html/Documentation/usage.pdf"),
    Manual("microtype", "texlive-latex-recommended-doc", "usr/share/doc/texlive-doc/latex/microtype/microtype.pdf"),
    Manual("xcolor", "texlive-latex-recommended-doc", "usr/share/doc/texlive-doc/latex/xcolor/xcolor.pdf"),
    Manual("listings", "texlive-latex-recommended-doc", "usr/share/doc/texlive-doc/latex/listings/listings.pdf"),
    Manual("booktabs", "texlive-latex-recommended-doc", "usr/share/doc/texlive-doc/latex/booktabs/booktabs.pdf"),
    Manual("caption", "texlive-latex-recommended-doc", "usr/share/doc/texlive-doc/latex/caption/caption.pdf"),
)


def manuals(cache: Path | None = None) -> list[Document]:
    """Every manual of `MANUALS` as a bench document, with each page's text (PyMuPDF's) for the fact checks."""
    docs = []
    for m in MANUALS:
        pdf = debian.member(m.package, m.path, cache).read_bytes()
        with pymupdf.open(stream=pdf, filetype="pdf") as doc:
            texts = {n + 1: page.get_text() for n, page in enumerate(doc)}
        docs.append(Document(m.doc_id, pdf, texts))
    return docs


def digest(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.doc_id.encode())
        h.update(hashlib.sha256(d.pdf).digest())
    return h.hexdigest()[:12]
