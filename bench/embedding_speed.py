"""Text embedding speed per backend on realistic ~1000-character chunks; quality as cosine vs the fp32 baseline.

    HF_HUB_OFFLINE=1 python bench/embedding_speed.py [--chunks 200] [--rounds 3] [--cache-dir DIR]

Chunks come from the text of PDFs that Debian ships (libtasn1's manual, the shared-mime-info spec) when they
are installed, else from generated prose. Every backend embeds the same chunks in batches of 32 sorted by
token length; rounds interleave the backends (the machine is shared, so compare ratios of medians within one
run, not absolute numbers across runs). The baseline is sentence-transformers fp32, the engine's embedder
before the ONNX backend. `onnx-int8, 32/call` calls `embed` with 32 chunks at a time in arrival order, as
`agents.embedder` does today: sorting inside a call of 32 cannot reduce padding.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from models.embedding import TextEmbedder, default_model_path  # noqa: E402

PDFS = ("/usr/share/doc/libtasn1-doc/libtasn1.pdf", "/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
BATCH = 32


def _windows(text: str, size: int, stride: int) -> list[str]:
    """~`size`-character chunks cut at spaces, starting every `stride` characters."""
    text = " ".join(text.split())
    out, start = [], 0
    while start + size // 2 < len(text):
        end = text.rfind(" ", start, start + size)
        end = start + size if end <= start else end
        out.append(text[start:end].strip())
        nxt = text.find(" ", start + stride)
        start = nxt + 1 if nxt > 0 else len(text)
    return out


def _synthetic(n: int) -> list[str]:
    rng = random.Random(7)
    words = ("the device filter pressure valve must be checked before each use and the operator should record "
             "readings in the maintenance log; if the warning light stays on, disconnect power and contact "
             "service. table 3 lists torque values, fuse ratings and clearances for every model in the range").split()  # fmt: skip
    chunks = []
    for _ in range(n):
        sentences, size = [], 0
        while size < 1000:
            s = " ".join(rng.choice(words) for _ in range(rng.randint(8, 24))).capitalize() + "."
            sentences.append(s)
            size += len(s) + 1
        chunks.append(" ".join(sentences)[:1000])
    return chunks


def load_chunks(n: int) -> tuple[list[str], str]:
    texts = []
    for pdf in PDFS:
        if Path(pdf).is_file():
            import pymupdf

            with pymupdf.open(pdf) as doc:
                texts.append("\n".join(page.get_text() for page in doc))
    if not texts:
        return _synthetic(n), "synthetic prose"
    chunks = [c for t in texts for c in _windows(t, 1000, 1000)]
    if len(chunks) < n:  # overlapping windows to reach n
        chunks += [c for t in texts for c in _windows(t[500:], 1000, 1000)]
    rng = random.Random(1)
    rng.shuffle(chunks)
    return chunks[:n], "text of " + ", ".join(Path(p).name for p in PDFS if Path(p).is_file())


class SentenceTransformersBaseline:
    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(default_model_path()), device="cpu")

    def embed_array(self, texts: list[str]) -> np.ndarray:
        return self._model.encode(texts, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache-dir", type=Path, default=None, help="ONNX cache (default ~/.cache/mmrag/onnx)")
    ap.add_argument("--skip", nargs="*", default=[], help="backends to leave out")
    args = ap.parse_args()

    chunks, source = load_chunks(args.chunks)
    started = time.perf_counter()
    int8 = TextEmbedder(backend="onnx", quantize=True, cache_dir=args.cache_dir, batch_size=BATCH)
    print(f"ONNX cache ready in {time.perf_counter() - started:.1f} s: {int8.onnx_files.directory}")
    lengths = int8.token_lengths(chunks)
    print(f"{len(chunks)} chunks from {source}: median {statistics.median(len(c) for c in chunks):.0f} characters, "
          f"median {statistics.median(lengths):.0f} word pieces, {sum(n >= 256 for n in lengths)} cut at 256; "
          f"{os.cpu_count()} cores, {args.rounds} interleaved rounds")  # fmt: skip

    def calls_of_32(embedder: TextEmbedder):  # noqa: ANN202
        return lambda texts: np.concatenate([embedder.embed_array(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)])

    backends: dict[str, object] = {"sentence-transformers fp32": SentenceTransformersBaseline().embed_array}
    backends["torch fp32, token-sorted"] = TextEmbedder(backend="torch", batch_size=BATCH).embed_array
    backends["torch bf16, token-sorted"] = TextEmbedder(backend="torch-bf16", batch_size=BATCH).embed_array
    backends["onnx fp32 (optimized)"] = TextEmbedder(backend="onnx", quantize=False, cache_dir=args.cache_dir,
                                                     batch_size=BATCH).embed_array  # fmt: skip
    backends["onnx int8 per-channel (default)"] = int8.embed_array
    backends["onnx int8, 32/call (engine today)"] = calls_of_32(int8)
    backends = {k: v for k, v in backends.items() if not any(s in k for s in args.skip)}

    for fn in backends.values():  # warm-up: first-call allocations, oneDNN/ORT kernel selection
        fn(chunks[:BATCH])
    times: dict[str, list[float]] = {k: [] for k in backends}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, fn in backends.items():
            t = time.perf_counter()
            vectors[name] = np.asarray(fn(chunks))
            times[name].append(time.perf_counter() - t)

    ref_name = next(iter(backends))
    ref = vectors[ref_name]
    base = len(chunks) / statistics.median(times[ref_name])
    print()
    print("| backend | chunks/s | vs baseline | min cosine | mean cosine |")
    print("|---|---|---|---|---|")
    for name in backends:
        rate = len(chunks) / statistics.median(times[name])
        cos = (vectors[name] * ref).sum(1)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f} | {cos.min():.4f} | {cos.mean():.4f} |")


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("embedding_speed"):
        main()
