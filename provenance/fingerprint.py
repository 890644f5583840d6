"""Perceptual fingerprints: does this manifest belong to these pixels?

A manifest recovered through the watermark (from a store, after the file's C2PA was stripped)
must be checked against the pixels in hand: a watermark copied onto another image, or a store
entry under the wrong id, must not lend its credentials. sdkit records a 64-bit perceptual hash
(DCT hash, ``imagehash.phash``, Zauner 2010) of the watermarked pixels in the manifest; a copy
matches when the Hamming distance is at most :data:`MATCH_DISTANCE`.

Re-encoding (JPEG q50..95, WebP), resizing and mild colour edits move a phash by a few bits;
unrelated photos differ by about 32 of 64. ``MATCH_DISTANCE = 10`` sits between the two
(measured in ``tests/test_stamp.py``).

Example:
    >>> from PIL import Image
    >>> a = Image.effect_mandelbrot((256, 256), (-2.0, -1.5, 1.0, 1.5), 100).convert("RGB")
    >>> fingerprint(a)
    'c4001b0065008c00'
    >>> distance(fingerprint(a), fingerprint(a.resize((128, 128))))
    0
    >>> matches(fingerprint(a), fingerprint(a.rotate(90)))
    False
"""

from __future__ import annotations

import imagehash
from PIL import Image

__all__ = ["ALGORITHM", "MATCH_DISTANCE", "distance", "fingerprint", "matches"]

ALGORITHM = "phash-64"  # imagehash.phash, hash_size 8, on the RGB image converted to L
MATCH_DISTANCE = 10


def fingerprint(image: Image.Image) -> str:
    """64-bit perceptual hash of ``image``, as 16 hex digits."""
    return str(imagehash.phash(image.convert("RGB"), hash_size=8))


def distance(a: str, b: str) -> int:
    """Hamming distance between two fingerprints (0 .. 64)."""
    return int(imagehash.hex_to_hash(a) - imagehash.hex_to_hash(b))


def matches(a: str, b: str) -> bool:
    """Whether two fingerprints are of the same picture (distance <= MATCH_DISTANCE)."""
    return distance(a, b) <= MATCH_DISTANCE
