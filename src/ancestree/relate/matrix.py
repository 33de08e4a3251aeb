"""All-pairs distances of many models of one architecture, from their sketches, in one matrix product.

For N models, :func:`relate` on every pair costs N²/2 alignments and SVDs; tree recovery first needs
only distances. Each model is aligned once to a reference, the sketches of every shared matrix are
stacked, and squared distances come from one Gram matrix per tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ancestree.align import align, oriented
from ancestree.errors import IncomparableError
from ancestree.fingerprint import Fingerprint


def rms_distance_matrix(fps: Sequence[Fingerprint], reference: int = 0) -> np.ndarray:
    """Pairwise RMS distance of the weights (parameter-weighted over matrices shared by all models).

    Entry ``[i, j]`` estimates ``sqrt(Σ_t ‖W_i,t − W_j,t‖² / Σ_t numel_t)`` over the matrices ``t`` that every
    model shares with ``fps[reference]`` (by name or content, transposes handled); it equals
    :attr:`PairEvidence.distance` of the pair when both share the same matrices. Raises
    :class:`IncomparableError` when no matrix is common to all models.
    """
    ref = fps[reference]
    pairings = [{p.a: p for p in align(ref, f)} for f in fps]
    common = [t.name for t in ref.tensors if t.is_matrix and all(t.name in pm for pm in pairings)]
    if not common:
        raise IncomparableError(None, "the models share no weight matrix: different architectures?")
    n = len(fps)
    total = np.zeros((n, n))
    weight = 0
    for name in common:
        stack = np.stack([oriented(f[pm[name].b], pm[name].transposed).ravel() for f, pm in zip(fps, pairings)]).astype(np.float64)
        stack -= stack[reference]  # distances are translation-invariant; centring avoids cancellation
        sq = np.einsum("ij,ij->i", stack, stack)
        d2 = sq[:, None] + sq[None, :] - 2.0 * (stack @ stack.T)
        numel = ref[name].numel
        total += numel * np.maximum(d2, 0.0) / stack.shape[1]
        weight += numel
    out = np.sqrt(total / weight)
    np.fill_diagonal(out, 0.0)
    return out
