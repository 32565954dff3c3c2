"""Offline OCR with the PP-OCR models that ship inside the ``rapidocr`` wheel (no download, no model hub).

- :func:`ocr_image` reads image bytes (PNG/JPEG/WebP/TIFF) and returns lines in *image pixel* coordinates;
- :func:`render_page` renders a PDF page (grey) for OCR; :func:`documents.reader.read_page` reads it in *page
  points* (displayed page, top-left origin), the coordinates of the text blocks of :mod:`documents.layout`;
- :func:`ocr_pixels` is the shared core (a PIL image -> lines, scaled by a factor).

Only rapidocr's default models are used (PP-OCRv6 small detection/recognition), run by OpenVINO by default
(``OcrSettings.engine``); the configuration never names another language or model, because those would be
downloaded. Settings are in :class:`OcrSettings`; the
engine is built once per settings value and reused (building it loads the models, ~0.5-2 s).
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pymupdf
from PIL import Image

from .images import MAX_IMAGE_PIXELS, decode_image, probe_image

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class OcrLine:
    """One recognised line. ``bbox`` is the axis-aligned hull of the detected (possibly slanted) quadrilateral,
    in page points for a rendered page and in pixels for :func:`ocr_image`; ``confidence`` in 0..1."""

    text: str
    bbox: BBox
    confidence: float


@dataclass(frozen=True)
class OcrSettings:
    """OCR speed/quality levers (see bench/parse_speed.py for their measured effect).

    dpi: page render resolution for OCR of a scanned page. Recognition works on 48-px-high line crops whatever the
      dpi, so dpi mostly changes detection cost and the legibility of small print.
    det_limit_side_len / det_limit_type: detection input size; "max" caps the longer side (faster on big
      renders), rapidocr's default "min" 736 upscales the shorter side to >= 736. An A4 page at 150 dpi
      (1240 x 1754) detected at max 960 took 0.28-0.30 s vs 0.73-0.77 s at max 1280, with the same word
      recall (1.0) on 7-pt and 8.5-pt dense pages; on a page of few lines detection is most of the time.
    use_cls: the 0/180-degree line classifier; scans are upright, so it is off by default.
    rec_batch_num: line crops per recognition batch (sorted by width, so padding stays small); larger batches
      were slower here (per 1920-px line: 102 ms at 1, 104 at 6, 124 at 16, 145 at 32: cache-bound).
    threads: inference threads per model session (0 = the runtime's default, all cores).
    engine: the runtime that runs the shipped ONNX files: "openvino" (rapidocr's OpenVINO engine; decision 58:
      2-3x faster than ONNX Runtime on dense scans, same text) or "onnxruntime" (rapidocr's own default).
    max_pixels: images above this are downscaled before OCR (bounded memory and time).
    fallback_languages: Tesseract language packs ("rus", "rus+ell", Debian's tesseract-ocr-<lang>, installed by
      `make ocr-languages`) that read a raster again when PP-OCR's reading is illegible (`legibility`): the
      scripts the shipped PP-OCR models cannot read. "" = no fallback.
    """

    dpi: int = 150
    det_limit_side_len: int = 960
    det_limit_type: str = "max"
    use_cls: bool = False
    rec_batch_num: int = 6
    threads: int = 0
    text_score: float = 0.5
    max_pixels: int = 4_000_000
    engine: str = "openvino"
    fallback_languages: str = ""  # tesseract languages ("rus+ell") for rasters PP-OCR cannot read; "" = none


# The ONNX files inside the rapidocr wheel that its default config resolves to. The OpenVINO engine is given
# these paths, because without a path rapidocr would download its models.
SHIPPED_MODELS = {"Det": "PP-OCRv6_det_small.onnx", "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
                  "Rec": "PP-OCRv6_rec_small.onnx"}  # fmt: skip
ENGINES = ("onnxruntime", "openvino")


DEFAULT_OCR = OcrSettings()
_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _engine(settings: OcrSettings):  # -> rapidocr.RapidOCR
    import rapidocr  # imported lazily: ~1 s of imports (cv2, omegaconf) only when OCR is used
    from rapidocr import EngineType, RapidOCR

    if settings.engine not in ENGINES:
        raise ValueError(f"OcrSettings.engine {settings.engine!r} is not one of {ENGINES}")
    params = {
        "Global.log_level": "error",
        "Global.use_cls": settings.use_cls,
        "Global.text_score": settings.text_score,
        # Our own guard rails decide the input size; rapidocr's would silently shrink to 2000 px.
        "Global.max_side_len": 4096,
        "Det.limit_side_len": settings.det_limit_side_len,
        "Det.limit_type": settings.det_limit_type,
        "Rec.rec_batch_num": settings.rec_batch_num,
    }
    if settings.engine == "openvino":
        models = Path(rapidocr.__file__).parent / "models"
        for part, name in SHIPPED_MODELS.items():
            if not (models / name).is_file():
                raise RuntimeError(f"this rapidocr ships no {name} in {models}: pin the rapidocr"
                                   " version of pyproject.toml or update documents/ocr.py's SHIPPED_MODELS")  # fmt: skip
            params[f"{part}.engine_type"] = EngineType.OPENVINO
            params[f"{part}.model_path"] = str(models / name)
        if settings.threads > 0:
            params["EngineConfig.openvino.inference_num_threads"] = settings.threads
    elif settings.threads > 0:
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = settings.threads
        params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
    engine = RapidOCR(params=params)
    logging.getLogger("RapidOCR").setLevel(logging.ERROR)
    # rapidocr 3.10 loads (OpenVINO: compiles) each model at its first use; load them now, so that a start-up
    # (`mmrag models`, the ocr agent's start) pays for it and fails there, not the first page.
    for part in ("det", "rec", "cls") if settings.use_cls else ("det", "rec"):
        load = getattr(engine, f"_load_{part}_model", None)  # absent where a release loads them eagerly
        if load is not None:
            load()
    return engine


def warm_up(settings: OcrSettings = DEFAULT_OCR) -> None:
    """Build the engine for ``settings`` now (loads every model it uses, ~0.5-5 s), not on the first page."""
    _engine(settings)


def ocr_pixels(img: Image.Image, *, scale: float = 1.0, offset: tuple[float, float] = (0.0, 0.0),
               settings: OcrSettings = DEFAULT_OCR, keep_empty: bool = False) -> list[OcrLine]:  # fmt: skip
    """Lines of a decoded image; pixel (x, y) maps to (offset_x + x * scale, offset_y + y * scale).

    Images over ``settings.max_pixels`` are downscaled first (the scale is adjusted, so coordinates stay right).
    `keep_empty`: also the detected lines recognition read nothing in (text ""), for `legibility`.
    """
    if img.width * img.height > settings.max_pixels:
        shrink = (settings.max_pixels / (img.width * img.height)) ** 0.5
        size = (max(1, int(img.width * shrink)), max(1, int(img.height * shrink)))
        scale *= img.width / size[0]
        img = img.resize(size, Image.Resampling.BILINEAR)
    if img.width < 8 or img.height < 8:
        return []
    array = np.asarray(img.convert("RGB"))[:, :, ::-1]  # RapidOCR wants BGR like OpenCV
    with _lock:  # ORT sessions are thread-safe, but two pages at once on 2 cores only thrash
        result = _engine(settings)(np.ascontiguousarray(array))
    if result.boxes is None or result.txts is None:
        return []
    lines = []
    ox, oy = offset
    for box, text, score in zip(result.boxes, result.txts, result.scores):
        text = " ".join(str(text).split())
        if not text and not keep_empty:
            continue
        xs = [float(p[0]) for p in box]
        ys = [float(p[1]) for p in box]
        bbox = (ox + min(xs) * scale, oy + min(ys) * scale, ox + max(xs) * scale, oy + max(ys) * scale)
        lines.append(OcrLine(text=text, bbox=bbox, confidence=round(float(score), 4)))
    return lines


def ocr_image(data: bytes, *, settings: OcrSettings = DEFAULT_OCR, keep_empty: bool = False) -> list[OcrLine]:
    """Lines of an image file's bytes, bboxes in the image's pixel coordinates.

    Raises :class:`~documents.images.ImageRejected` for empty, 0x0, over-budget or undecodable images.
    """
    full_width = probe_image(data).width  # header only: the size before any downscale
    img = decode_image(data, max_pixels=MAX_IMAGE_PIXELS, target_pixels=settings.max_pixels)
    return ocr_pixels(img, scale=full_width / img.width, settings=settings, keep_empty=keep_empty)


def render_page(page: pymupdf.Page, dpi: int, max_pixels: int) -> tuple[Image.Image, float]:
    """(grey image of the displayed page, points per pixel); the dpi is lowered for huge pages so the render
    stays within ``max_pixels``."""
    rect = page.rect  # displayed (rotation applied) size in points
    pixels_at_dpi = (rect.width * dpi / 72) * (rect.height * dpi / 72)
    if pixels_at_dpi > max_pixels:
        dpi = max(1, int(dpi * (max_pixels / pixels_at_dpi) ** 0.5))
    zoom = dpi / 72
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
    img = Image.frombytes("L", (pix.width, pix.height), pix.samples)
    return img, rect.width / pix.width


def lines_to_paragraphs(lines: list[OcrLine], *, gap_factor: float = 0.9) -> list[tuple[BBox, str]]:
    """Group OCR lines (in reading order) into paragraphs: a line joins the previous paragraph when the vertical
    gap is under ``gap_factor`` line heights and the two overlap horizontally."""
    paragraphs: list[tuple[BBox, list[str]]] = []
    for line in sorted(lines, key=lambda l: (round(l.bbox[1] / 4), l.bbox[0])):
        x0, y0, x1, y1 = line.bbox
        if paragraphs:
            (px0, py0, px1, py1), texts = paragraphs[-1]
            height = max(1.0, y1 - y0)
            if y0 - py1 < gap_factor * height and y0 >= py0 and min(x1, px1) > max(x0, px0):
                paragraphs[-1] = ((min(px0, x0), py0, max(px1, x1), max(py1, y1)), [*texts, line.text])
                continue
        paragraphs.append(((x0, y0, x1, y1), [line.text]))
    return [(bbox, " ".join(texts)) for bbox, texts in paragraphs]


# -- legibility: did OCR read the text it found?
#
# Detection finds text lines in any script, but the shipped recognition models read Chinese and Latin scripts
# only: a Cyrillic, Greek or Arabic line comes back as punctuation, stray letters or nothing (a Russian notice
# read as ": , . 2215."). The measure compares what was read with what the lines' geometry says they hold:
# a line h high and w wide holds about w / (0.5 h) characters of Latin print (a CJK character is about h wide: it
# counts as two), and only characters of word-like tokens count (two or more letters of one word, numbers of two
# or more digits, CJK characters). Calibrated on rendered pages in nine scripts and languages that no test uses
# (share read: English, French, German, Chinese 0.71-1.0; Russian, Ukrainian 0.00-0.03; Greek, read as letter
# soup, 0.16; Arabic: no line detected, so no judgement): below LEGIBLE_SHARE is illegible. A raster whose lines hold
# fewer than MIN_EXPECTED_CHARS characters (a logo, a label) is never judged.
LEGIBLE_SHARE = 0.4
MIN_EXPECTED_CHARS = 30.0
_PUNCTUATION = ".,;:!?()[]{}\"'«»„“”‘’—–-…/|*•·"


def _legible_chars(token: str) -> int:
    core = token.strip(_PUNCTUATION)
    if len(core) >= 2 and core.isalpha() and not any(_is_cjk(ch) for ch in core):
        return len(core)
    if len(core) >= 2 and core[0].isdigit() and all(ch.isdigit() or ch in ".,:/-" for ch in core):
        return len(core)
    return sum(2 for ch in core if _is_cjk(ch))


def _is_cjk(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\u3040" <= ch <= "\u30ff"


@dataclass(frozen=True)
class Legibility:
    """What OCR read of the lines it found: `expected` characters by the lines' geometry, `legible` characters
    of word-like tokens read. `illegible` when there was enough text to judge and too little of it was read."""

    expected: float
    legible: int

    @property
    def share(self) -> float:
        return min(self.legible / self.expected, 1.0) if self.expected else 1.0

    @property
    def illegible(self) -> bool:
        return self.expected >= MIN_EXPECTED_CHARS and self.share < LEGIBLE_SHARE


def legibility(lines: list[OcrLine]) -> Legibility:
    """The legibility of OCR's `lines` (read with ``keep_empty=True``, so lines read as nothing count too)."""
    expected = sum((b[2] - b[0]) / (0.5 * (b[3] - b[1])) for b in (line.bbox for line in lines) if b[3] > b[1])
    legible = sum(_legible_chars(token) for line in lines for token in line.text.split())
    return Legibility(expected=round(expected, 1), legible=legible)


# -- the fallback engine: Tesseract with Debian's language packs, for scripts PP-OCR cannot read


def check_fallback(languages: str) -> None:
    """Raise, naming the fix, unless Tesseract and every language of `languages` ("rus+ell") are installed."""
    if not languages:
        return
    import pytesseract

    try:
        installed = set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, OSError) as err:
        raise RuntimeError(f"OCR fallback languages {languages!r} need Tesseract: run `make ocr-languages` "
                           f"(apt-get install tesseract-ocr tesseract-ocr-<lang>), or unset them ({err})") from err  # fmt: skip
    missing = [lang for lang in languages.split("+") if lang not in installed]
    if missing:
        raise RuntimeError(f"Tesseract has no language data for {', '.join(missing)}: apt-get install "
                           + " ".join(f"tesseract-ocr-{m.replace('_', '-').lower()}" for m in missing)
                           + f" (installed: {', '.join(sorted(installed))})")  # fmt: skip


def tesseract_pixels(img: Image.Image, languages: str, *, scale: float = 1.0,
                     offset: tuple[float, float] = (0.0, 0.0)) -> list[OcrLine]:  # fmt: skip
    """Lines Tesseract reads in `img` with `languages`, mapped like `ocr_pixels` (one thread: the work pool runs
    one process per core)."""
    import os

    import pytesseract

    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    data = pytesseract.image_to_data(img.convert("L"), lang=languages, output_type=pytesseract.Output.DICT)
    groups: dict[tuple[int, int, int], list[int]] = {}
    for i, word in enumerate(data["text"]):
        if str(word).strip():
            groups.setdefault((data["block_num"][i], data["par_num"][i], data["line_num"][i]), []).append(i)
    ox, oy = offset
    lines = []
    for idx in groups.values():
        x0 = min(data["left"][i] for i in idx)
        y0 = min(data["top"][i] for i in idx)
        x1 = max(data["left"][i] + data["width"][i] for i in idx)
        y1 = max(data["top"][i] + data["height"][i] for i in idx)
        confidence = sum(max(float(data["conf"][i]), 0.0) for i in idx) / len(idx) / 100
        lines.append(OcrLine(text=" ".join(str(data["text"][i]).strip() for i in idx),
                             bbox=(ox + x0 * scale, oy + y0 * scale, ox + x1 * scale, oy + y1 * scale),
                             confidence=round(confidence, 4)))  # fmt: skip
    return lines
