"""ONNX export of the sentence-transformers text model, and its on-disk cache.

One export gives two files in a cache directory keyed by the model's files and the library versions:
`model.fp32.onnx` (after ONNX Runtime's BERT optimizer: fused Attention, SkipLayerNorm, BiasGelu) and
`model.int8.onnx` (that model with dynamic int8 quantization, per-channel QInt8 weights). The graph outputs the
mean-pooled, L2-normalised sentence embedding, so a session run is the whole model.

Export needs `onnx` and `onnxscript` (torch's dynamo exporter); running the cached files needs only
`onnxruntime`. The cache directory appears by an atomic rename of a fully written temporary directory, under a
file lock, so processes starting together never read a half-written model; a cache whose files fail their
checksums is rebuilt.

Export pitfalls handled here (each silently costs speed or correctness):
- the legacy TorchScript exporter bakes the mask in under transformers 5: use `dynamo=True`;
- the extended 4-D mask is built in the wrapper's `forward` and attention is "eager" (the sdpa graph defeats
  ORT's shape inference and attention fusion);
- `token_type_ids = input_ids * 0` and a hand-written L2 norm (zeros_like / F.normalize add Expand nodes);
- the dynamo exporter merges `unsqueeze(1).unsqueeze(2)` into one node and scales QK with a Mul: both stop
  ORT's attention fusion from matching, so `_patch_for_attention_fusion` splits / rewrites them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

# Bump when the export recipe changes: old caches are then left alone and a new one is built.
RECIPE_VERSION = "1"
FP32_FILE = "model.fp32.onnx"
INT8_FILE = "model.int8.onnx"
META_FILE = "meta.json"
OUTPUT_NAME = "sentence_embedding"  # "embedding" collides with a node name the exporter generates
# Files of a sentence-transformers folder that change what the model computes.
_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
)
_VERSIONED = ("torch", "transformers", "onnxruntime")

# Counts exports done by this process (tests check that a warm cache is not re-exported).
export_count = 0


def default_cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mmrag" / "onnx"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(model_path: Path) -> str:
    """Hash of the model's files, the versions of the libraries that shape the export, and the recipe."""
    h = hashlib.sha256(f"recipe={RECIPE_VERSION}\n".encode())
    for rel in _MODEL_FILES:
        f = model_path / rel
        if f.is_file():
            h.update(f"{rel}={_sha256(f)}\n".encode())
    for dist in _VERSIONED:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "-"
        h.update(f"{dist}={version}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class OnnxModelFiles:
    directory: Path
    fp32: Path
    int8: Path
    meta: dict


def _valid(directory: Path) -> dict | None:
    """The cache's metadata when every file is present and matches its checksum, else None."""
    try:
        meta = json.loads((directory / META_FILE).read_text())
        for name, digest in meta["sha256"].items():
            if _sha256(directory / name) != digest:
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextlib.contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class ModelCacheNotWritable(RuntimeError):
    """The ONNX model must be exported but its cache directory cannot be written (a read-only root filesystem
    and an image built without its models); the message names the two fixes."""


def _check_writable(cache_root: Path, directory: Path) -> None:
    """Raise `ModelCacheNotWritable` unless a file can be created in `cache_root` (created if missing)."""
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=cache_root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ModelCacheNotWritable(
            f"the ONNX text embedder is not in its cache ({directory}) and cannot be exported there: "
            f"{cache_root} is not writable ({exc.strerror or exc}). On a read-only root filesystem (the Kubernetes "
            "manifests) run an image built with `--build-arg BAKE_MODELS=1`, which exports it at build time; or "
            "point MMRAG_EMBEDDING_CACHE_DIR at a writable volume (the first start then exports it, 20-40 s)"
        ) from exc


def ensure_onnx_model(model_path: Path, model_name: str, cache_root: Path | None = None) -> OnnxModelFiles:
    """The cached ONNX files of this model, exported (about 20-40 s on 2 cores) when missing or corrupt.

    Raises `ModelCacheNotWritable` (before any export work) when it must export into a directory it cannot write.
    """
    cache_root = Path(cache_root) if cache_root else default_cache_root()
    directory = cache_root / f"{model_name}-{cache_key(model_path)}"
    meta = _valid(directory)  # fast path: no lock once built
    if meta is None:
        _check_writable(cache_root, directory)
        with _locked(cache_root / f".{directory.name}.lock"):
            meta = _valid(directory)  # another process may have built it while we waited
            if meta is None:
                meta = _build(model_path, directory)
    return OnnxModelFiles(directory, directory / FP32_FILE, directory / INT8_FILE, meta)


def invalidate(directory: Path) -> None:
    """Move a bad cache directory aside (atomically) and delete it."""
    if directory.exists():
        trash = directory.with_name(f".trash-{directory.name}-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _build(model_path: Path, directory: Path) -> dict:
    global export_count
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    try:
        started = time.perf_counter()
        raw = tmp / "raw.onnx"
        _export(model_path, raw)
        exported = time.perf_counter()
        _patch_for_attention_fusion(raw)
        fused = _optimize(model_path, raw, tmp / FP32_FILE)
        raw.unlink()
        _quantize(tmp / FP32_FILE, tmp / INT8_FILE)
        meta = {
            "model_path": str(model_path),
            "recipe": RECIPE_VERSION,
            "versions": {d: _version(d) for d in (*_VERSIONED, "onnx", "onnxscript")},
            "fused": fused,
            "export_s": round(exported - started, 1),
            "total_s": round(time.perf_counter() - started, 1),
            "sha256": {name: _sha256(tmp / name) for name in (FP32_FILE, INT8_FILE)},
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        for f in tmp.iterdir():  # data on disk before the rename makes the directory visible
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700: an image built as root must be readable by the service user
        invalidate(directory)  # a corrupt one (we hold the lock)
        os.rename(tmp, directory)
        export_count += 1
        log.info("exported %s to ONNX in %.1f s: %s", model_path.name, meta["total_s"], directory)
        return meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def _export(model_path: Path, out: Path) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "exporting the text model to ONNX needs the `onnx` and `onnxscript` packages "
            "(or a cache built elsewhere, or MMRAG_EMBEDDING_BACKEND=torch)"
        ) from e
    import warnings

    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=input_ids * 0)
            # The classic BERT extended mask, which ORT's attention fusion recognises.
            extended = (1.0 - attention_mask.unsqueeze(1).unsqueeze(2).to(hidden.dtype)) * -10000.0
            hidden = self.bert.encoder(hidden, attention_mask=extended).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return pooled / torch.sqrt((pooled * pooled).sum(-1, keepdim=True)).clamp(min=1e-12)

    wrapper = SentenceEncoder(bert).eval()
    ids = torch.randint(1000, 2000, (2, 16))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    with warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            (),
            kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids)},
            dynamo=True,
            dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            input_names=["input_ids", "attention_mask"],
            output_names=[OUTPUT_NAME],
            optimize=True,
            verbose=False,
        )
    program.save(str(out))


def _patch_for_attention_fusion(path: Path) -> None:
    """Split the merged mask Unsqueeze(axes=[1,2]) and turn the QK `Mul(scale)` into `Div(1/scale)`.

    A workaround for ONNX Runtime's pattern-matching BERT attention fusion, which expects the TorchScript
    exporter's graph: the closest upstream report is microsoft/onnxruntime#19423 (ORT's optimizers miss patterns
    in dynamo-exported graphs); no upstream issue for these two exact patterns was found (searched 2026-12).
    Drop the patch when the optimizer fuses the unpatched export (`meta.json`'s `fused` says whether it did)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def feeds_softmax_add(n) -> bool:  # noqa: ANN001
        return any(
            c.op_type == "Add" and any(cc.op_type == "Softmax" for cc in consumers.get(c.output[0], []))
            for c in consumers.get(n.output[0], [])
        )

    nodes, split, divs = [], 0, 0
    for n in graph.node:
        if n.op_type == "Unsqueeze" and n.input[1] in consts and consts[n.input[1]].tolist() == [1, 2]:
            ax1, ax2, mid = f"{n.name}_axis1", f"{n.name}_axis2", f"{n.output[0]}_unsq1"
            graph.initializer.extend(
                [numpy_helper.from_array(np.array([1], np.int64), ax1), numpy_helper.from_array(np.array([2], np.int64), ax2)]
            )
            nodes.append(helper.make_node("Unsqueeze", [n.input[0], ax1], [mid], name=f"{n.name}_1"))
            nodes.append(helper.make_node("Unsqueeze", [mid, ax2], list(n.output), name=f"{n.name}_2"))
            split += 1
        elif (
            n.op_type == "Mul"
            and n.input[0] in producer
            and producer[n.input[0]].op_type == "MatMul"
            and n.input[1] in consts
            and consts[n.input[1]].size == 1
            and feeds_softmax_add(n)
        ):
            scale = consts[n.input[1]]
            inv = f"{n.name}_inverse_scale"
            graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(scale.dtype), inv))
            nodes.append(helper.make_node("Div", [n.input[0], inv], list(n.output), name=f"{n.name}_div"))
            divs += 1
        else:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save(model, str(path))
    log.debug("attention-fusion patch: %d Unsqueeze split, %d Mul->Div", split, divs)


def _optimize(model_path: Path, raw: Path, out: Path) -> dict:
    from onnxruntime.transformers import optimizer

    config = json.loads((model_path / "config.json").read_text())
    optimized = optimizer.optimize_model(
        str(raw), model_type="bert", num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"],
        opt_level=0,  # graph fusions in Python only; the session applies ORT_ENABLE_ALL at load
    )  # fmt: skip
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if fused.get("Attention", 0) != config["num_hidden_layers"]:
        # Still correct, only slower (about 2x): say so loudly rather than fail the start.
        log.warning("ONNX attention fusion matched %s of %s layers", fused.get("Attention", 0), config["num_hidden_layers"])
    optimized.save_model_to_file(str(out))
    return fused


def _quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel weights: per-tensor loses too much (min cosine ~0.67 on dot-leader lines); QInt8 weights
    # run faster than QUInt8 ones in ORT's kernels.
    quantize_dynamic(str(fp32), str(out), per_channel=True, weight_type=QuantType.QInt8)
