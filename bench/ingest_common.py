"""Helpers of bench/ingest_throughput.py: corpora by document type, the ingest pipeline in-process (the agents'
own functions, no NATS, no HTTP) with a clock per stage, RSS sampling of a process tree, a parser-only child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pymupdf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from contracts.messages import Chunk, EmbeddedChunk, TableData  # noqa: E402
from documents import parse, read_image, read_page  # noqa: E402
from documents.chunks import wordpiece_counter  # noqa: E402
from tests.factories import SCAN_SENTENCES, make_image_pages_pdf, make_scanned_pdf, synthetic_pdf  # noqa: E402

DOC_TYPES = ("text", "image", "scanned")


@dataclass
class Corpus:
    kind: str
    pdfs: list[bytes]
    pages_per_doc: int

    @property
    def pages(self) -> int:
        return len(self.pdfs) * self.pages_per_doc


def _retitled(pdf: bytes, title: str) -> bytes:
    """The same PDF with its own title (so documents of a corpus differ by bytes, as real uploads do)."""
    doc = pymupdf.open(stream=pdf, filetype="pdf")
    try:
        doc.set_metadata({"title": title})
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


def text_corpus(docs: int, pages: int, first: int = 0) -> Corpus:
    return Corpus("text", [synthetic_pdf(first + n, pages=pages) for n in range(docs)], pages)


def image_corpus(docs: int, pages: int, side: int) -> Corpus:
    base = make_image_pages_pdf(pages, side=side)
    return Corpus("image", [_retitled(base, f"image doc {n}") for n in range(docs)], pages)


def scanned_corpus(docs: int, pages: int, *, dense: bool = False) -> Corpus:
    """Sparse: 5 lines a page (a letter); dense: ~3,000 characters a page at 8.5 pt (a manual page)."""
    if dense:
        from parse_speed import dense_scan_lines

        lines = dense_scan_lines()
        pdfs = [make_scanned_pdf([f"Service bulletin number {4000 + n}.", *lines], pages=pages, fontsize=8.5)
                for n in range(docs)]  # fmt: skip
    else:
        pdfs = [make_scanned_pdf([f"Service bulletin number {4000 + n} for the pump station.", *SCAN_SENTENCES],
                                 pages=pages) for n in range(docs)]  # fmt: skip
    return Corpus("scanned", pdfs, pages)


# --------------------------------------------------------------------------- in-process pipeline


@dataclass
class StageClock:
    """Seconds spent in each stage and the units each stage handled, summed over documents."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    units: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, stage: str, seconds: float, units: int) -> None:
        self.seconds[stage] += seconds
        self.units[stage] += units


def _chunk(parsed, index: int, doc_id: str, filename: str, *, source: str = "text", page: int | None = None) -> Chunk:
    """What `_Emitter._chunk` / the OCR agent build (neighbour links omitted: they cost nothing to compute)."""
    table = None
    if parsed.table is not None and parsed.table_id is not None:
        table = TableData(table_id=parsed.table_id, group_id=parsed.table_group_id or parsed.table_id,
                          header=list(parsed.table.header), rows=[list(r) for r in parsed.table.rows])  # fmt: skip
    return Chunk(chunk_id=f"{doc_id}-{index}", index=index, doc_id=doc_id, tenant="default", filename=filename,
                 page=page or parsed.page, bbox=parsed.bbox, modality=parsed.modality, text=parsed.text,
                 headings=list(parsed.headings), table=table, source=source)  # fmt: skip


class InProcess:
    """parse (`documents.parse`: pages, chunking, page renders for OCR) -> OCR (read_page / read_image) -> embed (dense, 32 a
    call as the embedder) -> sparse (BM25) -> upsert (durable), document after document, each stage timed."""

    def __init__(self, workdir: Path, *, batch: int = 32) -> None:
        from agents.indexer import to_point
        from documents.ocr import warm_up
        from agents.runtime.resources import text_embedder
        from agents.settings import AgentSettings
        from models.sparse import SparseEncoder
        from search.vectorstore import CollectionSchema, EdgeShardStore

        self.embedder = text_embedder(AgentSettings())  # as the engine builds it
        self.sparse = SparseEncoder()
        self._to_point = to_point
        warm_up()  # the OCR agent loads its models at start too
        self.store = EdgeShardStore(workdir / "inproc-qdrant")
        self.store.create_collection("bench", CollectionSchema(text_dim=self.embedder.dim))
        self.batch = batch
        self.texts: list[str] = []  # every chunk's embed_text, for the embedding-alone pass

    def close(self) -> None:
        self.store.close()

    def ingest(self, pdf: bytes, doc_id: str, clock: StageClock) -> int:
        """Index one PDF; returns its chunk count."""
        t0 = time.perf_counter()
        chunks: list[Chunk] = []
        ocr_jobs = []
        with parse(pdf, "application/pdf") as parsed_doc:
            pages = parsed_doc.page_count
            for page in parsed_doc:
                chunks += [_chunk(parsed, len(chunks) + k, doc_id, f"{doc_id}.pdf") for k, parsed in enumerate(page.chunks)]
                ocr_jobs += page.ocr
        clock.add("parse", time.perf_counter() - t0, pages)

        t0 = time.perf_counter()
        base = 10_000_000
        for job in ocr_jobs:
            if job.kind == "page":
                parsed_list = read_page(job.raster, job.bbox)
            else:
                parsed_list = read_image(job.raster, job.caption, job.nearby_text, job.bbox)
            for k, parsed in enumerate(parsed_list):
                chunks.append(_chunk(parsed, base + k, doc_id, f"{doc_id}.pdf", source="ocr", page=job.page))
            base += 10_000
        clock.add("ocr", time.perf_counter() - t0, len(ocr_jobs))

        for start in range(0, len(chunks), self.batch):
            part = chunks[start : start + self.batch]
            texts = [c.embed_text for c in part]
            self.texts += texts
            t0 = time.perf_counter()
            vectors = self.embedder.embed(texts)
            t1 = time.perf_counter()
            sparse = self.sparse.encode_documents(texts)
            t2 = time.perf_counter()
            points = [self._to_point("bench", 1, EmbeddedChunk(**c.model_dump(), vector=v, sparse=s))
                      for c, v, s in zip(part, vectors, sparse, strict=True)]  # fmt: skip
            self.store.upsert("bench", points)
            t3 = time.perf_counter()
            clock.add("embed", t1 - t0, len(part))
            clock.add("sparse", t2 - t1, len(part))
            clock.add("index", t3 - t2, len(part))
        return len(chunks)

    def embed_alone(self, texts: list[str], rounds: int = 3) -> float:
        """Seconds for `TextEmbedder.embed` over ``texts`` in calls of 32 in arrival order (as the embedder agent),
        the median of ``rounds`` passes (the machine is shared)."""
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for start in range(0, len(texts), self.batch):
                self.embedder.embed(texts[start : start + self.batch])
            times.append(time.perf_counter() - t0)
        return sorted(times)[len(times) // 2]


# --------------------------------------------------------------------------- memory


def vm_hwm_mb(pid: int) -> float | None:
    """The kernel's peak RSS of a live process (VmHWM), in MiB; None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def label(proc: psutil.Process, root_pid: int) -> str:
    if proc.pid == root_pid:
        return "mmrag up (all agents)"
    try:
        name, cmd = proc.name(), " ".join(proc.cmdline())
    except psutil.Error:
        return "?"
    if "nats-server" in name or "nats-server" in cmd:
        return "nats-server"
    if "edge_api" in cmd:
        return "edge API"
    return name


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` s in a thread; peaks per process label, per phase
    (``phase`` is set by the caller) and of the tree's sum; and the tree's CPU seconds per phase."""

    def __init__(self, root_pid: int, interval: float = 0.1) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))  # phase -> label -> MiB
        self.hwm: dict[str, float] = {}  # label -> VmHWM MiB (kernel peak since start), read at each refresh
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._procs: list[psutil.Process] = []
        self.cpu: dict[str, float] = defaultdict(float)  # phase -> CPU seconds (user + system) of the tree
        self._last_cpu: float | None = None

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._refresh()
        self._stop.set()
        self._thread.join()

    def _refresh(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
            self._procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        for p in self._procs:
            hwm = vm_hwm_mb(p.pid)
            if hwm is not None:
                self.hwm[label(p, self.root_pid)] = hwm

    def _run(self) -> None:
        last_refresh = 0.0
        while not self._stop.is_set():
            if time.monotonic() - last_refresh > 2.0:
                self._refresh()
                last_refresh = time.monotonic()
            total = cpu = 0.0
            phase = self.peaks[self.phase]
            for p in self._procs:
                try:
                    rss = p.memory_info().rss / 2**20
                    times = p.cpu_times()
                except psutil.Error:
                    continue
                total += rss
                cpu += times.user + times.system
                name = label(p, self.root_pid)
                phase[name] = max(phase[name], rss)
            phase["tree (sum)"] = max(phase["tree (sum)"], total)
            if self._last_cpu is not None and cpu >= self._last_cpu:
                self.cpu[self.phase] += cpu - self._last_cpu
            self._last_cpu = cpu
            self._stop.wait(self.interval)


# --------------------------------------------------------------------------- parser-only child (1,000 pages)


def parser_only(path: Path) -> dict:
    """Run in a child: what the parser agent does to one PDF (whole upload in memory, page by page, chunks
    built and dropped in batches of 32, scan pages rendered), reporting its RSS before and its peak."""
    data = path.read_bytes()
    wordpiece_counter()  # load the tokenizer before the baseline
    base = psutil.Process().memory_info().rss / 2**20
    t0 = time.perf_counter()
    pending, chunks, pages = [], 0, 0
    with parse(data, "application/pdf") as parsed_doc:  # scan pages are rendered as they are parsed
        for page in parsed_doc:
            for parsed in page.chunks:
                pending.append(_chunk(parsed, chunks, "d", "d.pdf"))
                chunks += 1
                if len(pending) >= 32:
                    json.dumps([c.model_dump(mode="json") for c in pending])  # what publishing serialises
                    pending = []
            pages += 1
    elapsed = time.perf_counter() - t0
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from this bench (models
    # loaded) would report the parent's size; exec gives the child a new address space and a new VmHWM.
    peak = vm_hwm_mb(os.getpid()) or float("nan")
    return {"pages": pages, "chunks": chunks, "seconds": elapsed, "rss_before_mb": base, "peak_rss_mb": peak,
            "pdf_mb": len(data) / 2**20}  # fmt: skip


def run_parser_child(pdf: bytes, workdir: Path) -> dict:
    path = workdir / "big.pdf"
    path.write_bytes(pdf)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "ingest_throughput.py"), "--parser-child", str(path)],
                         check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- printing


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}" if v < 100 else f"{v:.0f}"
    return str(v)


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(f"\n{title}")
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))
