"""OCR models and knobs on dense scanned pages of a real manual: pages/s and word recall side by side.

    .venv/bin/pip install --no-deps rapidocr-onnxruntime==1.4.4 rapidocr-openvino==1.4.4   # the PP-OCRv4 wheels
    .venv/bin/python bench/ocr_models.py                  # 4 pages x every variant: ~35 min at load 13-23 on 2 cores
    .venv/bin/python bench/ocr_models.py --memory-only    # model load time and peak RSS per runtime
    .venv/bin/python bench/ocr_models.py --pages 2 --only "1 thread x 2"   # smoke run

Figures go to bench/results/ocr_models.md (and ocr_models_memory.md) through bench/results.py. A variant whose
package is missing is listed as not installed: rapidocr-openvino 1.4.4 imports `openvino.runtime`, which
openvino 2026 removed (the recorded run used openvino 2025.4.1).

Corpus: bash's own PDF manuals (`bash.pdf`, `bashref.pdf`) from Debian's `bash-doc`, fetched once with
`apt-get download` through `bench.debian` (its cache, or ``--cache``; no root needed). The densest pages (>= 3,000 characters of text layer) are
chosen evenly through each manual and "scanned": rendered to a grey JPEG at ``--scan-dpi`` and put alone on a
PDF page with no text layer, as a scanner makes them. The ground truth is the source page's own text layer.

Each variant reads every page the way the engine does (`documents.ocr.render_page` of the scanned page at the
variant's dpi, then the model); the render is not timed (a few ms), the model call is. Word recall is the share of
the page's words (a multiset; NFKC, punctuation at a word's ends stripped, case kept) that the OCR text holds:
a word OCR splits or merges counts as missed, as it would be for a keyword search.

Columns: wall s/page (what this machine gave, other jobs included; parallel rows: a pair's wall time / 2), CPU
s/page (the process's CPU time for the model call, every thread counted, spinning ones too), 2 / CPU s (the
pages/s two idle cores would give if each read its own page at that cost: an upper bound, comparable across a
loaded run), recognition share (of rapidocr's det + cls + rec time), word recall (mean, and the worst page).

Variants run interleaved page by page (page 1 through every variant, then page 2, ...), after one warm-up page
each, so load from other jobs on this shared machine falls on all of them alike; "2 pages in parallel" runs two
worker processes with one intra-op thread each on a pair of pages and counts the pair's wall time. Figures are
single runs on a shared machine: compare rows of one run, never with another day's.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.metadata
import multiprocessing
import os
import re
import sys
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pymupdf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import debian  # noqa: E402
from documents.ocr import ENGINES, OcrSettings, _engine, render_page  # noqa: E402

PACKAGE = "bash-doc"
MANUALS = ("usr/share/doc/bash/bash.pdf", "usr/share/doc/bash/bashref.pdf")
TODAY = OcrSettings()  # documents/ocr.py's defaults: what the ocr agent runs


# ----------------------------------------------------------------------------------------------- corpus


def fetch_manuals(cache: Path | None) -> list[Path]:
    """The manuals of Debian's bash-doc, downloaded and unpacked once (`bench.debian`, into ``cache`` if given)."""
    return [debian.member(PACKAGE, m, cache) for m in MANUALS]


def words(text: str) -> collections.Counter[str]:
    text = unicodedata.normalize("NFKC", text)
    return collections.Counter(w for w in (t.strip(".,;:!?()[]{}\"'`") for t in text.split()) if w)


@dataclass
class Page:
    name: str
    truth: collections.Counter[str]
    scan: bytes  # a one-page PDF: the page as a grey JPEG, no text layer


def dense_pages(manuals: list[Path], per_manual: int, scan_dpi: int, min_chars: int = 3000) -> list[Page]:
    pages = []
    for path in manuals:
        doc = pymupdf.open(path)
        dense = [p.number for p in doc if len(p.get_text()) >= min_chars]
        step = len(dense) / per_manual
        for i in range(per_manual):
            page = doc[dense[int(i * step + step / 2)]]
            pix = page.get_pixmap(dpi=scan_dpi, colorspace=pymupdf.csGRAY, alpha=False)
            scan = pymupdf.open()
            scan.new_page(width=page.rect.width, height=page.rect.height).insert_image(
                page.rect, stream=pix.tobytes("jpg", jpg_quality=85))
            pages.append(Page(f"{path.stem} p{page.number + 1}", words(page.get_text()), scan.tobytes(deflate=True)))
        doc.close()
    return pages


def pixels(page: Page, dpi: int):
    """The scanned page as the engine renders it (grey PIL image)."""
    doc = pymupdf.open(stream=page.scan, filetype="pdf")
    img, _ = render_page(doc[0], dpi, TODAY.max_pixels)
    doc.close()
    return img


def bgr(img) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])


# ----------------------------------------------------------------------------------------------- variants


def _share(elapse: list) -> float:
    """Recognition's share of the model time of a page, from rapidocr's [det, cls, rec] timings."""
    times = [t or 0.0 for t in elapse]
    return times[-1] / sum(times) if len(times) == 3 and sum(times) > 0 else float("nan")


def _v3_reader(engine) -> Callable:
    def read(img) -> tuple[list[str], float]:
        result = engine(bgr(img))  # what documents.ocr.ocr_pixels does, keeping rapidocr's stage timings
        texts = [] if result.txts is None else [str(t) for t in result.txts]
        return texts, _share(result.elapse_list)

    return read


def rapidocr3(settings: OcrSettings) -> Callable:
    """The engine as documents/ocr.py builds it (its lru-cached `_engine`, the production code path)."""
    return _v3_reader(_engine(settings))


@contextlib.contextmanager
def openvino_f32():
    """OpenVINO's CPU plugin infers in bf16 where the CPU has native bf16 (AMX / AVX512-BF16); this forces f32,
    which is what a CPU without them (AVX2 only) gets."""
    from rapidocr.inference_engine.openvino.device_config import CPUConfig

    original = CPUConfig.get_config
    CPUConfig.get_config = lambda self: original(self) | {"INFERENCE_PRECISION_HINT": "f32"}
    try:
        yield
    finally:
        CPUConfig.get_config = original


def rapidocr3_f32(settings: OcrSettings) -> Callable:
    with openvino_f32():
        engine = _engine.__wrapped__(settings)  # not the cached engine of these settings: a separate f32 one
        engine._load_det_model()  # rapidocr 3 compiles its models at first use: do it while the hint is set
        engine._load_rec_model()
    return _v3_reader(engine)


def rapidocr_v14(package: str, settings: OcrSettings) -> Callable:
    """rapidocr-onnxruntime / rapidocr-openvino 1.4.4: PP-OCRv4 det + rec shipped inside the wheel."""
    module = __import__(package)
    kwargs = {"use_cls": settings.use_cls, "max_side_len": 4096, "det_limit_side_len": settings.det_limit_side_len,
              "det_limit_type": settings.det_limit_type, "rec_batch_num": settings.rec_batch_num}  # fmt: skip
    if settings.threads > 0:
        if package == "rapidocr_openvino":
            kwargs["inference_num_threads"] = settings.threads
        else:
            kwargs |= {"intra_op_num_threads": settings.threads, "inter_op_num_threads": 1}
    engine = module.RapidOCR(**kwargs)

    def read(img) -> tuple[list[str], float]:
        result, elapse = engine(bgr(img))
        return [str(r[1]) for r in result or []], _share(elapse if result else [])

    return read


@dataclass
class Variant:
    name: str
    make: Callable[[], Callable]
    dpi: int = TODAY.dpi
    parallel: OcrSettings | None = None  # two worker processes, these settings each
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rec: list[float] = field(default_factory=list)  # recognition's share of each page's model time
    recall: list[float] = field(default_factory=list)
    skipped: str = ""


def variants() -> list[Variant]:
    ort = OcrSettings(engine="onnxruntime")
    ort1 = OcrSettings(engine="onnxruntime", threads=1)
    ov = OcrSettings(engine="openvino")
    ov1 = OcrSettings(engine="openvino", threads=1)
    return [
        Variant("PP-OCRv6 small, ONNX Runtime (rapidocr 3; 150 dpi, det max 960, no cls, batch 6, all threads)",
                lambda: rapidocr3(ort)),
        Variant("  det max 736", lambda: rapidocr3(replace(ort, det_limit_side_len=736))),
        Variant("  render 120 dpi", lambda: rapidocr3(ort), dpi=120),
        Variant("  rec batch 16", lambda: rapidocr3(replace(ort, rec_batch_num=16))),
        Variant("  with the angle classifier", lambda: rapidocr3(replace(ort, use_cls=True))),
        Variant("  1 intra-op thread, 1 page at a time", lambda: rapidocr3(ort1)),
        Variant("  1 intra-op thread x 2 pages in parallel (2 processes)", lambda: rapidocr3(ort1), parallel=ort1),
        Variant("PP-OCRv6 small, OpenVINO (rapidocr 3's engine, same ONNX files; all threads)",
                lambda: rapidocr3(ov)),
        Variant("  f32 inference forced (what an AVX2-only CPU gets)", lambda: rapidocr3_f32(ov)),
        Variant("  1 thread x 2 pages in parallel (2 processes)", lambda: rapidocr3(ov1), parallel=ov1),
        Variant("PP-OCRv4 (rapidocr-onnxruntime 1.4.4 wheel), ONNX Runtime", lambda: rapidocr_v14("rapidocr_onnxruntime", ort)),
        Variant("PP-OCRv4 (rapidocr-openvino 1.4.4 wheel), OpenVINO", lambda: rapidocr_v14("rapidocr_openvino", ort)),
    ]


# ----------------------------------------------------------------------------------------------- workers

_worker_read: Callable | None = None
SPAWN = multiprocessing.get_context("spawn")  # a forked child of a process with ORT/OpenVINO threads can hang


def _worker_init(settings: OcrSettings) -> None:
    global _worker_read
    _worker_read = rapidocr3(settings)


def _worker_read_image(img) -> tuple[list[str], float, float]:
    assert _worker_read is not None
    cpu = time.process_time()
    texts, rec = _worker_read(img)
    return texts, rec, time.process_time() - cpu


def _load_and_peak_rss(settings: OcrSettings, img) -> tuple[float, float]:
    start = time.perf_counter()
    read = rapidocr3(settings)
    load = time.perf_counter() - start
    read(img)
    # VmHWM, not ru_maxrss: the latter keeps the parent's size across the spawn's fork + exec
    status = Path("/proc/self/status").read_text()
    return load, int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def peak_rss(page: Page) -> str:
    """Model load time and max RSS of a fresh process that reads one page, per runtime (the deployment's memory
    limit is per pod)."""
    out = []
    for engine in ENGINES:
        settings = OcrSettings(engine=engine)
        try:
            with ProcessPoolExecutor(1, SPAWN) as pool:
                load, mb = pool.submit(_load_and_peak_rss, settings, pixels(page, settings.dpi)).result()
            out.append(f"{engine} {load:.1f} s, {mb:.0f} MB")
        except ImportError as exc:
            out.append(f"{engine}: not installed ({exc.name})")
    return "Model load (wall) and max RSS of a fresh process that reads one page: " + ", ".join(out) + "."


def recall(truth: collections.Counter[str], texts: list[str]) -> float:
    found = words(" ".join(texts))
    return sum((truth & found).values()) / max(1, sum(truth.values()))


# ----------------------------------------------------------------------------------------------- run


def _warm_up_image(page: Page, dpi: int):
    img = pixels(page, dpi)
    return img.crop((0, 0, img.width, img.height // 4))


def run(pages: list[Page], chosen: list[Variant]) -> None:
    pools: dict[str, ProcessPoolExecutor] = {}
    readers: dict[str, Callable] = {}
    for v in chosen:  # build + warm up on the first page (model load and first-call costs not counted)
        try:
            if v.parallel is not None:
                pool = ProcessPoolExecutor(2, SPAWN, initializer=_worker_init, initargs=(v.parallel,))
                list(pool.map(_worker_read_image, [_warm_up_image(pages[0], v.dpi)] * 2))
                pools[v.name] = pool
            else:
                readers[v.name] = v.make()
                readers[v.name](_warm_up_image(pages[0], v.dpi))
        except ImportError as exc:
            v.skipped = f"not installed ({exc.name or exc}): see the pip line of this file's docstring"
        print(f"ready: {v.name.strip()} {v.skipped}", file=sys.stderr, flush=True)
    live = [v for v in chosen if not v.skipped]
    for i in range(0, len(pages), 2):
        pair = pages[i:i + 2]
        for v in live:
            if v.name in pools:
                imgs = [pixels(page, v.dpi) for page in pair]
                start = time.perf_counter()
                results = list(pools[v.name].map(_worker_read_image, imgs))
                per_page = (time.perf_counter() - start) / len(pair)
                for page, (texts, rec, cpu) in zip(pair, results):
                    v.seconds.append(per_page)
                    v.cpu.append(cpu)
                    v.rec.append(rec)
                    v.recall.append(recall(page.truth, texts))
                continue
            for page in pair:
                img = pixels(page, v.dpi)
                start, cpu = time.perf_counter(), time.process_time()
                texts, rec = readers[v.name](img)
                v.seconds.append(time.perf_counter() - start)
                v.rec.append(rec)
                v.cpu.append(time.process_time() - cpu)
                v.recall.append(recall(page.truth, texts))
        done = min(i + 2, len(pages))
        print(f"pages {done}/{len(pages)}: " + ", ".join(f"{sum(v.seconds) / len(v.seconds):.1f}s"
              for v in live), file=sys.stderr, flush=True)  # fmt: skip
    for pool in pools.values():
        pool.shutdown()


def table(chosen: list[Variant]) -> str:
    rows = ["| variant | dense pages/s (wall) | wall s/page | CPU s/page | 2 / CPU s | recognition share"
            " | word recall | worst page |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for v in chosen:
        if v.skipped:
            rows.append(f"| {v.name.strip()} | {v.skipped} | | | | | | |")
            continue
        wall, cpu = sum(v.seconds) / len(v.seconds), sum(v.cpu) / len(v.cpu)
        rec = sum(v.rec) / len(v.rec)
        name = v.name.replace("  ", "&nbsp;&nbsp;", 1) if v.name.startswith("  ") else v.name
        rows.append(f"| {name} | {1 / wall:.3f} | {wall:.2f} | {cpu:.2f} | {2 / cpu:.2f} | {rec:.0%} |"
                    f" {sum(v.recall) / len(v.recall):.3f} | {min(v.recall):.3f} |")  # fmt: skip
    return "\n".join(rows)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=4, help="dense pages in all, half from each manual (even)")
    ap.add_argument("--scan-dpi", type=int, default=200, help="resolution of the simulated scan")
    ap.add_argument("--only", default="", help="run only variants whose name holds this text (case-insensitive)")
    ap.add_argument("--cache", type=Path, default=None, help="package cache (default: bench.debian's)")
    ap.add_argument("--memory-only", action="store_true",
                    help="only the load time and peak RSS per runtime (bench/results/ocr_models_memory.md)")  # fmt: skip
    args = ap.parse_args()
    pages = dense_pages(fetch_manuals(args.cache), max(1, args.pages // 2), args.scan_dpi)
    if args.memory_only:
        print(peak_rss(pages[0]))
        return
    chosen = [v for v in variants() if args.only.lower() in v.name.lower()]
    load_before = os.getloadavg()[0]
    run(pages, chosen)
    chars = [sum(len(w) for w in p.truth.elements()) for p in pages]
    print("\n".join([
        f"Load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run (a shared machine).",
        "Packages: " + ", ".join(f"{p} {_version(p)}" for p in ("rapidocr", "onnxruntime", "openvino",
                                 "rapidocr-onnxruntime", "rapidocr-openvino")) + f"; documents/ocr.py default: {TODAY}.",
        f"Pages: {len(pages)} dense pages of {PACKAGE}'s manuals ({', '.join(p.name for p in pages)}),"
        f" {min(chars)}-{max(chars)} non-space characters each, scanned at {args.scan_dpi} dpi (grey JPEG);"
        " ground truth = the source page's text layer.",
        "",
        table(chosen),
    ]))  # fmt: skip

if __name__ == "__main__":
    from bench.results import recorded

    with recorded("ocr_models_memory" if "--memory-only" in sys.argv else "ocr_models"):
        main()
