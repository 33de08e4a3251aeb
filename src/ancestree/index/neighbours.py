"""Candidate relatives of a new model by nearest-neighbour search, instead of comparing it with every model.

Each fingerprint is reduced to one fixed-length unit vector (:func:`embed`) whose inner products estimate
the correlation of matching weights: every tensor's sketch (turned to a canonical orientation, so a matrix
stored transposed still matches) is standardised and randomly projected (Johnson-Lindenstrauss) with a
projection keyed by the tensor's shape. Models that share tensors of one shape and whose weights are
correlated (fine-tunes, quantized, pruned or merged copies) get a cosine near their weight correlation;
independently trained models, or models of other architectures, get a cosine near 0.

:class:`NeighbourIndex` searches these vectors exactly (one matrix-vector product, O(N·D)); at millions of
models an approximate index (HNSW, IVF) takes its place with the same interface.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from ancestree.blas import one_blas_thread
from ancestree.fingerprint import Fingerprint, TensorPrint

#: Length of the embedding vectors (float32): 128 × 4 bytes a model.
DIM = 128

#: Sketches smaller than this say too little about a tensor to vote.
MIN_SKETCH = 16

#: Cosine above which a neighbour is worth checking with full pair evidence. Fine-tunes and copies score
#: 0.7-1.0 (tiny zoo); independent trainings of one recipe score up to ~0.27: their weights are
#: uncorrelated, but a 128-d random projection estimates each inner product only to ~1/sqrt(128) ≈ 0.09.
#: Candidates are a filter, not a decision: each one is checked with :func:`ancestree.relate.relate`.
RELATED_COSINE = 0.2


@lru_cache(maxsize=1024)
def _projection(key: str, length: int, dim: int) -> np.ndarray:
    """A Gaussian projection ``(length, dim)`` fixed by the shape key: same tensors, same projection."""
    seed = int.from_bytes(hashlib.sha256(f"{key}:{length}:{dim}".encode()).digest()[:8], "little")
    proj = np.random.default_rng(seed).standard_normal((length, dim)).astype(np.float32)
    proj /= np.sqrt(dim)
    proj.setflags(write=False)
    return proj


def _canonical(t: TensorPrint) -> tuple[str, np.ndarray]:
    """Shape key and flattened sketch, oriented so a matrix and its transpose give the same entries."""
    sketch = np.asarray(t.sketch, dtype=np.float32)
    if sketch.ndim == 2 and len(t.shape) == 2 and t.shape[0] > t.shape[1]:
        sketch = sketch.T
    return "x".join(map(str, sorted(t.shape))), sketch.ravel()


def embed(fp: Fingerprint, dim: int = DIM) -> np.ndarray:
    """The unit vector of a fingerprint (all zeros when no tensor has a usable sketch)."""
    # vector-times-matrix products this small only make BLAS threads spin on a shared CPU (measured: 88 ms
    # a model with 2 BLAS threads under load, ~1 ms with one)
    with one_blas_thread():
        return _embed(fp, dim)


def _embed(fp: Fingerprint, dim: int) -> np.ndarray:
    total = np.zeros(dim, dtype=np.float64)
    for t in fp.tensors:
        key, flat = _canonical(t)
        if flat.size < MIN_SKETCH or not t.is_matrix or not t.is_finite:
            continue
        centred = flat.astype(np.float64) - flat.mean()
        norm = np.linalg.norm(centred)
        if not np.isfinite(norm) or norm == 0:
            continue
        total += (centred / norm).astype(np.float32) @ _projection(key, flat.size, dim)
    norm = np.linalg.norm(total)
    return (total / norm).astype(np.float32) if norm > 0 else total.astype(np.float32)


class NeighbourIndex:
    """Exact cosine search over embedding vectors, by name.

    >>> nn = NeighbourIndex().fit(["a", "b"], vectors)    # doctest: +SKIP
    >>> nn.query(v, k=5)                                   # doctest: +SKIP
    [("b", 0.93), ("a", 0.12)]
    """

    def __init__(self, min_cosine: float = RELATED_COSINE) -> None:
        self.min_cosine = min_cosine

    def fit(self, names: Sequence[str], vectors: np.ndarray) -> NeighbourIndex:
        self.names_ = list(names)
        self.vectors_ = np.asarray(vectors, dtype=np.float32).reshape(len(self.names_), -1)
        return self

    def query(self, vector: np.ndarray, k: int = 8) -> list[tuple[str, float]]:
        """Up to ``k`` names with cosine ≥ ``min_cosine``, most similar first."""
        return self.query_many(np.asarray(vector).reshape(1, -1), k)[0]

    def query_many(self, vectors: np.ndarray, k: int = 8) -> list[list[tuple[str, float]]]:
        """:meth:`query` for each row of ``vectors``, in one matrix product (BLAS limits are set once)."""
        if not self.names_:
            return [[] for _ in vectors]
        with one_blas_thread():
            scores = np.asarray(vectors, dtype=np.float32) @ self.vectors_.T
        k = min(k, scores.shape[1])
        out = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([(self.names_[i], float(row[i])) for i in top if row[i] >= self.min_cosine])
        return out


def to_blob(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<f4")


__all__ = ["DIM", "NeighbourIndex", "RELATED_COSINE", "embed", "from_blob", "to_blob"]
