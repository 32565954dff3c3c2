"""CLIP image and text towers from a local Hugging Face checkpoint folder (transformers, torch on CPU or GPU).

The folder is what ``CLIPModel.save_pretrained`` plus a tokenizer's ``save_pretrained`` write (e.g. a copy of
``openai/clip-vit-base-patch32``): ``config.json``, the weights, the tokenizer files and, optionally,
``preprocessor_config.json``. Nothing is ever downloaded (``local_files_only``).

Preprocessing is CLIP's, done here with PIL and numpy (no torchvision): the shortest side resized to
``size`` (bicubic), a centre crop of ``crop_size``, pixels scaled to [0, 1] and normalised with the mean and
std of ``preprocessor_config.json`` (OpenAI's constants when the folder has none). `tests/unit/test_clip.py` checks
it against transformers' own ``CLIPImageProcessorPil``.

Both towers return L2-normalised vectors of ``projection_dim`` values in one space: text -> image search
compares a question's text vector with the images' image vectors.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

# OpenAI CLIP's normalisation, the default of transformers' CLIPImageProcessor.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_dim(path: Path) -> int:
    """The vector size of the checkpoint in ``path`` (``projection_dim`` of its config), without loading it."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"MMRAG_CLIP_MODEL={path}: no readable config.json there ({err})") from None
    if config.get("model_type") != "clip":
        raise ValueError(f"MMRAG_CLIP_MODEL={path}: config.json says model_type {config.get('model_type')!r}, not 'clip'")
    return int(config.get("projection_dim", 512))


class ClipPreprocess:
    """CLIP's image preprocessing: RGB, shortest side to ``size``, centre crop ``crop`` x ``crop``, normalise."""

    def __init__(self, size: int, crop: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size, self.crop = size, crop
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    @classmethod
    def from_folder(cls, path: Path, image_size: int) -> ClipPreprocess:
        """From ``preprocessor_config.json`` when present; else the model's ``image_size`` and OpenAI's constants."""
        try:
            prep = json.loads((path / "preprocessor_config.json").read_text())
        except OSError:
            prep = {}
        size = prep.get("size", image_size)
        size = size.get("shortest_edge", image_size) if isinstance(size, dict) else size
        crop = prep.get("crop_size", image_size)
        crop = crop.get("height", image_size) if isinstance(crop, dict) else crop
        return cls(int(size), int(crop), prep.get("image_mean", OPENAI_MEAN), prep.get("image_std", OPENAI_STD))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """A (3, crop, crop) float32 array."""
        image = image.convert("RGB")
        w, h = image.size
        scale = self.size / min(w, h)
        # Like transformers: the short side exactly `size`, the long side rounded.
        new = (self.size, max(1, int(h * scale))) if w <= h else (max(1, int(w * scale)), self.size)
        image = image.resize(new, Image.Resampling.BICUBIC)
        left = int(round((new[0] - self.crop) / 2.0))
        top = int(round((new[1] - self.crop) / 2.0))
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return (pixels - self.mean) / self.std


class ClipEncoder:
    """The image and text towers of one CLIP checkpoint. Synchronous and compute-bound: run it in a thread."""

    text_space = True  # its image vectors and text vectors are comparable
    min_score = None  # cosines of CLIP are ranked, never cut (their scale depends on the checkpoint)

    def __init__(self, path: Path, *, device: str = "cpu", batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoTokenizer, CLIPModel

        self.path = Path(path)
        self.dim = clip_dim(self.path)
        self.name = f"clip:{self.path.name}"
        self.batch_size = batch_size
        self._torch = torch
        self._device = device
        self._model = CLIPModel.from_pretrained(self.path, local_files_only=True).eval().to(device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        config = self._model.config
        self.max_tokens = int(config.text_config.max_position_embeddings)
        self.preprocess = ClipPreprocess.from_folder(self.path, int(config.vision_config.image_size))
        log.info("CLIP %s loaded: %d-d, %d px crops, %d text tokens", self.name, self.dim, self.preprocess.crop,
                 self.max_tokens)  # fmt: skip

    def _features(self, out: object) -> np.ndarray:
        # transformers 5 returns the model output with the projection in `pooler_output`; 4.x a tensor.
        tensor = out if isinstance(out, self._torch.Tensor) else out.pooler_output  # type: ignore[attr-defined]
        vectors = tensor.float().cpu().numpy()
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def embed_images(self, images: Sequence[Image.Image]) -> list[list[float]]:
        """Unit vectors of ``images``, in order, in batches of ``batch_size``."""
        out: list[list[float]] = []
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self.preprocess(img) for img in images[start : start + self.batch_size]])
            with self._torch.inference_mode():
                pixels = self._torch.from_numpy(batch).to(self._device)
                out += self._features(self._model.get_image_features(pixel_values=pixels)).tolist()
        return out

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit vectors of ``texts`` (cut at the text tower's ``max_tokens``), in order."""
        out: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self._tokenizer(list(texts[start : start + self.batch_size]), padding=True, truncation=True,
                                  max_length=self.max_tokens, return_tensors="pt")  # fmt: skip
            with self._torch.inference_mode():
                enc = {k: v.to(self._device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                out += self._features(self._model.get_text_features(**enc)).tolist()
        return out
