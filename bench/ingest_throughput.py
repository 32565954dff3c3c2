"""Ingest throughput by document type: the running engine (HTTP -> JetStream -> agents) vs the same work in-process.

    make bench                                            # default sizes, a few minutes on 2 cores
    HF_HUB_OFFLINE=1 .venv/bin/python bench/ingest_throughput.py --text-docs 50 --text-pages 10
    HF_HUB_OFFLINE=1 .venv/bin/python bench/ingest_throughput.py --types text --big-pages 0
    HF_HUB_OFFLINE=1 .venv/bin/python bench/ingest_throughput.py --types scanned --dense-scans   # ~3,000 chars/page

One run prints, for each document type (text PDFs, image-heavy PDFs: one photo a page, scanned PDFs: OCR):
- engine: pages/s from the first upload to the last `docs.indexed` through a real `mmrag up` (uploads over
  HTTP, `indexed` events read from NATS, a slow HTTP poll only to catch `failed`), and upload-to-indexed p50/p95;
- in-process: the same documents through the agents' own functions (iter_pages + chunking, OCR, embed, BM25,
  upsert into an embedded Qdrant shard), no NATS, no HTTP; and the ratio engine / in-process;
- per stage (from the in-process run, each stage's own clock): parse pages/s (page renders for OCR included),
  OCR pages-or-images/s, embedding chunks/s (plus `TextEmbedder.embed` alone over the run's chunks, 32 a call
  as the embedder agent calls it), BM25 and upsert chunks/s; the largest stage is named the limit (in the
  engine the stages overlap but share the cores: the embedder's and OCR's ONNX sessions already use all of
  them, so the other stages' CPU comes out of the limiting stage's time);
- peak RSS of each process of `mmrag up` (all agents run in its one process; nats-server and the edge API are
  its children): sampled every 0.1 s per phase, plus the kernel's high-water mark (VmHWM); and the tree's CPU
  seconds per phase, so CPU ms/page engine vs in-process compares cost with less noise from other users than
  wall time does (and shows what the idle engine burns while the in-process run of a type runs);
- peak RSS of a parser-only child over a 1,000-page text PDF (`--big-pages`).

The engine stays up (idle) while the in-process run of a type runs, and types alternate engine / in-process,
so a ratio is taken under the same load. Figures, not a pass/fail test: the machine is shared, compare ratios
from one run, and see the load averages printed at the start and the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingest_common import (  # noqa: E402
    DOC_TYPES,
    Corpus,
    InProcess,
    RssSampler,
    StageClock,
    image_corpus,
    parser_only,
    print_table,
    run_parser_child,
    scanned_corpus,
    text_corpus,
)

from contracts.topology import Subjects  # noqa: E402
from tests.engine import Engine, upload_bytes  # noqa: E402
from tests.factories import synthetic_pdf  # noqa: E402


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


async def through_engine(engine: Engine, corpus: Corpus, *, timeout_s: float = 1800) -> dict:
    """Upload every document, wait for every `indexed`; wall seconds, per-document latencies, chunks indexed."""
    import nats

    indexed: dict[str, tuple[float, int]] = {}

    async def on_indexed(msg) -> None:  # noqa: ANN001
        state = json.loads(msg.data)
        indexed.setdefault(state["doc_id"], (time.perf_counter(), state.get("chunks_total") or 0))

    nc = await nats.connect(engine.nats_url)
    await nc.subscribe(f"{Subjects.DOCS_INDEXED}.>", cb=on_indexed)
    await nc.flush()
    try:
        async with aiohttp.ClientSession() as http:
            start = time.perf_counter()
            uploaded: dict[str, float] = {}
            for n, pdf in enumerate(corpus.pdfs):
                t0 = time.perf_counter()
                resp = await upload_bytes(http, engine.url, pdf, f"{corpus.kind}{n}.pdf")
                if resp.status != 202 and resp.status != 200:
                    raise RuntimeError(f"upload {n} of {corpus.kind}: HTTP {resp.status}")
                uploaded[(await resp.json())["doc_id"]] = t0
            last_poll = time.perf_counter()
            while not all(d in indexed for d in uploaded):
                await asyncio.sleep(0.05)
                now = time.perf_counter()
                if now - start > timeout_s:
                    raise TimeoutError(f"{corpus.kind}: {sum(d in indexed for d in uploaded)}/{len(uploaded)} indexed")
                if now - last_poll > 2.0:  # catch failures without loading the edge with polls
                    last_poll = now
                    for doc_id in [d for d in uploaded if d not in indexed]:
                        async with http.get(f"{engine.url}/v1/documents/{doc_id}") as resp:
                            body = await resp.json()
                        if body.get("status") == "failed":
                            raise RuntimeError(f"{corpus.kind} {doc_id} failed: {body.get('error')}")
            end = max(indexed[d][0] for d in uploaded)
    finally:
        await nc.close()
    return {
        "wall": end - start,
        "latencies": [indexed[d][0] - t0 for d, t0 in uploaded.items()],
        "chunks": sum(indexed[d][1] for d in uploaded),
    }


def in_process(pipeline: InProcess, corpus: Corpus) -> dict:
    clock = StageClock()
    first_text = len(pipeline.texts)
    start, cpu = time.perf_counter(), time.process_time()
    chunks = sum(pipeline.ingest(pdf, f"{corpus.kind}{n}", clock) for n, pdf in enumerate(corpus.pdfs))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, "clock": clock, "chunks": chunks, "texts": pipeline.texts[first_text:]}


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(DOC_TYPES), help="comma-separated subset of: text,image,scanned")
    ap.add_argument("--text-docs", type=int, default=20)
    ap.add_argument("--text-pages", type=int, default=10)
    ap.add_argument("--image-docs", type=int, default=5)
    ap.add_argument("--image-pages", type=int, default=4)
    ap.add_argument("--image-side", type=int, default=400, help="pixels on a side of each page's photo")
    ap.add_argument("--scan-docs", type=int, default=2)
    ap.add_argument("--scan-pages", type=int, default=5)
    ap.add_argument("--dense-scans", action="store_true", help="~3,000 characters a scanned page instead of 5 lines")
    ap.add_argument("--embed-rounds", type=int, default=3, help="passes of the embedding-alone run (median)")
    ap.add_argument(
        "--before",
        type=float,
        default=9.2,
        help="text pages/s of the previous engine on the same documents (50 x 10 pages: 9.2)",
    )
    ap.add_argument("--engine-log", type=Path, help="copy the engine's log here (its per-agent timings)")
    ap.add_argument("--big-pages", type=int, default=1000, help="pages of the parser-only memory run (0 = skip)")
    ap.add_argument("--parser-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.parser_child:
        print(json.dumps(parser_only(args.parser_child)))
        return

    types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = set(types) - set(DOC_TYPES)
    if unknown:
        ap.error(f"unknown type(s) {', '.join(sorted(unknown))}")
    load_start = load()
    print(f"load average at start (1/5/15 min): {load_start}  cores: {len(os.sched_getaffinity(0))}", flush=True)
    builders = {
        "text": lambda: text_corpus(args.text_docs, args.text_pages),
        "image": lambda: image_corpus(args.image_docs, args.image_pages, args.image_side),
        "scanned": lambda: scanned_corpus(args.scan_docs, args.scan_pages, dense=args.dense_scans),
    }
    corpora = {t: builders[t]() for t in types}
    warmup = [text_corpus(1, 2, first=999), image_corpus(1, 1, args.image_side), scanned_corpus(1, 1)]

    engine_results: dict[str, dict] = {}
    inproc_results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("starting mmrag up ...", flush=True)
        engine = Engine(work / "data", work / "engine.log").start()
        assert engine.proc is not None
        sampler = RssSampler(engine.proc.pid).start()
        pipeline: InProcess | None = None
        try:
            sampler.phase = "warm-up"
            for corpus in warmup:  # first calls of ONNX sessions, consumers created, collection opened
                asyncio.run(through_engine(engine, corpus))
            pipeline = InProcess(work)
            for corpus in warmup:
                in_process(pipeline, corpus)
            for kind in types:
                corpus = corpora[kind]
                sampler.phase = kind
                print(f"{kind}: engine ({len(corpus.pdfs)} x {corpus.pages_per_doc} pages) ...", flush=True)
                engine_results[kind] = asyncio.run(through_engine(engine, corpus))
                sampler.phase = f"{kind} (engine idle)"
                print(f"{kind}: in-process ...", flush=True)
                inproc_results[kind] = in_process(pipeline, corpus)
                inproc_results[kind]["embed_alone"] = pipeline.embed_alone(
                    inproc_results[kind]["texts"], args.embed_rounds
                )
        except BaseException:
            print(engine.log_tail(), file=sys.stderr)
            raise
        finally:
            sampler.stop()
            engine.stop()
            if args.engine_log:
                args.engine_log.write_bytes((work / "engine.log").read_bytes())
            if pipeline is not None:
                pipeline.close()
        big = None
        if args.big_pages > 0:
            print(f"parser-only child over a {args.big_pages}-page text PDF ...", flush=True)
            big = run_parser_child(synthetic_pdf(0, pages=args.big_pages), work)
    load_end = load()

    # ------------------------------------------------------------------ report
    ends = []
    for kind in types:
        e, i, corpus = engine_results[kind], inproc_results[kind], corpora[kind]
        ends.append({
            "type": kind, "docs x pages": f"{len(corpus.pdfs)} x {corpus.pages_per_doc}",
            "engine pages/s": corpus.pages / e["wall"], "engine s": e["wall"],
            "p50 s": quantile(e["latencies"], 0.5), "p95 s": quantile(e["latencies"], 0.95),
            "in-proc pages/s": corpus.pages / i["wall"], "engine/in-proc": i["wall"] / e["wall"],
            "engine/embed-alone": i["embed_alone"] / e["wall"],
            "CPU ms/page engine": 1000 * sampler.cpu[kind] / corpus.pages,
            "CPU ms/page in-proc": 1000 * i["cpu"] / corpus.pages,
            "chunks engine": e["chunks"], "chunks in-proc": i["chunks"],
        })  # fmt: skip
    print_table("End to end (engine = HTTP upload -> JetStream -> parser/ocr/embedder/indexer -> indexed)", ends)

    stages = []
    for kind in types:
        i, corpus = inproc_results[kind], corpora[kind]
        c: StageClock = i["clock"]
        per_page = {s: c.seconds[s] / corpus.pages for s in ("parse", "ocr", "embed", "sparse", "index")}
        limit = max(per_page, key=per_page.get)
        ocr_units = c.units["ocr"]
        stages.append({
            "type": kind,
            "parse pages/s": corpus.pages / c.seconds["parse"],
            "OCR n": ocr_units,
            "OCR /s": ocr_units / c.seconds["ocr"] if ocr_units else None,
            "embed chunks/s": c.units["embed"] / c.seconds["embed"] if c.units["embed"] else None,
            "embed alone chunks/s": len(i["texts"]) / i["embed_alone"] if i["texts"] else None,
            "embed alone pages/s": corpus.pages / i["embed_alone"] if i["texts"] else None,
            "bm25 chunks/s": c.units["sparse"] / c.seconds["sparse"] if c.units["sparse"] else None,
            "upsert chunks/s": c.units["index"] / c.seconds["index"] if c.units["index"] else None,
            "ms/page parse/ocr/embed/bm25/upsert": "/".join(f"{1000 * per_page[s]:.0f}" for s in per_page),
            "limit": limit,
        })  # fmt: skip
    print_table(
        "Per stage (in-process clocks; OCR n = scanned pages + images read; 'limit' = most time per page)", stages
    )

    mem = []
    for phase, peaks in sampler.peaks.items():
        mem.append(
            {
                "phase": phase,
                **{k: peaks.get(k) for k in ("mmrag up (all agents)", "nats-server", "edge API", "tree (sum)")},
                "tree CPU s": sampler.cpu.get(phase),
            }
        )
    mem.append({"phase": "VmHWM (kernel peak)", **{k: sampler.hwm.get(k) for k in ("mmrag up (all agents)", "nats-server", "edge API")},
                "tree (sum)": None, "tree CPU s": None})  # fmt: skip
    print_table(
        "Peak RSS of the mmrag up process tree, MiB (sampled every 0.1 s per phase; last row: kernel high-water mark);"
        " its CPU seconds per phase ('engine idle': while the in-process run of that type ran)",
        mem,
    )

    if big is not None:
        print_table("Parser only, one text PDF in a child process (as the parser agent: page by page, batches of 32)", [{
            "pages": big["pages"], "PDF MiB": big["pdf_mb"], "chunks": big["chunks"], "s": big["seconds"],
            "pages/s": big["pages"] / big["seconds"], "RSS before parse MiB": big["rss_before_mb"],
            "peak RSS MiB": big["peak_rss_mb"], "under 1 GiB": big["peak_rss_mb"] < 1024,
        }])  # fmt: skip
    targets = []
    if "text" in types:
        e = next(r for r in ends if r["type"] == "text")
        targets += [
            ("text: engine >= 3x before", f"{e['engine pages/s']:.1f} pages/s = {e['engine pages/s'] / args.before:.2f}x "
             f"{args.before} (before: 50 x 10 pages)", e["engine pages/s"] >= 3 * args.before),
            ("text: engine / in-process >= 0.9", f"{e['engine/in-proc']:.2f}", e["engine/in-proc"] >= 0.9),
            ("text: engine / embedding alone >= 0.9", f"{e['engine/embed-alone']:.2f}", e["engine/embed-alone"] >= 0.9),
        ]  # fmt: skip
    if "scanned" in types:
        e = next(r for r in ends if r["type"] == "scanned")
        kind = "dense" if args.dense_scans else "sparse"
        targets.append(
            (f"scanned ({kind}): engine >= 1 page/s", f"{e['engine pages/s']:.2f} pages/s", e["engine pages/s"] >= 1)
        )
    if big is not None:
        targets.append((f"parser peak RSS < 1 GiB ({big['pages']} pages)", f"{big['peak_rss_mb']:.0f} MiB",
                        big["peak_rss_mb"] < 1024 and big["pages"] >= 1000))  # fmt: skip
    print_table("Targets", [{"target": t, "reached": v, "met": "yes" if ok else "NO"} for t, v, ok in targets])
    print(f"\nload average (1/5/15 min): start {load_start}, end {load_end}")


if __name__ == "__main__":
    from bench.results import recorded

    if "--parser-child" in sys.argv:  # a child of this bench: its output is the parent's to report
        main()
    else:
        with recorded("ingest_throughput"):
            main()
