"""Fixture builders shared by the test suite: documents generated in memory, no files on disk."""

from __future__ import annotations

import pymupdf

A4 = pymupdf.paper_rect("a4")
_MARGIN = 72.0
USER_PASSWORD = "user-secret"
OWNER_PASSWORD = "owner-secret"


def make_pdf(pages: list[str], *, fontsize: float = 11) -> bytes:
    """An A4 PDF with one page per string; blank lines in a string start a new text block.

    Text that does not fit the page's text box raises ValueError rather than being silently dropped.
    """
    doc = pymupdf.open()
    try:
        for number, text in enumerate(pages, start=1):
            page = doc.new_page(width=A4.width, height=A4.height)
            box = pymupdf.Rect(_MARGIN, _MARGIN, A4.width - _MARGIN, A4.height - _MARGIN)
            if page.insert_textbox(box, text, fontsize=fontsize) < 0:
                raise ValueError(f"text of page {number} does not fit on an A4 page at fontsize {fontsize}")
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def make_encrypted_pdf(pages: list[str]) -> bytes:
    """``make_pdf(pages)`` encrypted with AES-256 and a user password (so it cannot be opened without one)."""
    doc = pymupdf.open(stream=make_pdf(pages), filetype="pdf")
    try:
        return doc.tobytes(
            encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=USER_PASSWORD, owner_pw=OWNER_PASSWORD
        )
    finally:
        doc.close()


def make_image_only_pdf() -> bytes:
    """A one-page PDF with drawn shapes and no text layer at all (what a scan looks like to a text extractor)."""
    doc = pymupdf.open()
    try:
        page = doc.new_page(width=A4.width, height=A4.height)
        page.draw_rect(pymupdf.Rect(100, 100, 400, 300), color=(0, 0, 0), fill=(0.7, 0.7, 0.9))
        page.draw_circle(pymupdf.Point(300, 500), 80, color=(1, 0, 0))
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def corrupt_pdf() -> bytes:
    """A PDF header followed by binary garbage: no xref, no objects; PyMuPDF cannot open or repair it."""
    return b"%PDF-1.7\n" + bytes(range(256)) * 8


def truncated_pdf(pages: list[str]) -> bytes:
    """``make_pdf(pages)`` cut to its first 40% of bytes (an interrupted upload).

    What PyMuPDF 2.0 (MuPDF 1.28) does with it depends on where the cut lands, not on how much is kept:
    the xref table and trailer at the end are gone, so MuPDF scans for objects and tries to rebuild one.
    If the catalog and page tree survive (MuPDF writes them first) the file opens WITHOUT error,
    ``doc.is_repaired`` is True, ``page_count`` is the full count, pages whose content stream survived keep
    their text, a page whose deflated stream is cut keeps a prefix of it, later pages are empty; the
    repair notes go to ``pymupdf.TOOLS.mupdf_warnings()``, not to an exception. Otherwise ``open`` raises
    ``FileDataError`` (e.g. a one-page document cut at 40%, or ``FIVE_PAGES`` cut at 60%).

    For ``FIVE_PAGES`` at 40%: 5 pages, page 1 complete, page 2 partial, pages 3-5 empty (the fact is lost).
    """
    data = make_pdf(pages)
    return data[: int(len(data) * 0.4)]


FACT = "The Zorblax-7 reactor core operates at exactly 4127 degrees Kelvin."
QUESTION = "What temperature does the Zorblax-7 reactor core operate at?"
FACT_PHRASE = "4127 degrees Kelvin"

FIVE_PAGES = [
    (
        "Coastal Birds of the Northern Shore\n\n"
        "Along the northern shore, colonies of puffins return each spring to the same cliff burrows. "
        "Their bright bills fade after the breeding season, and many observers mistake juveniles for "
        "another species entirely.\n\n"
        "Gulls, by contrast, are opportunists. They follow fishing boats, raid picnic baskets and have "
        "learned to drop shellfish onto rocks to crack them open.\n\n"
        "Volunteers count the nests every June, and the counts have been stable for a decade."
    ),
    (
        "A Short History of Bread\n\n"
        "Bread is among the oldest prepared foods. Early loaves were flat and unleavened, baked on hot "
        "stones near the fire.\n\n"
        "Leavened bread spread once bakers learned to keep a portion of fermented dough for the next "
        "batch. Sourdough cultures can be kept alive for generations.\n\n"
        "Industrial milling in the nineteenth century made white flour cheap, changing diets across "
        "entire continents."
    ),
    (
        "Engineering Notes on the Zorblax Programme\n\n"
        "The Zorblax programme built a series of experimental power plants, each designed to test a "
        "different cooling arrangement.\n\n"
        f"{FACT} Engineers chose this setting after long trials of the heat exchangers.\n\n"
        "Maintenance crews inspect the shielding every quarter and log any deviation in the control room."
    ),
    (
        "Choosing a Hiking Boot\n\n"
        "A good hiking boot balances support with weight. Heavy leather boots last for years but need "
        "a long breaking-in period.\n\n"
        "Synthetic boots dry quickly and are comfortable from the first day, though they wear out sooner "
        "on rocky trails.\n\n"
        "Always try boots on in the afternoon, when feet are slightly swollen from the day's walking."
    ),
    (
        "The Economics of Small Libraries\n\n"
        "Small public libraries run on tight budgets. Most of the money goes to staff and buildings, "
        "leaving little for new acquisitions.\n\n"
        "Interlibrary loans let a small branch offer a huge catalogue at the cost of a few days of "
        "waiting.\n\n"
        "Many libraries now lend tools, seeds and musical instruments alongside books."
    ),
]


def five_page_pdf_with_fact() -> tuple[bytes, str, str]:
    """(pdf, question, distinctive phrase): five pages on unrelated topics; only page 3 states ``FACT``,
    which answers ``QUESTION`` and contains the phrase."""
    return make_pdf(FIVE_PAGES), QUESTION, FACT_PHRASE


_WORDS = (
    "archive basalt cobalt delta ember fjord granite harbor iris juniper kelp lantern meadow nickel orchard "
    "prairie quartz river saffron tundra umber valley willow xenon yarrow zephyr beacon canyon dune estuary"
).split()


def synthetic_pages(doc_number: int, pages: int = 10, sentences_per_page: int = 14) -> list[str]:
    """Deterministic prose for corpus tests and benchmarks; every page states one unique, findable fact.

    Page p of document d contains "Ledger entry D{d}P{p} records {value} crates." with a value derived from
    d and p, so a test can ask about any page and know the answer.
    """
    out = []
    for page in range(1, pages + 1):
        sentences = []
        for s in range(sentences_per_page):
            i = doc_number * 7919 + page * 104729 + s * 31
            words = [_WORDS[(i // (k + 1) + k * 13) % len(_WORDS)] for k in range(9)]
            sentences.append(" ".join(words).capitalize() + ".")
        sentences.insert(sentences_per_page // 2, f"Ledger entry D{doc_number}P{page} records {ledger_value(doc_number, page)} crates.")
        half = len(sentences) // 2
        out.append(" ".join(sentences[:half]) + "\n\n" + " ".join(sentences[half:]))
    return out


def ledger_value(doc_number: int, page: int) -> int:
    return 1000 + (doc_number * 37 + page * 11) % 9000


def synthetic_pdf(doc_number: int, pages: int = 10) -> bytes:
    return make_pdf(synthetic_pages(doc_number, pages), fontsize=9)
