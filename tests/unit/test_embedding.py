"""The text embedder's backends: ONNX parity with torch, int8 loss and retrieval, ordering, the export cache.

One export per session (about 45-80 s on 2 shared cores), shared by every test through `onnx_cache`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import embedding_onnx
from models.embedding import TextEmbedder, default_model_path

LONG_EN = (
    "The embedder agent consumes parsed chunks from the bus, embeds them in micro-batches and publishes the "
    "vectors for the indexer; when the interactive lane has work it goes first, so a small document overtakes "
    "a large one at the next model call. Each chunk carries its document id, revision and page anchors. "
) * 6  # well over 256 word pieces: truncated identically by every backend
LONG_DE = (
    "Die Wartungsanleitung beschreibt, wie der Filter alle sechs Monate gewechselt wird, welche Dichtungen "
    "zu prüfen sind und warum das Gerät vor dem Öffnen vom Netz getrennt werden muss. "
) * 5

TEXTS = [
    "hello",
    "",
    "What is the warranty period?",
    "Reset the router by holding the button for ten seconds.",
    "1.2 Installation .......................................................... 14",
    "Chapter 3: Safety instructions ............................................ 27",
    "Table 4-2  Torque values (Nm)   M6 10   M8 25   M10 49   M12 85",
    "def embed(texts: list[str]) -> list[list[float]]: return model.encode(texts)",
    "ERROR 0x80070005: access denied while writing C:\\ProgramData\\vendor\\config.xml",
    "Die Garantie beträgt zwei Jahre ab Kaufdatum.",
    "La batterie doit être rechargée avant la première utilisation.",
    "El dispositivo no debe exponerse a la lluvia ni a la humedad.",
    "Перед чисткой отключите устройство от сети.",
    "本製品は屋内専用です。水のかかる場所で使用しないでください。",
    "请在使用前仔细阅读本说明书并妥善保管。",
    "يجب فصل الجهاز عن مصدر الطاقة قبل التنظيف.",
    "Ürünü doğrudan güneş ışığına maruz bırakmayın.",
    "🙂 emoji and symbols ©®™ — “quotes” … ellipsis",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "UPPER CASE TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "The quick brown fox jumps over the lazy dog.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "Interest rates rose by a quarter point after the central bank meeting.",
    "Patients should take the medication twice daily with food.",
    "The contract may be terminated by either party with thirty days' written notice.",
    "Kubernetes schedules pods onto nodes according to resource requests and affinity rules.",
    "She sells sea shells by the sea shore.",
    "Mount Everest is the highest mountain above sea level.",
    LONG_EN,
    LONG_DE,
    "word " * 600,
    ("Contents\n1 Introduction ........ 1\n2 Getting started ........ 3\n3 Configuration ........ 9\n"
     "4 Troubleshooting ........ 21\n5 Specifications ........ 33\n") * 3,
    "Section 7.3.2 — Replacing the fuse (F1, 250 V / 3.15 A, slow-blow).",
    "WARNING: Hot surface. Do not touch.",
    "Press MENU > Settings > Network > Wi-Fi and select your access point.",
    "x",
    "The meeting has been moved to Thursday at 3 pm in room 204.",
    "Recycle the packaging according to local regulations.",
]

# (question, source sentence): the source answers the question; the corpus is all the sources.
QA = [
    ("How long is the warranty?", "The warranty covers manufacturing defects for two years from the date of purchase."),
    ("How do I reset the router?", "To restore factory settings, hold the reset button on the back for ten seconds."),
    ("What voltage does the charger need?", "The charger accepts 100 to 240 volts AC at 50 or 60 hertz."),
    ("Can I use the device outdoors in the rain?", "The unit is not waterproof and must be kept away from rain and moisture."),
    ("How often should the filter be replaced?", "Replace the air filter every six months, or sooner in dusty environments."),
    ("What does the red blinking light mean?", "A blinking red LED indicates that the battery is critically low."),
    ("How do I connect to Wi-Fi?", "Open Settings, choose Network, then select your wireless network and enter the password."),
    ("Which fuse does the amplifier use?", "The amplifier is protected by a 3.15 A slow-blow fuse rated for 250 volts."),
    ("How should the packaging be disposed of?", "Cardboard and plastic packaging should be recycled according to local rules."),
    ("What is the maximum load of the shelf?", "Each shelf can carry up to 25 kilograms when evenly distributed."),
    ("How do I clean the screen?", "Wipe the display gently with a dry microfiber cloth; never spray liquid on it."),
    ("Who do I contact for repairs?", "For service and repairs, contact an authorised dealer or our support hotline."),
    ("How long does a full charge take?", "Charging an empty battery to full takes about three and a half hours."),
    ("What is the operating temperature range?", "Operate the equipment between 5 and 40 degrees Celsius."),
    ("Is the product safe for children?", "Keep small parts out of reach of children under three years old."),
    ("How do I update the firmware?", "Download the latest firmware file and install it from the Maintenance menu."),
    ("What torque should M8 bolts be tightened to?", "Tighten M8 bolts to 25 newton-metres using a calibrated torque wrench."),
    ("Where is the serial number?", "The serial number is printed on a label underneath the base of the unit."),
    ("How do I pair a Bluetooth speaker?", "Put the speaker in pairing mode, then select it in the Bluetooth devices list."),
    ("What causes the error E04?", "Error code E04 appears when the water inlet is blocked or the tap is closed."),
    ("How much does the device weigh?", "The device weighs 1.8 kg without the stand."),
    ("Can I wash the cover in a machine?", "The removable cover is machine washable at 30 degrees on a gentle cycle."),
    ("How do I turn off the alarm?", "Press and hold the snooze button for three seconds to silence the alarm."),
    ("What is included in the box?", "The package contains the main unit, a power cable, a remote control and this manual."),
    ("How do I calibrate the scale?", "Place the 1 kg reference weight on the empty scale and press CAL to calibrate it."),
    ("Why is the printer printing blank pages?", "Blank pages usually mean the ink cartridges are empty or the nozzles are clogged."),
    ("How long can the cheese be stored?", "Once opened, store the cheese in the refrigerator and eat it within five days."),
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("When did the Second World War end?", "The Second World War ended in 1945."),
    ("What is the boiling point of water at sea level?", "At sea level, water boils at 100 degrees Celsius."),
]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Export once for the session; keep a copy of the raw export so the rebuild test skips the slow part."""
    root = tmp_path_factory.mktemp("onnx-cache")
    raw_copy = root.parent / "raw-export.onnx"
    original = embedding_onnx._export

    def export_and_keep(model_path: Path, out: Path) -> None:
        original(model_path, out)
        shutil.copyfile(out, raw_copy)

    embedding_onnx._export = export_and_keep
    try:
        int8 = TextEmbedder(backend="onnx", quantize=True, cache_dir=root)
    finally:
        embedding_onnx._export = original
    return {"root": root, "raw": raw_copy, "int8": int8, "exports": embedding_onnx.export_count}


@pytest.fixture(scope="session")
def int8(onnx_cache: dict) -> TextEmbedder:
    return onnx_cache["int8"]


@pytest.fixture(scope="session")
def fp32(onnx_cache: dict) -> TextEmbedder:
    return TextEmbedder(backend="onnx", quantize=False, cache_dir=onnx_cache["root"])


@pytest.fixture(scope="session")
def torch_fp32() -> TextEmbedder:
    return TextEmbedder(backend="torch")


@pytest.fixture(scope="session")
def st_vectors() -> np.ndarray:
    """The reference: sentence-transformers, the engine's embedder before this change."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(default_model_path()), device="cpu")
    return model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_texts_cover_long_inputs(torch_fp32: TextEmbedder) -> None:
    lengths = torch_fp32.token_lengths(TEXTS)
    assert max(lengths) == torch_fp32.max_seq_length == 256  # some are truncated
    assert sum(n == 256 for n in lengths) >= 3


def test_torch_backend_matches_sentence_transformers(torch_fp32: TextEmbedder, st_vectors: np.ndarray) -> None:
    cos = _cosines(np.array(torch_fp32.embed(TEXTS)), st_vectors)
    assert cos.min() >= 0.9999, list(zip(cos.round(6), TEXTS, strict=True))


def test_onnx_fp32_matches_torch_for_every_text(fp32: TextEmbedder, st_vectors: np.ndarray) -> None:
    vectors = np.array(fp32.embed(TEXTS))
    assert vectors.shape == (len(TEXTS), 384) and fp32.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = _cosines(vectors, st_vectors)
    assert cos.min() >= 0.9999, list(zip(cos.round(6), TEXTS, strict=True))


def test_onnx_int8_stays_close_to_torch(int8: TextEmbedder, st_vectors: np.ndarray) -> None:
    vectors = np.array(int8.embed(TEXTS))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cos = _cosines(vectors, st_vectors)
    print(f"\nint8 vs torch fp32 on {len(TEXTS)} texts: min cosine {cos.min():.4f}, mean {cos.mean():.4f}")
    # Measured here: min ~0.96 (a one-word text), mean ~0.99. Neighbours of a query sit 0.1-0.3 apart in
    # cosine, so a mean loss of 0.01 leaves rankings alone (test below); 0.9 catches a broken quantization
    # (per-tensor weights reached 0.67, a wrong mask or fusion much less).
    assert cos.mean() >= 0.98
    assert cos.min() >= 0.90


def test_int8_retrieves_the_same_sources_as_torch(int8: TextEmbedder, torch_fp32: TextEmbedder) -> None:
    questions = [q for q, _ in QA]
    sources = [s for _, s in QA]
    top1 = {}
    for name, model in (("torch", torch_fp32), ("int8", int8)):
        q = np.array(model.embed(questions))
        s = np.array(model.embed(sources))
        top1[name] = (q @ s.T).argmax(1)
    agree = (top1["torch"] == top1["int8"]).mean()
    correct = {name: (t == np.arange(len(QA))).mean() for name, t in top1.items()}
    print(f"\ntop-1 agreement int8 vs torch {agree:.0%}; correct source: torch {correct['torch']:.0%}, int8 {correct['int8']:.0%}")
    assert agree >= 0.95
    assert correct["int8"] >= correct["torch"] - 0.05


def test_results_come_back_in_input_order_despite_length_sorting(fp32: TextEmbedder) -> None:
    # Small batches so that sorting moves texts across batches.
    batched = np.array(fp32.embed(TEXTS, batch_size=4))
    alone = np.array([fp32.embed([t])[0] for t in TEXTS])  # no padding, no sorting
    assert _cosines(batched, alone).min() >= 0.9999
    reversed_ = np.array(fp32.embed(TEXTS[::-1], batch_size=4))[::-1]
    np.testing.assert_allclose(reversed_, batched, atol=1e-5)


def test_empty_input(int8: TextEmbedder, torch_fp32: TextEmbedder) -> None:
    assert int8.embed([]) == []
    assert torch_fp32.embed([]) == []


def test_a_second_start_reuses_the_cache(onnx_cache: dict, int8: TextEmbedder) -> None:
    files = int8.onnx_files
    mtimes = {p: p.stat().st_mtime_ns for p in files.directory.iterdir()}
    again = TextEmbedder(backend="onnx", cache_dir=onnx_cache["root"])
    assert embedding_onnx.export_count == onnx_cache["exports"]  # no new export in this process
    assert again.onnx_files.directory == files.directory
    assert {p: p.stat().st_mtime_ns for p in files.directory.iterdir()} == mtimes
    # Only the finished directory is there: no temporary leftovers.
    assert [p.name for p in onnx_cache["root"].iterdir() if not p.name.endswith(".lock")] == [files.directory.name]


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
def test_a_damaged_cache_is_rebuilt(onnx_cache: dict, int8: TextEmbedder, tmp_path: Path, damage: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    root = tmp_path / "cache"
    shutil.copytree(onnx_cache["root"], root)
    victim = root / int8.onnx_files.directory.name / embedding_onnx.INT8_FILE
    if damage == "corrupt":
        with victim.open("r+b") as f:  # same size, different bytes: a torn write
            f.seek(os.path.getsize(victim) // 2)
            f.write(b"\0" * 4096)
    else:
        victim.unlink()

    exports = []

    def reuse_raw_export(model_path: Path, out: Path) -> None:  # the slow torch export, replayed
        exports.append(model_path)
        shutil.copyfile(onnx_cache["raw"], out)

    monkeypatch.setattr(embedding_onnx, "_export", reuse_raw_export)
    rebuilt = TextEmbedder(backend="onnx", cache_dir=root)
    assert len(exports) == 1  # optimizer, quantizer, checksums and rename all ran for real
    assert embedding_onnx._valid(rebuilt.onnx_files.directory) is not None
    np.testing.assert_allclose(np.array(rebuilt.embed(TEXTS[:8])), np.array(int8.embed(TEXTS[:8])), atol=1e-5)
    TextEmbedder(backend="onnx", cache_dir=root)
    assert len(exports) == 1


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown embedding backend"):
        TextEmbedder(backend="tensorflow")  # type: ignore[arg-type]


def test_an_onnx_cache_that_cannot_be_written_fails_the_start_with_the_fix(tmp_path: Path) -> None:
    """An agent (here `mmrag models`, what BAKE_MODELS=1 runs) that must export the ONNX model into a cache directory
    it cannot write stops at once with one line naming both fixes, no traceback, no export started.

    A read-only root filesystem answers EROFS; a test cannot mount one, and root ignores mode bits, so the cache
    path here is one no user can create (its parent is a file): the same OSError path."""
    blocker = tmp_path / "rootfs"
    blocker.write_bytes(b"not a directory")
    env = os.environ | {"MMRAG_EMBEDDING_BACKEND": "onnx", "MMRAG_EMBEDDING_CACHE_DIR": str(blocker / "onnx")}
    before = embedding_onnx.export_count
    with pytest.raises(embedding_onnx.ModelCacheNotWritable) as refused:
        embedding_onnx.ensure_onnx_model(default_model_path(), "all-MiniLM-L6-v2", blocker / "onnx")
    assert embedding_onnx.export_count == before
    message = str(refused.value)
    assert "BAKE_MODELS=1" in message and "MMRAG_EMBEDDING_CACHE_DIR" in message and str(blocker) in message

    mmrag = Path(sys.executable).parent / "mmrag"  # the console script, as the Dockerfile runs it
    done = subprocess.run([str(mmrag), "models"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    out = " ".join((done.stdout + done.stderr).split())
    assert "mmrag models:" in out and "BAKE_MODELS=1" in out and "MMRAG_EMBEDDING_CACHE_DIR" in out
    assert "Traceback" not in out and not (blocker / "onnx").exists()
