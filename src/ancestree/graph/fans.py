"""Fans drawn as chains: re-deciding a child between the parent the arborescence gave it and that parent's parent.

Siblings fine-tuned from one parent on related data share part of their update, so a child can lie nearer
a sibling than the parent, and the minimum arborescence then hangs it below the sibling (a chain instead
of a fan). Distances barely tell the two apart (the sibling wins by a few per cent), but the *shape* of the
difference does: the child minus its parent is one fine-tune, the child minus a sibling is two, and has
the higher effective rank. So for every chain ``g → q → c`` the arborescence drew, ``c`` moves up to ``g``
when ``g`` explains it better as one update (:func:`update_fit`). A true chain keeps its edge: there ``q``
explains ``c`` with a smaller residual *and* a simpler difference than ``g``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ancestree.fingerprint import Fingerprint
from ancestree.relate.update import effective_rank, scaled_residual

#: Weight of the difference's effective rank against the scale-fitted residual in :func:`update_fit`.
#: Chosen on the ``lineage`` zoo (edge accuracy 0.814 without the step; 0.836 / 0.832 / 0.832 / 0.811 with
#: weights 0.5 / 1 / 2 / 3); ``vthr``, ``wild`` and ``vthr-lora`` were not looked at.
RANK_WEIGHT = 0.5

#: Only a grandparent nearly as near as the parent is weighed: its arborescence cost (a log of squared
#: angles) at most this much above the parent's. A true chain's grandparent is far further; the bound saves
#: the fits (an eigen-decomposition per matrix). On ``lineage``: 0.2 → 0.832, 0.4 and above → 0.836.
NEAR_COST = 0.4


def update_fit(child: Fingerprint, parent: Fingerprint) -> float | None:
    """How well ``parent`` explains ``child`` as one update, from their sketches (higher is better):
    ``−log(scale-fitted residual) − RANK_WEIGHT · log(mean effective rank of the matrix differences)``.
    None when the two share no matrix by name and sketch shape."""
    residual = norm = 0.0
    ranks = []
    for t in child.tensors:
        if not t.is_matrix or t.name not in parent or parent[t.name].sketch.shape != t.sketch.shape:
            continue
        c, p = t.sketch.astype(np.float64), parent[t.name].sketch.astype(np.float64)
        r, n = scaled_residual(c.ravel(), p.ravel())
        residual, norm = residual + r, norm + n
        rank = effective_rank(c - p)
        if rank is not None:
            ranks.append(rank)
    if norm <= 0 or not ranks:
        return None
    return float(-np.log(max(np.sqrt(residual / norm), 1e-6)) - RANK_WEIGHT * np.log(max(np.mean(ranks), 1e-3)))


def lift_to_grandparents(parent_of: dict[int, int], fps: Sequence[Fingerprint],
                         movable: Callable[[int, int, int], bool]) -> dict[int, int]:
    """``child → grandparent`` for the children of ``parent_of`` (child → parent rows of ``fps``) that their
    grandparent explains better than their parent; ``movable(grandparent, parent, child)`` says which
    moves are allowed. Decided on the drawn tree as it is (moves do not cascade)."""
    lifted = {}
    for c, q in parent_of.items():
        g = parent_of.get(q)
        if g is None or not movable(g, q, c):
            continue
        by_parent, by_grandparent = update_fit(fps[c], fps[q]), update_fit(fps[c], fps[g])
        if by_parent is not None and by_grandparent is not None and by_grandparent > by_parent:
            lifted[c] = g
    return lifted


__all__ = ["RANK_WEIGHT", "lift_to_grandparents", "update_fit"]
