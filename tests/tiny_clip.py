"""A tiny random CLIP checkpoint written the way a real one is (`save_pretrained`), for tests.

No package here ships CLIP weights, so tests make one: random weights prove the loading path, shapes, batching,
preprocessing and wiring, never relevance. The tokenizer is a real CLIP (byte-level BPE) tokenizer over a tiny
vocabulary written here: lower-case letters, digits and punctuation, each alone and as a word end (``</w>``).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

PROJECTION_DIM = 24
IMAGE_SIZE = 64
TEXT_TOKENS = 32
MEAN = (0.5, 0.4, 0.3)
STD = (0.25, 0.2, 0.3)


def make_tiny_clip(path: Path, *, seed: int = 0, preprocessor: bool = True) -> Path:
    """Write a random CLIP (vision 64 px / 16 px patches, text 32 tokens, 24-d projection) into ``path``."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    path.mkdir(parents=True, exist_ok=True)
    specials = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for char in string.ascii_lowercase + string.digits + string.punctuation:
        for token in (char, char + "</w>"):
            vocab[token] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=TEXT_TOKENS).save_pretrained(path)
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(**tower, vocab_size=len(vocab), max_position_embeddings=TEXT_TOKENS, bos_token_id=0,
                         eos_token_id=1, pad_token_id=1),
        vision_config=dict(**tower, image_size=IMAGE_SIZE, patch_size=16),
        projection_dim=PROJECTION_DIM,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(path)
    if preprocessor:
        (path / "preprocessor_config.json").write_text(json.dumps({
            "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": IMAGE_SIZE},
            "do_center_crop": True, "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(MEAN), "image_std": list(STD),
            "resample": 3, "do_convert_rgb": True,
        }))  # fmt: skip
    return path
