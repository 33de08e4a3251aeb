"""Sketches: a fixed-size uniform sample of a tensor's entries that still compares across models.

Every tensor is viewed as 2-D ``(shape[0], prod(shape[1:]))``. For a dimension of length ``n`` the kept
indices ``I_n`` are drawn by a generator seeded with ``(seed, n, k)`` only, so

* two models of one architecture sample the same entries (their sketches subtract entry by entry);
* ``sketch(W.T) == sketch(W).T``: a matrix stored transposed (ONNX ``MatMul`` weights) still compares;
* the entries are a uniform sample, so the mean square of a sketch difference is an unbiased estimate of
  the mean square of the full difference;
* the rank of a sketch difference is at most the rank of the full difference, and equals it for a
  low-rank update in general position (a merged LoRA of rank r gives a sub-matrix of rank r).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ancestree.fingerprint.types import SketchSpec


@lru_cache(maxsize=4096)
def index_set(n: int, k: int, seed: int) -> np.ndarray:
    """The sorted indices kept of a dimension of length ``n``: all of them if ``n <= k``, else ``k`` at random."""
    if n <= k:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([seed, n, k])
    idx = np.sort(rng.choice(n, size=k, replace=False)).astype(np.int64)
    idx.setflags(write=False)
    return idx


def as_matrix(values: np.ndarray) -> np.ndarray:
    """The 2-D view ``(shape[0], prod(shape[1:]))`` of a tensor with two or more dimensions."""
    return values.reshape(values.shape[0], math.prod(values.shape[1:]))


def take_sketch(values: np.ndarray, spec: SketchSpec) -> np.ndarray:
    """The float32 sketch of one tensor (2-D for matrices and higher, 1-D for vectors and scalars)."""
    if values.ndim >= 2:
        m = as_matrix(values)
        rows = index_set(m.shape[0], spec.matrix, spec.seed)
        cols = index_set(m.shape[1], spec.matrix, spec.seed)
        return np.asarray(m[np.ix_(rows, cols)], dtype=np.float32)
    flat = values.reshape(-1)
    return np.asarray(flat[index_set(flat.shape[0], spec.vector, spec.seed)], dtype=np.float32)
