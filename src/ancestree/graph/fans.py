"""Fans drawn as chains: re-deciding a child between the parent the arborescence gave it and older models.

Siblings fine-tuned from one parent on related data share part of their update, so a child can lie nearer
a sibling than the parent, and the minimum arborescence then hangs it below the sibling (a chain instead
of a fan). Distances barely tell the two apart (the sibling wins by a few per cent), but the *shape* of the
difference does: the child minus its parent is one fine-tune, the child minus a sibling is two, and has
the higher effective rank. So for every chain ``g → q → c`` the arborescence drew, ``c`` moves up to ``g``
when ``g`` explains it better as one update (:func:`update_fit`). A true chain keeps its edge: there ``q``
explains ``c`` with a smaller residual *and* a simpler difference than ``g``. Moves cascade: in a fan of
three drawn as ``g → a → b → c``, once ``b`` moves up to ``g``, ``c`` is weighed against ``g`` in turn.

The root of the tree is the second model every child is weighed against. A wide fan whose members share
a drift (hundreds of fine-tunes of one base on one domain) is drawn as chains of siblings many levels
deep; each sibling explains a child as badly as the next, so moving one level a round never reaches the
base. The root explains a child of the base as one update and a deep descendant as several, so it wins
only where it is the parent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ancestree.fingerprint import Fingerprint
from ancestree.fingerprint.types import comparable_pair
from ancestree.relate.update import effective_ranks, even_indices, scaled_residual_rows

#: Weight of the difference's effective rank against the scale-fitted residual in :func:`update_fit`.
#: Chosen on the ``lineage`` zoo, edge accuracy 0.814 without the step; with the rounds and 32 rows,
#: weights 0.25 / 0.5 / 1 / 1.5 / 2 / 3 give 0.832 / 0.843 / 0.843 / 0.850 / 0.850 / 0.850 (one pass on 48
#: rows: 0.836 at 0.5, 0.811 at 3). Chosen again once the root is weighed too, adding the selection
#: ``model-j`` (seed 1): 1 / 1.5 / 2 / 2.5 / 3 / 4 give ``lineage`` 0.900 / 0.911 / 0.907 / 0.907 / 0.900 /
#: 0.896 and ``model-j`` 0.625 / 0.682 / 0.722 / 0.748 / 0.750 / 0.763, ``tiny`` seeds 4–6 the same from
#: 2 on, so 2.5; ``vthr``, ``wild``, ``vthr-lora`` and the reported ``model-j`` were not looked at to choose it.
RANK_WEIGHT = 2.5

#: Only a grandparent nearly as near as the parent is weighed: its arborescence cost (a log of squared
#: angles) at most this much above the parent's. A true chain's grandparent is far further; the bound saves
#: the fits (an eigen-decomposition per matrix). On ``lineage`` (rank weight 2): 0.2 → 0.843, 0.4 → 0.850,
#: 0.6 → 0.843, 1.0 → 0.839.
NEAR_COST = 0.4

#: The root above a child is weighed when its arborescence cost is at most this much above the parent's:
#: looser than :data:`NEAR_COST`, as the root of a wide fan is far from siblings that share a drift, but a
#: bound all the same (each weighing is a fit). On the selection zoos (``lineage``, ``tiny`` seeds 4–6 and a
#: second ``model-j``, seed 1): no bound, 2, 1, 0.6 and 0.4 give ``model-j`` 0.722 / 0.722 / 0.720 / 0.713 /
#: 0.687 and ``lineage`` 0.907 throughout; 2 costs 20 % fewer fits than none on 10k synthetic models.
ROOT_NEAR_COST = 2.0

#: The effective rank is taken on at most this many evenly spaced rows of a sketch difference: one
#: eigen-decomposition of a 32×32 Gram matrix instead of 48×48 (about half the cost). On ``lineage`` 32 and
#: all 48 rows give the same edge accuracy (0.850 at rank weight 2, in rounds; one pass at weight 0.5:
#: 0.836 for both, 0.832 with 24 rows). Held out they differ by about one edge either way (48 rows: ``vthr``
#: 0.93 instead of 0.94, ``wild`` 0.834 instead of 0.828).
RANK_ROWS = 32

#: Pairs fitted in one batch by :func:`update_fits` (bounds the stacked sketches to a few tens of MB).
FIT_CHUNK = 256


def update_fit(child: Fingerprint, parent: Fingerprint) -> float | None:
    """How well ``parent`` explains ``child`` as one update, from their sketches (higher is better):
    ``−log(scale-fitted residual) − RANK_WEIGHT · log(mean effective rank of the matrix differences)``.
    None when the two share no matrix by name and sketch shape."""
    return update_fits([(child, parent)])[0]


def update_fits(pairs: Sequence[tuple[Fingerprint, Fingerprint]]) -> list[float | None]:
    """:func:`update_fit` of each ``(child, parent)`` pair, with one batched eigen-decomposition per sketch
    shape for up to :data:`FIT_CHUNK` pairs at a time (the cost is LAPACK's; the calls were half of it)."""
    out: list[float | None] = []
    for start in range(0, len(pairs), FIT_CHUNK):
        out += _update_fits(pairs[start:start + FIT_CHUNK])
    return out


def _update_fits(pairs: Sequence[tuple[Fingerprint, Fingerprint]]) -> list[float | None]:
    by_shape: dict[tuple[int, ...], tuple[list[int], list[np.ndarray], list[np.ndarray]]] = {}
    for k, (child, parent) in enumerate(pairs):
        for t in child.tensors:
            if (t.is_matrix and t.name in parent and parent[t.name].sketch.shape == t.sketch.shape
                    and comparable_pair(t, parent[t.name])):
                rows, cs, ps = by_shape.setdefault(t.sketch.shape, ([], [], []))
                rows.append(k)
                cs.append(t.sketch)
                ps.append(parent[t.name].sketch)
    n = len(pairs)
    residual, norm, rank_sum, rank_count = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for rows, cs, ps in by_shape.values():
        owner = np.asarray(rows)
        c = np.stack(cs).astype(np.float64)
        p = np.stack(ps).astype(np.float64)
        left, cc = scaled_residual_rows(c.reshape(len(owner), -1), p.reshape(len(owner), -1))
        np.add.at(residual, owner, left)
        np.add.at(norm, owner, cc)
        rank = effective_ranks(_even_rows(c - p, RANK_ROWS))
        defined = ~np.isnan(rank)
        np.add.at(rank_sum, owner[defined], rank[defined])
        np.add.at(rank_count, owner[defined], 1.0)
    return [None if norm[k] <= 0 or rank_count[k] == 0 else
            float(-np.log(max(np.sqrt(residual[k] / norm[k]), 1e-6))
                  - RANK_WEIGHT * np.log(max(rank_sum[k] / rank_count[k], 1e-3)))
            for k in range(n)]


def _even_rows(stack: np.ndarray, most: int) -> np.ndarray:
    """At most ``most`` evenly spaced rows of each matrix of a stack (all of them when it has no more)."""
    return stack if stack.shape[1] <= most else stack[:, even_indices(stack.shape[1], most)]


def root_above(parent_of: dict[int, int], node: int) -> int:
    """The root of ``node``'s tree under ``parent_of`` (child → parent)."""
    while node in parent_of:
        node = parent_of[node]
    return node


def lift_to_grandparents(parent_of: dict[int, int], fps: Sequence[Fingerprint],
                         movable: Callable[[int, int, int, bool], bool]) -> dict[int, int]:
    """``child → new parent`` for the children of ``parent_of`` (child → parent rows of ``fps``) that their
    grandparent or the root above them explains better than their parent (the better of the two wins);
    ``movable(ancestor, parent, child, is_root)`` says which moves are allowed. Decided in rounds, each on
    the tree the previous round left: a lifted child is weighed again against its new grandparent, and so
    are the children of a lifted model (their grandparent changed). Every move takes a model at least one
    level up, so the rounds end."""
    current, lifted = dict(parent_of), {}
    fits: dict[tuple[int, int], float | None] = {}
    pending = sorted(current)
    while pending:
        plans = []
        for c in pending:
            q = current[c]
            g = current.get(q)
            if g is None:
                continue
            root = root_above(current, g)
            options = [a for a, is_root in [(g, False)] + ([(root, True)] if root != g else []) if movable(a, q, c, is_root)]
            if options:
                plans.append((c, q, options))
        needed = list(dict.fromkeys((c, a) for c, q, options in plans for a in (q, *options) if (c, a) not in fits))
        fits.update(zip(needed, update_fits([(fps[c], fps[a]) for c, a in needed])))
        moves = {}
        for c, q, options in plans:
            scored = [(fit, a) for a in options if (fit := fits[(c, a)]) is not None]
            own = fits[(c, q)]
            if own is not None and scored:
                best, ancestor = max(scored, key=lambda x: x[0])  # a tie goes to the grandparent
                if best > own:
                    moves[c] = ancestor
        current.update(moves)
        lifted.update(moves)
        pending = sorted(c for c, q in current.items() if c in moves or q in moves)
    return lifted


__all__ = ["NEAR_COST", "RANK_WEIGHT", "ROOT_NEAR_COST", "lift_to_grandparents", "root_above", "update_fit",
           "update_fits"]
