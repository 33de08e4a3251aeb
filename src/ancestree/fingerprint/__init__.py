"""Fingerprints: one streaming pass over a model gives hashes, exact moments and sketches per tensor.

>>> from ancestree.fingerprint import fingerprint
>>> fp = fingerprint("path/to/model")          # doctest: +SKIP
>>> fp["encoder.layer.0.attention.self.query.weight"].kurtosis   # doctest: +SKIP

Everything downstream (alignment, pair evidence, trees, parents) works from :class:`Fingerprint` objects.
"""

from ancestree.fingerprint.cache import CACHE_ENV, FingerprintCache, default_cache_dir
from ancestree.fingerprint.compute import compute_fingerprint, fingerprint, fingerprint_many
from ancestree.fingerprint.sketch import index_set, take_sketch
from ancestree.fingerprint.store import from_bytes, load_fingerprints, save_fingerprints, to_bytes
from ancestree.fingerprint.types import (
    FINGERPRINT_VERSION,
    NOTHING_KEY,
    Declared,
    Fingerprint,
    SketchSpec,
    TensorPrint,
)

__all__ = [
    "CACHE_ENV",
    "FINGERPRINT_VERSION",
    "NOTHING_KEY",
    "Declared",
    "Fingerprint",
    "FingerprintCache",
    "SketchSpec",
    "TensorPrint",
    "compute_fingerprint",
    "default_cache_dir",
    "fingerprint",
    "fingerprint_many",
    "from_bytes",
    "index_set",
    "load_fingerprints",
    "save_fingerprints",
    "take_sketch",
    "to_bytes",
]
