"""Perceptual hashes of images, and the 64-d vectors that make Hamming-distance search a cosine search.

The hash is the DCT perceptual hash (pHash) of the `imagehash` library: 64 bits, each the sign of one of the
8 x 8 lowest DCT frequencies of the 32 x 32 grey image against their median. It survives rescaling, JPEG
re-encoding and small colour changes (a few bits flip), and two unrelated images differ in about 32 bits.

Bit i becomes +1/8 or -1/8 in the vector, so every vector has unit length and
``cosine(u, v) = 1 - 2 * hamming(u, v) / 64``: a vector index ranks by Hamming distance exactly, with no
engine feature of its own. ``MAX_HAMMING`` turns that into the yes/no of "the same picture".
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

BITS = 64
# bench/image_search.py: rescaled or re-encoded copies differ by at most 4 bits, a brighter one by 6, a 3% border
# crop by up to 16; different pictures by 32 at the median and 22 at the 1st percentile (binomial, sd 4): 14 keeps
# copies and leaves other pictures out (the few within 14 were overlapping crops of one photograph).
MAX_HAMMING = 14
MIN_COSINE = 1.0 - 2.0 * MAX_HAMMING / BITS
# pHash sets a bit where a coefficient is above the median of the 64, so a picture with any texture sets exactly
# half of them (32 in all of 300 synthetic pictures and 150 photo crops measured). A flat drawing (a few lines on
# one colour: most coefficients zero, tied at the median) sets a handful, and unrelated drawings then hash alike:
# the two figures of tests/factories.make_figures_pdf are 0 bits apart, a blank 8 x 8 square 5 bits from both.
# Such images get an exact-content hash instead (`image_bits`): only the same pixels match them.
MIN_INFORMATIVE_BITS = 24


def phash_bits(image: Image.Image) -> np.ndarray:
    """The 64 pHash bits of ``image`` (any mode) as a bool array, row-major over the 8 x 8 DCT block."""
    import imagehash  # scipy-backed: imported on first use, not by every process that imports this module

    return np.asarray(imagehash.phash(image, hash_size=8).hash, dtype=bool).reshape(BITS)


def content_bits(image: Image.Image) -> np.ndarray:
    """64 bits of SHA-256 over the grey pixels and size: equal for the same pixels, unrelated (about 32 bits
    apart) otherwise."""
    grey = image.convert("L")
    digest = hashlib.sha256(f"{grey.width}x{grey.height}:".encode() + grey.tobytes()).digest()[: BITS // 8]
    return np.unpackbits(np.frombuffer(digest, dtype=np.uint8)).astype(bool)


def image_bits(image: Image.Image) -> np.ndarray:
    """The bits an image is searched by: its pHash when that is informative (see ``MIN_INFORMATIVE_BITS``), else
    its exact-content hash, so a flat drawing matches its own copies only, never other drawings."""
    bits = phash_bits(image)
    if MIN_INFORMATIVE_BITS <= int(bits.sum()) <= BITS - MIN_INFORMATIVE_BITS:
        return bits
    return content_bits(image)


def phash_hex(image: Image.Image) -> str:
    """The pHash as 16 hex digits (the bits in order, most significant first)."""
    return f"{int(''.join('1' if b else '0' for b in phash_bits(image)), 2):016x}"


def bits_vector(bits: np.ndarray) -> list[float]:
    """±1/8 per bit: a unit vector whose cosine with another such vector is 1 - 2 * hamming / 64."""
    return [0.125 if b else -0.125 for b in bits.tolist()]


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.count_nonzero(a != b))


def hamming_of_cosine(cosine: float) -> int:
    """The Hamming distance two hash vectors with this cosine have (rounded: engines return float32 scores)."""
    return round((1.0 - cosine) * BITS / 2)
