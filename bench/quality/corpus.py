"""The FIXED evaluation set of the quality bench: documents generated here, and questions with known answer pages.

Do not edit questions or documents casually: the point of a fixed set is that figures of later changes are
comparable. Add new questions at the end of a kind's list (and say so in the commit), never reword old ones.

Documents (every byte generated in this module, or read from the Python standard library that ships with the
interpreter; `build()` checks that every expected fact really lies on its answer page, so a change of the
material fails loudly instead of silently moving the goal posts):

- ``manual``: a fictional pump service manual: prose, error codes (identifiers), a spare-parts table and a
  performance table (drawn ruled grids: the parser's table path), figures with captions, images with text
  drawn inside them (OCR of embedded images), and two scanned pages (full-page images: OCR of a page).
- ``stdlib``: docstrings of standard-library functions and the C library's messages of `errno` codes: real
  reference text full of exact identifiers (function names, error codes).
- ``guide``: a heating commissioning guide that shares the manual's vocabulary and answers none of the
  questions (a distractor).
- ``essays``: five short essays on unrelated topics (the test suite's five-page fixture), distractors.
- ``ledger-3`` to ``ledger-8``: generated ledgers whose pages differ only by an identifier and a number
  (`tests.factories.synthetic_pages`): dense vectors cannot tell the pages apart, exact identifiers can.

Question kinds: ``text`` (prose), ``table`` (only in a table), ``caption`` (only in a figure caption), ``image``
(only in text drawn inside an embedded image), ``scanned`` (only on a scanned page), ``identifier`` (an exact
function name or error code decides), ``unanswerable`` (nothing in the corpus answers it; several are worded
to look answerable: they name the product, or an identifier that does not exist).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from dataclasses import dataclass, field

import pymupdf

from search.evaluation import fact_found
from tests.factories import A4, FIVE_PAGES, _draw_table, make_png, render_text_image, synthetic_pages

KINDS = ("text", "table", "caption", "image", "scanned", "identifier", "unanswerable")


@dataclass(frozen=True)
class Question:
    qid: str
    kind: str
    question: str
    doc: str | None = None  # None: unanswerable
    pages: tuple[int, ...] = ()  # 1-based answer pages of `doc`
    facts: tuple[str, ...] = ()  # every one must appear in a good answer (case and spacing ignored)


@dataclass
class Document:
    doc_id: str
    pdf: bytes
    page_texts: dict[int, str] = field(default_factory=dict)  # the ground truth text of each page, for checks


# --------------------------------------------------------------------------------------------- manual

MANUAL_TEXT = {
    1: (
        "Aquaflow P-200 Circulation Pump: Service Manual\n\n"
        "This manual covers installation, start-up, maintenance and fault finding of the Aquaflow P-200 "
        "circulation pump for heating and cooling circuits. Read the safety notes before any work.\n\n"
        "Safety. Disconnect the mains supply and wait five minutes before opening the terminal box: the "
        "capacitors of the motor controller hold a dangerous charge after switch-off. Never run the pump dry; "
        "the ceramic shaft seal cracks within seconds without water."
    ),
    2: (
        "Installation\n\n"
        "Mount the pump with the motor shaft horizontal. The arrow on the housing shows the direction of flow. "
        "Use pipes with an inner diameter of at least 32 mm on the suction side.\n\n"
        "Tighten the four flange bolts crosswise to a torque of 25 Nm. Fit the isolating valves on both sides "
        "so the pump can be removed without draining the circuit.\n\n"
        "The pump must be installed indoors, in a dry room where the ambient temperature stays between 2 and "
        "40 degrees Celsius."
    ),
    3: (
        "Start-up and priming\n\n"
        "Before the first start, fill the pump housing with about 2 litres of clean water through the priming "
        "plug. Open the bleed screw on top of the motor until water without air bubbles comes out, then "
        "close it again.\n\n"
        "Switch the pump on at the lowest speed step and let it run for ten minutes so trapped air can escape "
        "to the automatic air vent. Then select the speed step the heating engineer calculated."
    ),
    4: (
        "Maintenance schedule\n\n"
        "Inspect the impeller for deposits every 2000 operating hours. Limescale on the impeller blades lowers "
        "the flow rate long before the motor shows any sign of strain.\n\n"
        "Regrease the motor bearings once a year with lithium complex grease of consistency class NLGI 2. "
        "Do not mix greases of different soap types.\n\n"
        "Clean the strainer in the suction line whenever the differential pressure gauge shows more than "
        "0.3 bar across it."
    ),
    5: (
        "Fault finding: error codes E-101 to E-105\n\n"
        "E-101: inlet pressure below 0.4 bar; check the expansion vessel and refill the circuit.\n\n"
        "E-102: motor winding over temperature, above 130 degrees Celsius; let the pump cool down and check "
        "the ventilation slots.\n\n"
        "E-103: rotor blocked; turn the shaft by hand with a screwdriver through the vent screw opening.\n\n"
        "E-104: mains voltage outside 195 to 253 volts; have an electrician check the supply.\n\n"
        "E-105: dry running detected by the power monitor; stop the pump and prime it again."
    ),
    6: (
        "Fault finding: error codes E-106 to E-110\n\n"
        "E-106: communication with the room controller lost for more than 60 seconds; check the bus cable.\n\n"
        "E-107: internal memory checksum error; reload the firmware with the service tool.\n\n"
        "E-108: speed sensor signal missing; replace the Hall sensor board.\n\n"
        "E-109: flow below the minimum of 4 litres per minute for more than ten minutes; open the valves.\n\n"
        "E-110: controller temperature above 85 degrees Celsius; improve the cooling of the terminal box."
    ),
    7: (
        "Electrical connection\n\n"
        "The pump runs on a single-phase supply of 230 volts at 50 Hz. Protect the supply line with a fuse "
        "of 10 amperes, type C. The controller firmware shipped with this edition is FW-3.2.7.\n\n"
        "The potential-free fault relay opens on every error code and closes again thirty seconds after the "
        "fault has cleared."
    ),
}
# A related guide that shares the manual's vocabulary but answers none of the questions (a distractor).
GUIDE_TEXT = [
    (
        "Heating Circuit Commissioning Guide\n\n"
        "Commissioning a heating circuit starts with flushing the pipes. Debris from installation work blocks "
        "strainers, scores valve seats and wears pump bearings long before their time.\n\n"
        "Fill the circuit slowly from the lowest point so air is pushed up to the vents. Check the pressure "
        "gauge of the boiler: a cold system is usually filled to between 1 and 1.5 bar."
    ),
    (
        "Venting and pressure\n\n"
        "Vent every radiator, starting on the lowest floor. A radiator that stays cold at the top still holds "
        "air. After venting, the system pressure drops; top it up again at the filling loop.\n\n"
        "The expansion vessel must be pre-charged to the static height of the system plus 0.2 bar. A vessel "
        "with too little charge makes the pressure swing with every heating cycle."
    ),
    (
        "Pumps and valves\n\n"
        "Choose the circulation pump speed from the calculated flow and head of the circuit. Too high a speed "
        "causes flow noise in thermostatic valves; too low a speed leaves distant radiators cold.\n\n"
        "Balancing valves are set from the hydraulic calculation. Record every valve setting in the "
        "commissioning report so later changes can be traced."
    ),
    (
        "Electrical checks and handover\n\n"
        "Check that every pump, controller and boiler is earthed and protected by its own fuse as the "
        "installation drawings require. Test the frost protection function of the controller.\n\n"
        "At handover, explain the controller menus to the owner and leave the manuals of every component, "
        "together with the commissioning report, at the boiler."
    ),
]

# Page 8: spare parts (table). Page 9: performance (table). Page 10: figures with captions.
# Page 11: images with text drawn inside them. Pages 12-13: scanned service bulletin.

SPARE_PARTS = [
    ["Part no.", "Description", "Material", "Price"],
    ["AQ-3101", "Impeller", "Bronze", "84.00 EUR"],
    ["AQ-3104", "Pump housing", "Cast iron", "212.50 EUR"],
    ["AQ-3107", "Shaft seal", "Silicon carbide", "39.90 EUR"],
    ["AQ-3110", "Motor bearing set", "Chrome steel", "27.40 EUR"],
    ["AQ-3113", "Terminal box lid", "Polyamide", "12.80 EUR"],
    ["AQ-3116", "Hall sensor board", "FR4 epoxy", "56.00 EUR"],
]
PERFORMANCE = [
    ["Flow (L/min)", "Head (m)", "Power (W)", "Noise (dB)"],
    ["20", "9.8", "48", "31"],
    ["40", "8.9", "61", "33"],
    ["60", "7.5", "75", "36"],
    ["80", "5.2", "88", "39"],
]
FIGURE_CAPTIONS = [
    "Figure 3: Exploded view of the impeller housing with the wear ring.",
    "Figure 4: Position of the bleed screw on the motor head.",
]
IMAGE_TEXTS = [
    ["CONTROLLER MENU", "FLOW LIMIT 45 L/MIN", "NIGHT MODE OFF"],
    ["NAMEPLATE AQUAFLOW P-200", "MAX PRESSURE 6 BAR", "SERIAL 48217"],
]
SCAN_PAGES = [
    [
        "Service bulletin SB-17",
        "Pumps with serial numbers 48100 to 48350",
        "need a new shaft seal, part AQ-3107.",
        "Fit the new seal before the next heating season.",
    ],
    [
        "Field test report",
        "The test pump ran for 9000 hours",
        "at a water temperature of 70 degrees.",
        "Bearing wear stayed below 0.05 millimetres.",
    ],
]


def _text_page(doc: pymupdf.Document, text: str, fontsize: float = 11) -> None:
    page = doc.new_page(width=A4.width, height=A4.height)
    box = pymupdf.Rect(72, 72, A4.width - 72, A4.height - 72)
    if page.insert_textbox(box, text, fontsize=fontsize) < 0:
        raise ValueError("text does not fit the page")


def _fits(text: str, fontsize: float) -> bool:
    scratch = pymupdf.open()
    try:
        page = scratch.new_page(width=A4.width, height=A4.height)
        return page.insert_textbox(pymupdf.Rect(72, 72, A4.width - 72, A4.height - 72), text, fontsize=fontsize) >= 0
    finally:
        scratch.close()


def _table_page(doc: pymupdf.Document, title: str, rows: list[list[str]], after: str) -> str:
    page = doc.new_page(width=A4.width, height=A4.height)
    page.insert_text((72, 100), title, fontsize=14)
    rect = _draw_table(page, rows, y0=130, col_width=115)
    page.insert_text((72, rect.y1 + 40), after, fontsize=11)
    return "\n".join([title, *(" | ".join(r) for r in rows), after])


def _scan_page(doc: pymupdf.Document, lines: list[str]) -> None:
    from PIL import Image

    dpi = 150
    zoom = dpi / 72
    text = Image.open(io.BytesIO(render_text_image(lines, width_pt=A4.width - 100, fontsize=14, dpi=dpi)))
    sheet = Image.new("L", (int(A4.width * zoom), int(A4.height * zoom)), 255)
    sheet.paste(text, (int(50 * zoom), int(60 * zoom)))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    page = doc.new_page(width=A4.width, height=A4.height)
    page.insert_image(page.rect, stream=buf.getvalue())


def manual() -> Document:
    doc = pymupdf.open()
    texts: dict[int, str] = {}
    try:
        for number, text in MANUAL_TEXT.items():
            _text_page(doc, text)
            texts[number] = text
        texts[8] = _table_page(doc, "Spare parts", SPARE_PARTS, "Prices exclude VAT and shipping.")
        texts[9] = _table_page(doc, "Rated performance at speed step 3", PERFORMANCE,
                               "Measured with water at 20 degrees Celsius.")  # fmt: skip
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 80), "Illustrations", fontsize=16)
        for i, (caption, y) in enumerate(zip(FIGURE_CAPTIONS, (120, 420), strict=True)):
            rect = pymupdf.Rect(72, y, 322, y + 220)
            page.insert_image(rect, stream=make_png(500, 440, ((90 + 70 * i) % 256, 140, 200 - 60 * i)))
            page.insert_text((72, rect.y1 + 16), caption, fontsize=10)
        texts[10] = "\n".join(FIGURE_CAPTIONS)
        page = doc.new_page(width=A4.width, height=A4.height)
        page.insert_text((72, 80), "Screens and labels", fontsize=16)
        page.insert_text((72, 110), "The pictures below show the display and the label on the housing.", fontsize=11)
        for lines, y in zip(IMAGE_TEXTS, (140, 420), strict=True):
            page.insert_image(pymupdf.Rect(100, y, 420, y + 140),
                              stream=render_text_image(lines, width_pt=260, fontsize=16, dpi=150))  # fmt: skip
        texts[11] = "\n".join(line for lines in IMAGE_TEXTS for line in lines)
        for number, lines in enumerate(SCAN_PAGES, start=12):
            _scan_page(doc, lines)
            texts[number] = " ".join(lines)
        return Document("manual", doc.tobytes(deflate=True), texts)
    finally:
        doc.close()


# --------------------------------------------------------------------------------------------- stdlib

# (page, [function]) : docstrings of these functions, one page per group, headed by the module name.
STDLIB_PAGES = {
    1: ["heapq.nlargest", "heapq.nsmallest", "heapq.heappushpop", "bisect.insort_left"],
    2: ["textwrap.dedent", "textwrap.shorten", "shutil.which", "shutil.disk_usage"],
    3: ["os.path.commonpath", "os.path.normpath", "fnmatch.fnmatch", "glob.escape"],
    4: ["zlib.crc32", "zlib.adler32", "binascii.hexlify", "base64.b85encode"],
}
# More reference pages after page 5 (distractors full of names and the same vocabulary), packed in this order.
STDLIB_MORE = ("heapq.heappush heapq.heappop heapq.heapify heapq.heapreplace heapq.merge bisect.bisect_left "
               "bisect.bisect_right bisect.insort_right textwrap.wrap textwrap.fill textwrap.indent shutil.copyfile "
               "shutil.copy shutil.copy2 shutil.copytree shutil.rmtree shutil.move shutil.chown shutil.make_archive "
               "shutil.unpack_archive shutil.get_terminal_size os.path.abspath os.path.basename os.path.dirname "
               "os.path.exists os.path.expanduser os.path.getsize os.path.isabs os.path.join os.path.relpath "
               "os.path.split os.path.splitext fnmatch.filter fnmatch.translate glob.glob glob.iglob "
               "binascii.unhexlify binascii.crc_hqx base64.b64encode base64.b64decode base64.urlsafe_b64encode "
               "base64.b32encode base64.b16decode zlib.compress zlib.decompress zlib.compressobj "
               "itertools.accumulate itertools.groupby itertools.islice itertools.zip_longest "
               "functools.reduce functools.lru_cache functools.partial functools.wraps "
               "json.dumps json.loads statistics.median statistics.stdev statistics.quantiles "
               "difflib.get_close_matches difflib.unified_diff string.capwords").split()  # fmt: skip
STDLIB_HEAD = "Python standard library reference"
ERRNO_NAMES = ("ENOENT", "EACCES", "EEXIST", "ENOTDIR", "EISDIR", "ENOSPC", "EROFS", "EPIPE", "EAGAIN",
               "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EADDRINUSE", "EHOSTUNREACH", "ENAMETOOLONG", "ELOOP")  # fmt: skip


def _docstring(dotted: str) -> str:
    import importlib
    import inspect

    module, _, name = dotted.rpartition(".")
    doc = inspect.getdoc(getattr(importlib.import_module(module), name)) or ""
    return f"{dotted}\n{doc}"


def stdlib() -> Document:
    doc = pymupdf.open()
    texts: dict[int, str] = {}
    try:
        for number, names in STDLIB_PAGES.items():
            text = "Python standard library reference\n\n" + "\n\n".join(_docstring(n) for n in names)
            _text_page(doc, text, fontsize=9)
            texts[number] = text
        lines = [f"{name} (errno {getattr(errno, name)}): {os.strerror(getattr(errno, name))}." for name in ERRNO_NAMES]
        text = "System error codes\n\nThe C library reports these error codes through errno:\n\n" + "\n".join(lines)
        _text_page(doc, text, fontsize=10)
        texts[5] = text
        page, number = [], 6
        for name in STDLIB_MORE:  # as many docstrings a page as fit, in order
            entry = _docstring(name)[:700]
            if page and not _fits("\n\n".join([STDLIB_HEAD, *page, entry]), 8):
                texts[number] = "\n\n".join([STDLIB_HEAD, *page])
                _text_page(doc, texts[number], fontsize=8)
                page, number = [], number + 1
            page.append(entry)
        texts[number] = "\n\n".join([STDLIB_HEAD, *page])
        _text_page(doc, texts[number], fontsize=8)
        return Document("stdlib", doc.tobytes(deflate=True), texts)
    finally:
        doc.close()


def _plain(doc_id: str, pages: list[str], fontsize: float = 11) -> Document:
    doc = pymupdf.open()
    try:
        for text in pages:
            _text_page(doc, text, fontsize)
        return Document(doc_id, doc.tobytes(deflate=True), dict(enumerate(pages, start=1)))
    finally:
        doc.close()


def documents() -> list[Document]:
    return [
        manual(),
        stdlib(),
        _plain("guide", GUIDE_TEXT),
        _plain("essays", FIVE_PAGES),
        _plain("ledger-3", synthetic_pages(3, pages=6), fontsize=9),
        *(_plain(f"ledger-{n}", synthetic_pages(n, pages=6), fontsize=9) for n in (4, 5, 6, 7, 8)),
    ]


# --------------------------------------------------------------------------------------------- questions

Q = Question
# fmt: off
QUESTIONS: list[Question] = [
    # text: prose, usually reworded
    Q("t01", "text", "How long must I wait after disconnecting the supply before opening the terminal box?", "manual", (1,), ("five minutes",)),
    Q("t02", "text", "What happens to the shaft seal if the pump runs dry?", "manual", (1,), ("cracks",)),
    Q("t03", "text", "What torque should the flange bolts be tightened to?", "manual", (2,), ("25 Nm",)),
    Q("t04", "text", "What minimum inner pipe diameter is needed on the suction side?", "manual", (2,), ("32 mm",)),
    Q("t05", "text", "How much water is needed to prime the pump before the first start?", "manual", (3,), ("2 litres",)),
    Q("t06", "text", "How often should the impeller be inspected for deposits?", "manual", (4,), ("2000 operating hours",)),
    Q("t07", "text", "Which grease should be used for the motor bearings?", "manual", (4,), ("NLGI 2",)),
    Q("t08", "text", "What fuse protects the supply line of the pump?", "manual", (7,), ("10 amperes",)),
    Q("t09", "text", "When should the strainer in the suction line be cleaned?", "manual", (4,), ("0.3 bar",)),
    Q("t10", "text", "What do puffins do each spring?", "essays", (1,), ("cliff burrows",)),
    Q("t11", "text", "How did bakers make leavened bread spread?", "essays", (2,), ("fermented dough",)),
    Q("t12", "text", "What do interlibrary loans allow a small branch to offer?", "essays", (5,), ("huge catalogue",)),
    # text, paraphrased: few or none of the answer's words (meaning must carry it)
    Q("t13", "text", "What lubricant does the manual recommend for the bearings?", "manual", (4,), ("NLGI 2",)),
    Q("t14", "text", "Why is it dangerous to open the electronics right after switching off?", "manual", (1,), ("capacitors",)),
    Q("t15", "text", "How does trapped air get out of the system after the first start?", "manual", (3,), ("automatic air vent",)),
    Q("t16", "text", "Which room conditions does the unit need?", "manual", (2,), ("2 and 40",)),
    Q("t17", "text", "How do gulls get at the meat of shellfish?", "essays", (1,), ("onto rocks",)),
    Q("t18", "text", "When is the best time of day to try on footwear?", "essays", (4,), ("afternoon",)),
    Q("t19", "text", "What do small public libraries spend most of their money on?", "essays", (5,), ("staff and buildings",)),
    Q("t20", "text", "What electricity supply does the circulator need?", "manual", (7,), ("230 volts",)),
    # table: the fact is only in a table cell
    Q("b01", "table", "What is the price of the bronze impeller?", "manual", (8,), ("84.00",)),
    Q("b02", "table", "What material is the pump housing made of?", "manual", (8,), ("Cast iron",)),
    Q("b03", "table", "How much does the motor bearing set cost?", "manual", (8,), ("27.40",)),
    Q("b04", "table", "What head does the pump deliver at a flow of 60 L/min?", "manual", (9,), ("7.5",)),
    Q("b05", "table", "How much power does the pump draw at 80 L/min?", "manual", (9,), ("88",)),
    Q("b06", "table", "Which part number is the Hall sensor board?", "manual", (8,), ("AQ-3116",)),
    # caption: only the caption says it
    Q("c01", "caption", "Which figure shows the exploded view of the impeller housing?", "manual", (10,), ("Figure 3",)),
    Q("c02", "caption", "Where is the illustration of the bleed screw position?", "manual", (10,), ("Figure 4",)),
    Q("c03", "caption", "Is there a drawing of the wear ring?", "manual", (10,), ("wear ring",)),
    # image: only text drawn inside an embedded image
    Q("i01", "image", "What flow limit is set in the controller menu?", "manual", (11,), ("45",)),
    Q("i02", "image", "What maximum pressure is printed on the nameplate?", "manual", (11,), ("6 BAR",)),
    Q("i03", "image", "What is the serial number on the nameplate?", "manual", (11,), ("48217",)),
    Q("i04", "image", "Is night mode switched on in the controller menu?", "manual", (11,), ("NIGHT MODE OFF",)),
    # scanned: only on a scanned page (OCR)
    Q("s01", "scanned", "Which serial numbers need a new shaft seal according to service bulletin SB-17?", "manual", (12,), ("48100",)),
    Q("s02", "scanned", "What does service bulletin SB-17 say must be fitted before the next heating season?", "manual", (12,), ("new seal",)),
    Q("s03", "scanned", "How many hours did the test pump run in the field test?", "manual", (13,), ("9000 hours",)),
    Q("s04", "scanned", "How much bearing wear was measured in the field test?", "manual", (13,), ("0.05",)),
    # identifier: an exact function name or error code decides
    Q("d01", "identifier", "What does error code E-103 mean?", "manual", (5,), ("rotor blocked",)),
    Q("d02", "identifier", "What should I do about error E-107?", "manual", (6,), ("reload the firmware",)),
    Q("d03", "identifier", "What triggers E-109?", "manual", (6,), ("4 litres per minute",)),
    Q("d04", "identifier", "What is the errno message of ETIMEDOUT?", "stdlib", (5,), ("Connection timed out",)),
    Q("d05", "identifier", "What does EROFS mean?", "stdlib", (5,), ("Read-only file system",)),
    Q("d06", "identifier", "What does heapq.nsmallest do?", "stdlib", (1,), ("n smallest",)),
    Q("d07", "identifier", "What does textwrap.dedent remove?", "stdlib", (2,), ("common leading whitespace",)),
    Q("d08", "identifier", "What does zlib.adler32 compute?", "stdlib", (4,), ("Adler-32 checksum",)),
    Q("d09", "identifier", "How many crates does ledger entry D3P5 record?", "ledger-3", (5,), ("1166",)),
    Q("d10", "identifier", "How many crates does ledger entry D4P2 record?", "ledger-4", (2,), ("1170",)),
    Q("d11", "identifier", "Which firmware version ships with this edition of the pump?", "manual", (7,), ("FW-3.2.7",)),
    Q("d12", "identifier", "What does shutil.which return?", "stdlib", (2,), ("conforms to the given mode",)),
    # unanswerable: nothing in the corpus answers these
    Q("u01", "unanswerable", "What is the warranty period of the Aquaflow P-200?"),
    Q("u02", "unanswerable", "What does error code E-150 mean?"),
    Q("u03", "unanswerable", "Who won the football world cup in 1998?"),
    Q("u04", "unanswerable", "What is the capital city of Australia?"),
    Q("u05", "unanswerable", "How do I bake a chocolate cake without eggs?"),
    Q("u06", "unanswerable", "How many crates does ledger entry D9P4 record?"),
    Q("u07", "unanswerable", "What is the boiling point of mercury?"),
    Q("u08", "unanswerable", "How do I configure the pump's Wi-Fi connection?"),
    Q("u09", "unanswerable", "What does the function os.replace do?"),
    Q("u10", "unanswerable", "Which vaccine protects against yellow fever?"),
]
# fmt: on


def build() -> tuple[list[Document], list[Question], str]:
    """The documents, the questions and a digest of both (printed by the bench: equal digests = same set).

    Raises AssertionError if a question's fact is not on its answer page (the material changed)."""
    docs = documents()
    by_id = {d.doc_id: d for d in docs}
    for q in QUESTIONS:
        assert q.kind in KINDS, q
        if q.doc is None:
            continue
        page_text = " ".join(by_id[q.doc].page_texts[p] for p in q.pages)
        for fact in q.facts:
            assert fact_found(fact, page_text.replace(" | ", " ")), f"{q.qid}: {fact!r} is not on its answer page"
    digest = hashlib.sha256()
    for d in docs:
        digest.update(d.doc_id.encode())
        for p in sorted(d.page_texts):
            digest.update(d.page_texts[p].encode())
    for q in QUESTIONS:
        digest.update(repr(q).encode())
    return docs, QUESTIONS, digest.hexdigest()[:12]
