"""How much of a model one candidate explains, and how simple the rest is: two numbers shared by parent
detection (on full tensors) and tree recovery (on sketches).

* :func:`scaled_residual`: what is left of ``c`` after the least-squares multiple of ``p`` is removed.
  Fitting the scale removes the uniform shrink of weight decay, the drift that otherwise brings two
  far-trained cousins nearer each other than either is to its parent;
* :func:`effective_rank`: the entropy effective rank of a difference matrix relative to its side. One
  fine-tune is a simpler move than the difference to a sibling, which sums two of them.
"""

from __future__ import annotations

import numpy as np


def scaled_residual(c: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """``(‖c − s·p‖², ‖c‖²)`` for the least-squares scale ``s`` (flattened arrays, float64)."""
    pp, cc = float(np.dot(p, p)), float(np.dot(c, c))
    if pp <= 0:
        return cc, cc
    s = float(np.dot(c, p)) / pp
    return max(cc - s * s * pp, 0.0), cc


def squared_singular_values(m: np.ndarray) -> np.ndarray:
    """The squared singular values of a 2-D array (float64, ascending), from the eigenvalues of its smaller
    Gram matrix: ~35% cheaper than an SVD, and exact to ~1e-16 of the largest (1e-8 after the square root)."""
    m = m.astype(np.float64)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    return np.clip(np.linalg.eigvalsh(gram), 0.0, None)


def effective_rank(delta: np.ndarray) -> float | None:
    """exp(entropy of the normalised squared singular values) / min(shape), for matrices of side >= 8."""
    m = delta.reshape(delta.shape[0], -1)
    if min(m.shape) < 8 or not np.any(m):
        return None
    s2 = squared_singular_values(m)
    p = s2 / s2.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()) / min(m.shape))


__all__ = ["effective_rank", "scaled_residual", "squared_singular_values"]
