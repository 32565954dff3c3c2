"""Image vectors: the CLIP encoder on a tiny random checkpoint made here (no package ships CLIP weights: these
tests prove loading, preprocessing, shapes and batching, not relevance), and the perceptual-hash encoder."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pymupdf
import pytest
from PIL import Image, ImageDraw

from models import perceptual
from models.clip import ClipEncoder, ClipPreprocess, clip_dim
from models.image_vectors import PerceptualHashEncoder, decode, image_vector_dim, load_image_encoder
from documents.images import ImageRejected
from tests.factories import make_figures_pdf
from tests.tiny_clip import IMAGE_SIZE, PROJECTION_DIM, TEXT_TOKENS, make_tiny_clip


def picture(seed: int, size: tuple[int, int] = (400, 300)) -> Image.Image:
    """A distinct synthetic picture: coloured ellipses on a grey ground, all placed by `seed`."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, (rng.randrange(256),) * 3)
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.ellipse([x, y, x + rng.randrange(20, 150), y + rng.randrange(20, 150)],
                     fill=tuple(rng.randrange(256) for _ in range(3)))  # fmt: skip
    return img


def jpeg(img: Image.Image, quality: int = 60) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def clip(clip_dir: Path) -> ClipEncoder:
    return ClipEncoder(clip_dir, batch_size=2)


def test_the_dimension_comes_from_the_checkpoint_without_loading_it(clip_dir: Path, tmp_path: Path) -> None:
    assert clip_dim(clip_dir) == PROJECTION_DIM == image_vector_dim(clip_dir)
    assert image_vector_dim(None) == PerceptualHashEncoder.dim == 64
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="not 'clip'"):
        clip_dim(tmp_path)
    with pytest.raises(ValueError, match="no readable config.json"):
        clip_dim(tmp_path / "missing")


def test_preprocessing_matches_transformers_clip_image_processor(clip_dir: Path, clip: ClipEncoder) -> None:
    from transformers import CLIPImageProcessorPil

    reference = CLIPImageProcessorPil.from_pretrained(clip_dir)
    for size in [(400, 300), (300, 400), (97, 61), (64, 64)]:
        img = picture(1, size)
        ours = clip.preprocess(img)
        theirs = np.asarray(reference(images=img, return_tensors="np")["pixel_values"][0])
        assert ours.shape == theirs.shape == (3, IMAGE_SIZE, IMAGE_SIZE)
        assert np.abs(ours - theirs).max() < 1e-5, size


def test_without_a_preprocessor_config_the_model_size_and_openai_constants_apply(tmp_path: Path) -> None:
    prep = ClipPreprocess.from_folder(make_tiny_clip(tmp_path / "c", preprocessor=False), 48)
    assert (prep.size, prep.crop) == (48, 48)
    assert prep.mean.ravel()[0] == pytest.approx(0.48145466)
    assert prep(picture(2)).shape == (3, 48, 48)


def test_image_vectors_are_unit_length_batched_and_match_the_model(clip: ClipEncoder) -> None:
    import torch

    images = [picture(i) for i in range(5)]
    vectors = np.array(clip.embed_images(images))  # batch_size 2: batches of 2, 2, 1
    assert vectors.shape == (5, PROJECTION_DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.array([clip.embed_images([img])[0] for img in images])
    assert np.allclose(vectors, one_by_one, atol=1e-5)  # batching changes nothing, order kept
    with torch.inference_mode():  # the model's own forward pass gives the same embeddings
        pixels = torch.from_numpy(np.stack([clip.preprocess(img) for img in images]))
        ids = torch.tensor([[0, 1]])
        reference = clip._model(input_ids=ids, pixel_values=pixels).image_embeds.numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.allclose(vectors, reference, atol=1e-5)


def test_text_vectors_share_the_space_and_long_text_is_cut(clip: ClipEncoder) -> None:
    texts = ["a red gauge", "wiring diagram of the pump", "x " * 200]
    vectors = np.array(clip.embed_texts(texts))
    assert vectors.shape == (3, PROJECTION_DIM) and clip.max_tokens == TEXT_TOKENS
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], clip.embed_texts(["a red gauge"])[0], atol=1e-5)
    assert clip.text_space and clip.min_score is None


def test_load_image_encoder_follows_the_setting(clip_dir: Path) -> None:
    assert isinstance(load_image_encoder(None), PerceptualHashEncoder)
    encoder = load_image_encoder(clip_dir, batch_size=4)
    assert isinstance(encoder, ClipEncoder) and encoder.dim == PROJECTION_DIM and encoder.batch_size == 4


def test_perceptual_hash_finds_copies_and_tells_pictures_apart() -> None:
    original = picture(0)
    bits = perceptual.phash_bits(original)
    copies = [original.resize((150, 112)), decode(jpeg(original, 40)), original.convert("L"),
              original.resize((1200, 900))]  # fmt: skip
    for copy in copies:
        assert perceptual.hamming(bits, perceptual.phash_bits(copy)) <= perceptual.MAX_HAMMING // 2
    others = [perceptual.hamming(bits, perceptual.phash_bits(picture(seed))) for seed in range(1, 21)]
    assert min(others) > perceptual.MAX_HAMMING, others
    assert len(perceptual.phash_hex(original)) == 16


def test_flat_drawings_match_only_their_own_pixels_never_each_other() -> None:
    """Two different flat figures (a few lines on one colour) have near-empty, equal pHashes; searched by those,
    each would find the other. They are searched by their exact content instead."""
    pdf, _ = make_figures_pdf()
    doc = pymupdf.open(stream=pdf, filetype="pdf")
    figures = [decode(doc.extract_image(xref)["image"]) for xref, *_ in doc[0].get_images()]
    doc.close()
    first, second, blank = figures  # two 400 x 300 drawings and an 8 x 8 decoration
    assert perceptual.hamming(perceptual.phash_bits(first), perceptual.phash_bits(second)) <= perceptual.MAX_HAMMING
    encoder = PerceptualHashEncoder()
    v1, v2, v3, again = (np.array(v) for v in encoder.embed_images([first, second, blank, first.copy()]))
    assert float(v1 @ again) == pytest.approx(1.0)  # the same pixels: the same picture
    for a, b in ((v1, v2), (v1, v3), (v2, v3)):
        assert float(a @ b) < perceptual.MIN_COSINE  # different drawings: no match
    # A picture with texture keeps its perceptual hash, so its rescaled copies still match.
    assert np.array_equal(perceptual.image_bits(picture(5)), perceptual.phash_bits(picture(5)))


def test_hash_vectors_turn_hamming_distance_into_cosine() -> None:
    encoder = PerceptualHashEncoder()
    a, b = picture(3), picture(4)
    va, vb = (np.array(v) for v in encoder.embed_images([a, b]))
    distance = perceptual.hamming(perceptual.phash_bits(a), perceptual.phash_bits(b))
    assert np.linalg.norm(va) == pytest.approx(1.0)
    assert float(va @ vb) == pytest.approx(1 - 2 * distance / 64)
    assert perceptual.hamming_of_cosine(float(va @ vb)) == distance
    assert perceptual.hamming_of_cosine(perceptual.MIN_COSINE) == perceptual.MAX_HAMMING
    with pytest.raises(TypeError, match="no text side"):
        encoder.embed_texts(["a red gauge"])


def test_decoding_for_the_encoders_keeps_the_parser_guards() -> None:
    big = picture(5, (2400, 1800))
    out = io.BytesIO()
    big.save(out, format="PNG")
    img = decode(out.getvalue())
    assert img.width * img.height <= 1_050_000  # decoded at a reduced size, like every image the encoders see
    with pytest.raises(ImageRejected):
        decode(b"not an image at all")
