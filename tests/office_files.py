"""Office files made with the libraries people's files come from (python-docx, python-pptx, openpyxl), each with its
ground truth: what a reader must find and where (the locator). Used by the unit and end-to-end tests of
`documents.formats`."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import docx
import openpyxl
import pptx
from pptx.util import Inches

from tests.factories import render_text_image


@dataclass
class Truth:
    """What must be found: ``texts`` maps a text to the locator of the chunk that holds it; ``pages`` the count."""

    pages: int
    texts: dict[str, str] = field(default_factory=dict)


def make_docx() -> tuple[bytes, Truth]:
    """A report: a title, two sections (the second with a subsection and a table), a closing section with a
    picture of words ("Valve diagram V-12")."""
    d = docx.Document()
    truth = Truth(pages=3)
    d.add_heading("Pump Manual", 0)
    d.add_paragraph("This manual covers the Zorblax pump family.")
    truth.texts["This manual covers the Zorblax pump family."] = "section 1: Pump Manual"
    d.add_heading("Installation", 1)
    d.add_paragraph("Bolt the pump to a level concrete plinth before wiring.")
    truth.texts["Bolt the pump to a level concrete plinth before wiring."] = "section 2: Pump Manual > Installation"
    d.add_heading("Torque values", 2)
    rows = [("Fastener", "Torque"), ("M8 anchor bolt", "25 Nm"), ("M10 flange bolt", "45 Nm"), ("Drain plug", "12 Nm")]
    table = d.add_table(rows=len(rows), cols=2)
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
            truth.texts[value] = "section 2: Pump Manual > Installation > Torque values, table 1"
    d.add_heading("Maintenance", 1)
    d.add_paragraph("Replace the quillon seal every 4000 operating hours.")
    truth.texts["Replace the quillon seal every 4000 operating hours."] = "section 3: Pump Manual > Maintenance"
    d.add_picture(io.BytesIO(render_text_image(["Valve diagram V-12"], fontsize=24)))  # read by OCR, not here
    out = io.BytesIO()
    d.save(out)
    return out.getvalue(), truth


def make_pptx() -> tuple[bytes, Truth]:
    """Three slides: title + bullets + notes; title + table + a picture with words; a title-only slide."""
    deck = pptx.Presentation()
    truth = Truth(pages=3)
    s1 = deck.slides.add_slide(deck.slide_layouts[1])
    s1.shapes.title.text = "Quarterly results"
    s1.placeholders[1].text = "Revenue from the Vendaval turbines grew 14 percent"
    s1.notes_slide.notes_text_frame.text = "Mention the Okapi contract signed in March"
    truth.texts["Quarterly results"] = "slide 1: Quarterly results"
    truth.texts["Revenue from the Vendaval turbines grew 14 percent"] = "slide 1: Quarterly results"
    truth.texts["Mention the Okapi contract signed in March"] = "slide 1: Quarterly results, notes"
    s2 = deck.slides.add_slide(deck.slide_layouts[5])
    s2.shapes.title.text = "Spare parts"
    rows = [("Part", "Stock"), ("Gasket kit", "31"), ("Impeller", "4")]
    table = s2.shapes.add_table(len(rows), 2, Inches(0.5), Inches(2), Inches(4), Inches(1.5)).table
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            table.cell(i, j).text = value
            truth.texts[value] = "slide 2: Spare parts, table 1"
    picture = render_text_image(["Warehouse Lisbon"], fontsize=28)
    s2.shapes.add_picture(io.BytesIO(picture), Inches(5), Inches(2))
    s3 = deck.slides.add_slide(deck.slide_layouts[5])
    s3.shapes.title.text = "Questions and answers"
    truth.texts["Questions and answers"] = "slide 3: Questions and answers"
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue(), truth


SHEETS = {
    "Budget": [("Item", "Cost", "Owner")] + [(f"Line {i}", i * 10 + 0.5, f"owner{i}") for i in range(1, 61)],
    "Staff": [("Name", "Role", "Office"), ("Ada Lovelace", "Analyst", "Bremen"), ("Tove Jansson", "Designer", "Turku")],
}


def make_xlsx(sheets: dict[str, list[tuple]] = SHEETS) -> bytes:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def sheet_cell_text(value: object) -> str:
    """A cell's value as the reader writes it (numbers without a trailing .0)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


CSV_ROWS = [("city", "population", "river")] + [(f"Town{i}", str(1000 + i), f"River{i}") for i in range(1, 41)]


def make_csv(delimiter: str = ";") -> bytes:
    return "\n".join(delimiter.join(row) for row in CSV_ROWS).encode() + b"\n"
