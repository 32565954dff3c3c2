"""What fills the ``image`` named vector of image chunks, and what a query image is compared with.

One encoder per index generation (its vectors' size is the collection's ``image_dim``):

- **CLIP** when ``MMRAG_CLIP_MODEL`` names a local checkpoint folder (`models.clip`): image tower for images,
  text tower for questions, one space, so text -> image and image -> image search both work.
- **Perceptual hash** otherwise (`models.perceptual`): a 64-d ±1/8 vector of the image's pHash. It finds the
  same picture again (rescaled, re-encoded) by Hamming distance and nothing else: it has no text side, and a
  hit farther than ``MAX_HAMMING`` bits is no match (`min_score`).

Images are decoded with the parser's guards (`documents.images.decode_image`: sniffed type, header-checked
size, bomb refusal) and at most ``DECODE_PIXELS`` pixels, for the stored images and query images alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image

from documents.images import decode_image
from models import perceptual

# Both encoders look at far fewer pixels (CLIP 224 x 224, pHash 32 x 32): decode big images at a reduced size.
DECODE_PIXELS = 1_000_000


class ImageEncoder(Protocol):
    name: str
    dim: int
    text_space: bool
    """Whether `embed_texts` exists: questions can be compared with images (text -> image search)."""
    min_score: float | None
    """Cosine under which an image -> image hit is no match; None = ranked, never cut."""

    def embed_images(self, images: Sequence[Image.Image]) -> list[list[float]]: ...

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]: ...


class PerceptualHashEncoder:
    """Image vectors from the 64-bit pHash; no text side."""

    name = "phash-64"
    dim = perceptual.BITS
    text_space = False
    min_score = perceptual.MIN_COSINE

    def embed_images(self, images: Sequence[Image.Image]) -> list[list[float]]:
        return [perceptual.bits_vector(perceptual.image_bits(img)) for img in images]

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        raise TypeError("a perceptual hash has no text side: there is no text -> image search without CLIP")


def image_vector_dim(clip_model: Path | None) -> int:
    """The ``image`` vector size the settings give, without loading a model (the indexer creates collections
    with it before any image arrives)."""
    if clip_model is None:
        return PerceptualHashEncoder.dim
    from models.clip import clip_dim

    return clip_dim(clip_model)


def load_image_encoder(clip_model: Path | None, *, device: str = "cpu", batch_size: int = 32) -> ImageEncoder:
    if clip_model is None:
        return PerceptualHashEncoder()
    from models.clip import ClipEncoder

    return ClipEncoder(clip_model, device=device, batch_size=batch_size)


def decode(data: bytes) -> Image.Image:
    """Decode stored or uploaded image bytes for an encoder; `ImageRejected` if they are not a usable image."""
    return decode_image(data, target_pixels=DECODE_PIXELS)
