"""Same-picture search without CLIP: how well the 64-bit perceptual hash tells a copy from another picture, and
what an image search costs through a running engine.

    .venv/bin/python bench/image_search.py              # hash robustness only (seconds)
    .venv/bin/python bench/image_search.py --engine     # and /v1/search latency, image vs text (a minute)
    .venv/bin/python bench/image_search.py --engine --no-ocr   # the same without OCR of the query image
    .venv/bin/python bench/image_search.py --clip-speed # CLIP towers' CPU speed at ViT-B/32 size (random weights)

Pictures: the two photographs scikit-learn ships (china.jpg, flower.jpg), 40 crops of them (different pictures
that share colours and texture: the hard negatives) and 20 generated drawings. Each is transformed the ways an
uploaded copy differs from the embedded original; the Hamming distance to the original is printed per
transform, and the distances between different pictures, with the share on each side of the cut-off
(`models.perceptual.MAX_HAMMING`). Figures, not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import perceptual  # noqa: E402
from models.image_vectors import decode  # noqa: E402
from tests.unit.test_clip import picture  # noqa: E402


def photos() -> list[Image.Image]:
    import sklearn

    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    return [Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]


def corpus(seed: int = 0) -> list[Image.Image]:
    rng = random.Random(seed)
    base = photos()
    crops = []
    for i in range(40):
        img = base[i % 2]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.3, 0.6)), int(h * rng.uniform(0.3, 0.6))
        x, y = rng.randrange(w - cw), rng.randrange(h - ch)
        crops.append(img.crop((x, y, x + cw, y + ch)))
    return base + crops + [picture(100 + i) for i in range(20)]


def _encode(img: Image.Image, fmt: str, **kw: object) -> Image.Image:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return decode(out.getvalue())


TRANSFORMS = {
    "png (lossless)": lambda im: _encode(im, "PNG"),
    "jpeg q30": lambda im: _encode(im, "JPEG", quality=30),
    "webp q50": lambda im: _encode(im, "WEBP", quality=50),
    "half size": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2)), Image.Resampling.LANCZOS),
    "quarter size, jpeg": lambda im: _encode(im.resize((max(1, im.width // 4), max(1, im.height // 4))), "JPEG"),
    "double size": lambda im: im.resize((im.width * 2, im.height * 2)),
    "greyscale": lambda im: im.convert("L"),
    "brightness +20%": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "3% border cropped": lambda im: im.crop((int(im.width * 0.03), int(im.height * 0.03), int(im.width * 0.97),
                                             int(im.height * 0.97))),  # fmt: skip
}


def hash_robustness() -> None:
    pictures = corpus()
    t0 = time.perf_counter()
    bits = [perceptual.phash_bits(p) for p in pictures]
    per_image_ms = (time.perf_counter() - t0) / len(pictures) * 1000
    cut = perceptual.MAX_HAMMING
    print(f"{len(pictures)} pictures; pHash {per_image_ms:.2f} ms an image (decoded, sizes up to 640x427); "
          f"cut-off {cut} of 64 bits")  # fmt: skip
    print(f"{'transform':<22} {'mean':>5} {'max':>4}  within cut-off")
    for name, transform in TRANSFORMS.items():
        distances = [perceptual.hamming(b, perceptual.phash_bits(transform(p))) for p, b in zip(pictures, bits)]
        kept = sum(d <= cut for d in distances) / len(distances)
        print(f"{name:<22} {statistics.mean(distances):>5.1f} {max(distances):>4}  {kept:.1%}")
    pairs = [perceptual.hamming(a, b) for i, a in enumerate(bits) for b in bits[i + 1 :]]
    false = sum(d <= cut for d in pairs)
    q = np.percentile(pairs, [0, 1, 5, 50])
    print(f"different pictures: {len(pairs)} pairs, Hamming min {q[0]:.0f}, p1 {q[1]:.0f}, p5 {q[2]:.0f}, "
          f"median {q[3]:.0f}; within the cut-off (false matches): {false} ({false / len(pairs):.2%})")  # fmt: skip


async def engine_latency(queries: int, ocr: bool) -> None:
    import aiohttp

    from tests.engine import Engine
    from tests.e2e.test_image_search import image_search, ingest_album, jpeg

    root = Path(tempfile.mkdtemp(prefix="mmrag-bench-"))
    engine = Engine(root / "data", root / "engine.log", env={"MMRAG_QUERY_IMAGE_OCR": str(ocr).lower()}).start()
    try:
        async with aiohttp.ClientSession() as http:
            await ingest_album(http, engine)
            image = jpeg(picture(22).resize((300, 225)))
            text = {"query": "overview photo of station 2", "top_k": 10}
            label = "image (hash + OCR)" if ocr else "image (hash only)"
            timings: dict[str, list[float]] = {label: [], "text (JSON)": []}
            for _ in range(queries):  # interleaved, so both see the same machine load
                t0 = time.perf_counter()
                status, _ = await image_search(http, engine.url, image, content_type="image/jpeg")
                timings[label].append(time.perf_counter() - t0)
                assert status == 200
                t0 = time.perf_counter()
                async with http.post(f"{engine.url}/v1/search", json=text) as resp:
                    await resp.read()
                timings["text (JSON)"].append(time.perf_counter() - t0)
        p50 = {k: statistics.median(v) * 1000 for k, v in timings.items()}
        for name, ms in p50.items():
            print(f"/v1/search {name:<20} p50 {ms:7.1f} ms over {queries}")
        print(f"image / text p50 ratio: {p50[label] / p50['text (JSON)']:.1f}")
    finally:
        engine.stop()


def clip_speed(batch: int = 32) -> None:
    """CLIP towers' CPU cost at ViT-B/32 size (transformers' default CLIPConfig, random weights: speed, not quality)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from models.clip import ClipEncoder
    from tests.tiny_clip import make_tiny_clip

    folder = make_tiny_clip(Path(tempfile.mkdtemp(prefix="mmrag-clip-")) / "vit-b-32")  # its tokenizer and files
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"vocab_size": 200, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1})
    CLIPModel(config).save_pretrained(folder)  # ViT-B/32 towers (224 px, 512-d) over the tiny vocabulary
    (folder / "preprocessor_config.json").unlink()
    encoder = ClipEncoder(folder, batch_size=batch)
    images = [picture(i, (640, 480)) for i in range(batch)]
    texts = [f"overview photo of pump station {i} with its pressure gauge" for i in range(batch)]
    encoder.embed_images(images[:2])  # warm-up
    for name, run in (("image tower", lambda: encoder.embed_images(images)), ("text tower", lambda: encoder.embed_texts(texts))):
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            run()
            runs.append(time.perf_counter() - t0)
        print(f"CLIP ViT-B/32 {name}: {batch / statistics.median(runs):6.1f} items/s (batch {batch}, torch "
              f"{torch.__version__}, {torch.get_num_threads()} threads, median of 3)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", action="store_true", help="also time /v1/search through mmrag up")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--no-ocr", action="store_true", help="engine with MMRAG_QUERY_IMAGE_OCR=false")
    parser.add_argument("--clip-speed", action="store_true", help="also time CLIP's towers at ViT-B/32 size")
    args = parser.parse_args()
    hash_robustness()
    if args.clip_speed:
        clip_speed()
    if args.engine:
        asyncio.run(engine_latency(args.queries, ocr=not args.no_ocr))


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("image_search"):
        main()
