"""Languages (issue 18): the text model of an index generation, the models of a process, e5's cosines, and OCR
that says what it cannot read. The engine-level behaviour: tests/e2e/test_languages_engine.py."""

from __future__ import annotations

import io
import json

import numpy as np
import pymupdf
import pytest
from PIL import Image
from pydantic import ValidationError

from agents.ocr import illegible_warning
from contracts.generations import GenerationRecord, GenerationSettings
from contracts.messages import DocumentProgress, DocumentStatus, OcrRequest
from contracts.topology import IndexGeneration, generation_of
from documents import read_page_checked
from documents.ocr import Legibility, OcrLine, check_fallback, legibility
from models.embedding_models import E5_MODEL, E5Encoder, EmbeddingModels, profile
from tests.factories import DEJAVU


def test_a_generation_records_its_text_model_and_a_reindex_carries_it_forward() -> None:
    e5 = GenerationSettings(embedding_model="multilingual-e5-small")
    assert e5.overrides() == {"embedding_model": "multilingual-e5-small"}
    assert GenerationSettings(chunk_max_tokens=64).merged(GenerationSettings()).embedding_model is None
    assert e5.merged(GenerationSettings(chunk_max_tokens=64)).embedding_model == "multilingual-e5-small"
    assert e5.merged(GenerationSettings(embedding_model="minilm")).embedding_model == "minilm"
    with pytest.raises(ValidationError, match="minilm"):
        GenerationSettings(embedding_model="bert-base")  # type: ignore[arg-type]
    # A record written before the field existed still reads (None = the process default).
    old = {"schema_version": 1, "generation": 1, "state": "serving", "settings": {"chunk_max_tokens": 64}}
    assert GenerationRecord.model_validate_json(json.dumps(old)).settings.embedding_model is None


def test_progress_warnings_are_optional_and_added_once() -> None:
    record = {"schema_version": 2, "doc_id": "d1", "tenant": "t", "generation": 1, "revision": 3, "status": "parsing"}
    progress = DocumentProgress.model_validate_json(json.dumps(record))  # a record of the previous release
    assert progress.warnings == []
    warned = progress.with_warning("page 2: unreadable").with_warning("page 2: unreadable")
    assert warned.warnings == ["page 2: unreadable"] and warned.status is DocumentStatus.PARSING
    assert warned.with_warning("page 3: unreadable").warnings == ["page 2: unreadable", "page 3: unreadable"]


def test_the_generation_of_a_collection() -> None:
    assert generation_of("mmrag", IndexGeneration(12).collection("mmrag")) == 12
    assert generation_of("mmrag", "mmrag") is None
    assert generation_of("mmrag", "other-g2") is None
    assert generation_of("a.b", "axb-g2") is None  # the alias is matched literally


def test_e5_finds_the_passage_across_languages_and_its_cosines_need_their_own_profile() -> None:
    model = E5Encoder()
    passages = [
        "Le parc ferme ses portes à 18 heures en hiver.",  # French: the park closes at 6 p.m. in winter
        "Парковка для велосипедов находится за главным корпусом.",  # Russian: bicycle parking behind the main building
        "会员卡丢失后请在七天内到服务台挂失。",  # Chinese: report a lost membership card at the desk within 7 days
        "Die Bibliothek bleibt am Sonntag geschlossen.",  # German: the library is closed on Sunday
    ]
    questions = ["what time does the park shut in winter?", "where can I leave my bike?",
                 "I lost my membership card, what do I do?", "is the library open on Sundays?"]  # fmt: skip
    p, q = model.embed_passages(passages), model.embed_queries(questions)
    assert p.shape == (4, 384) and np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-3)
    cosines = q @ p.T
    assert list(np.argmax(cosines, axis=1)) == [0, 1, 2, 3]
    # Unrelated pairs score far above MiniLM's floor: mapped with MiniLM's profile every passage would look
    # relevant; e5's profile keeps unrelated ones low.
    unrelated = cosines[~np.eye(4, dtype=bool)]
    assert unrelated.min() > profile("minilm").ceiling - 0.2
    assert np.mean([profile(E5_MODEL).scale(c) for c in unrelated]) < 0.3
    assert np.mean([profile(E5_MODEL).scale(c) for c in np.diag(cosines)]) > np.mean(
        [profile(E5_MODEL).scale(c) for c in unrelated]) + 0.2  # fmt: skip
    assert profile(None) == profile("minilm") == profile("a-custom-folder")


def test_each_model_loads_once_per_role_and_process() -> None:
    """One instance per model and role: the ingest side is its own, loaded in the background thread at a lower
    priority (decision 83), and asking again never loads another."""
    loads: list[str] = []

    class Counting(E5Encoder):  # stands in for MiniLM's loader: what matters is how often it is called
        def __init__(self) -> None:
            loads.append("minilm")
            super().__init__()

    models = EmbeddingModels("minilm", Counting)
    assert models.get(None).model is models.get("minilm", "query").model
    assert models.get("minilm", "ingest").model is models.get("minilm", "ingest").model
    assert models.get("minilm", "ingest").model is not models.get("minilm", "query").model
    assert loads == ["minilm", "minilm"]
    ingest, query = models.get(E5_MODEL, "ingest").model, models.get(E5_MODEL, "query").model
    assert ingest is not query and models.get(E5_MODEL, "query").model is query
    assert models.loaded() == ["minilm", E5_MODEL]
    with pytest.raises(ValueError, match="one of minilm, multilingual-e5-small"):
        models.get("bert")
    with pytest.raises(ValueError, match="unknown embedding model"):
        EmbeddingModels("bert", Counting)


def _scan(text: str, *, fontsize: float = 13) -> tuple[bytes, tuple[float, float, float, float]]:
    """A page of `text` rendered to a grey PNG (a scan: no text layer), and its bbox in page points."""
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    page.insert_textbox(pymupdf.Rect(60, 60, 535, 780), text, fontsize=fontsize, fontname="dejavu", fontfile=DEJAVU)
    pix = page.get_pixmap(dpi=150, colorspace=pymupdf.csGRAY)
    img = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), (0.0, 0.0, 595.0, 842.0)


RUSSIAN = ("Внимание! С понедельника в подъезде начинается косметический ремонт. Просим жильцов освободить "
           "лестничные площадки от личных вещей и не оставлять коляски у лифта. Вопросы по телефону 4471. ") * 3  # fmt: skip
ENGLISH = ("Notice: cosmetic repairs start in the stairwell on Monday. Residents are asked to clear the landings "
           "of personal belongings and not to leave prams by the lift. Questions: extension 4471. ") * 3  # fmt: skip


def test_ocr_of_a_cyrillic_scan_is_illegible_and_says_so() -> None:
    raster, bbox = _scan(RUSSIAN)
    read = read_page_checked(raster, bbox)
    assert read.legibility.expected > 100 and read.legibility.illegible, read.legibility
    words = {w for c in read.chunks for w in c.text.split()}
    assert not any(len(w) > 3 and w.isalpha() for w in words), words  # what it read is no text at all
    req = OcrRequest(doc_id="d1", tenant="t", generation=1, revision=1, batch_index=4, first_index=10_000_000,
                     filename="notice.pdf", page=2, kind="page", object_name="t/d1/pages/2", bbox=bbox)  # fmt: skip
    warning = illegible_warning(req, read.legibility)
    assert warning is not None and warning.startswith("page 2: OCR found text it could not read")
    assert "text layer" in warning  # names the fix


def test_ocr_of_a_latin_scan_is_legible() -> None:
    raster, bbox = _scan(ENGLISH)
    read = read_page_checked(raster, bbox)
    assert not read.legibility.illegible and read.legibility.share > 0.7, read.legibility
    assert "stairwell" in " ".join(c.text for c in read.chunks)


def test_legibility_counts_words_not_symbols_and_judges_only_enough_text() -> None:
    line = (0.0, 0.0, 400.0, 20.0)  # room for ~40 characters
    assert legibility([OcrLine("Residents are asked to clear the landings", line, 0.9)]).share > 0.8
    assert legibility([OcrLine(": , . 2215.", line, 0.5)]).illegible  # the Russian notice
    assert legibility([OcrLine("", line, 0.0), OcrLine("α τν ν", line, 0.3)]).illegible  # read as nothing / soup
    assert legibility([OcrLine("本周四下午三点在会议室召开", (0.0, 0.0, 260.0, 20.0), 0.9)]).share > 0.9  # CJK: 1 em
    assert not legibility([OcrLine("?!", (0.0, 0.0, 100.0, 20.0), 0.2)]).illegible  # a label: too little to judge
    assert not Legibility(expected=0.0, legible=0).illegible and Legibility(0.0, 0).share == 1.0


def test_the_tesseract_fallback_reads_the_cyrillic_scan_the_shipped_models_cannot() -> None:
    from dataclasses import replace

    from documents import ParseSettings
    from documents.ocr import DEFAULT_OCR

    check_fallback("rus")  # `make ocr-languages` installed it; the message says how when it did not
    raster, bbox = _scan(RUSSIAN)
    read = read_page_checked(raster, bbox, ParseSettings(ocr=replace(DEFAULT_OCR, threads=1, fallback_languages="rus")))
    assert not read.legibility.illegible and read.legibility.share > 0.6, read.legibility
    text = " ".join(c.text for c in read.chunks)
    assert "ремонт" in text and "лестничные" in text, text
    with pytest.raises(RuntimeError, match="apt-get install tesseract-ocr-xyzz"):
        check_fallback("rus+xyzz")
