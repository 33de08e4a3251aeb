"""Edges that are decided before any tree is drawn: duplicates, quantized copies, pruned copies, merges.

Each function looks at one model and a few of its nearest relatives and returns decisions with the numbers
behind them; exact pair evidence (:func:`ancestree.relate.relate`) is computed only for the pairs that the
cheap vector tests single out, so the cost stays ~N.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from ancestree.fingerprint import Fingerprint
from ancestree.errors import IncomparableError
from ancestree.relate import PairEvidence, relate
from ancestree.relate.precision import FLOAT_EXTRA_BITS, precision_bits
from ancestree.relate.verdict import PRUNED_NONZERO_DISTANCE, PRUNED_ZEROS, same_weights

#: Two models whose scale-free distance is below this may be the same weights (checked exactly).
DUPLICATE_DISTANCE = 1e-6

#: A child is an exact affine combination of its merge parents: residual (relative to the distance to its
#: nearest relative) below this for float32 weights. Merges are exact arithmetic and leave ~1e-6 (rounding);
#: the children of a short learning-rate sweep lie almost on a line with their parent and reach ~1e-3, so the
#: bound sits between. :func:`merge_tolerance` adds the rounding of the stored precision (1.15e-4 in all
#: for float32, 0.12 for float16).
MERGE_RESIDUAL = 1e-4

#: Rounding residual of a merge stored with ``b`` bits of precision, times ``2**b``: merges of the ``wild``
#: zoo written as float16 (10 bits) leave 7e-4 to 4.1e-2 (near siblings: a small distance to divide by),
#: so 42; the tolerance allows three times that.
ROUNDING_RESIDUAL = 42.0

#: Rows are dropped from a combination while its fit stays within this factor of the fit with every row (and
#: within the tolerance): with bfloat16's rounding in the tolerance, a merged fine-tune that moved little from
#: its siblings was dropped too, and came back as a "merge" of its base and its own merge (``wild`` released
#: in bfloat16: 0.837 / 0.926 -> 0.843 / 0.932; 1.5 and 3 alike; float32 zoos unchanged).
MINIMAL_SLACK = 1.5

#: No tolerance above this: a combination leaving a quarter of the child's distance to its nearest relative
#: unexplained is no merge at any precision (merges stored in 8 bits or fewer are then not recognised).
MAX_MERGE_RESIDUAL = 0.25

#: A merge parent carries at least this weight.
MERGE_WEIGHT = 0.05

#: How many nearest relatives are tried as merge parents.
MERGE_CANDIDATES = 6

#: Weight of unequal merge weights against a way of writing a merge (:func:`resolve_merges`): merge recipes
#: weigh the merged models alike (equal shares in an average, one λ for every task vector in task
#: arithmetic), while rewriting a task-arithmetic merge through one of its fine-tunes gives unequal ones
#: (``1/λ`` and ``(nλ − 1)/λ``: 1.43 and 0.57 for λ = 0.7). The penalty is this times the coefficient of
#: variation of the positive weights (0.43 there). On the selection zoos (``tiny`` seeds 1–6, ``wild``
#: seeds 1–4, ``lineage``; their merges all weigh their models alike) 0 read 4 of 6 ``tiny`` two-model
#: task-arithmetic merges through a fine-tune, two of them by 0.07 or less of the other terms; 0.25, 0.5 and
#: 1 right those two and change nothing else (``tiny`` seeds 1 and 2: 0.931 → 0.966 with cards), 2 loses an
#: edge on seed 6. The other two lose by more, on a direction score that is wrong about their base.
EQUAL_WEIGHTS_PRIOR = 0.5


def _copy_evidence(fa: Fingerprint, fb: Fingerprint) -> PairEvidence | None:
    """Pair evidence for the copy tests (no low-rank cue is needed: the SVDs are skipped); None when the
    pair has nothing to compare (e.g. every shared tensor of one side holds NaN: no copy can be shown)."""
    try:
        return relate(fa, fb, ranks=False)
    except IncomparableError:
        return None


def is_duplicate(fa: Fingerprint, fb: Fingerprint) -> bool:
    """The same learned values (maybe renamed, transposed or in another format)."""
    if fa.same_content(fb):
        return True
    ev = _copy_evidence(fa, fb)
    return ev is not None and same_weights(ev)


def quantized_copy_ratio(parent: Fingerprint, child: Fingerprint) -> float | None:
    """How many of its rounding steps ``child`` is from ``parent`` when it is ``parent`` stored at lower
    precision (they differ by about one rounding step), else None."""
    ev = _copy_evidence(parent, child)
    if ev is None or not ev.within_rounding or ev.precision_b >= ev.precision_a:
        return None
    # counted on the matrices the child stores coarser: a GGUF keeps some matrices in float, finer than an int8
    # sibling's, whose per-tensor rounding bound is loose there (the Q4 copy of a bfloat16 model read 0.77
    # steps from its int8 sibling, 1.07 from its source, and was hung below the sibling)
    coarser = [l.quant_ratio for l in ev.layers if l.quant_ratio is not None and l.is_matrix and not l.identical
               and precision_bits(child[l.b]) < precision_bits(parent[l.a])]
    return float(np.median(coarser)) if coarser else ev.quant_ratio


def is_quantized_copy(parent: Fingerprint, child: Fingerprint) -> bool:
    """``child`` is ``parent`` stored at lower precision: they differ by about one rounding step."""
    return quantized_copy_ratio(parent, child) is not None


#: A quantized copy's source is the relative it is fewest rounding steps from; a finer relative within this
#: factor of that is taken instead only when the nearest is itself a copy of it (one model in several
#: precisions: an int8 file is as near an fp32 model as its fp16 copy). A 4-bit step is coarse enough that a
#: lightly fine-tuned model's parent passes the copy test at nearly the same count (0.54 against 0.51 steps
#: from the fp16 fine-tune a Q4_0 was made from, when steps were bounded by the largest entry), so nearness
#: alone cannot choose between those two.
QUANTIZED_SOURCE_SLACK = 1.1


def quantized_source(child: Fingerprint, finer: Sequence[tuple[float, Fingerprint]]) -> int | None:
    """Index in ``finer`` (``(precision bits, fingerprint)`` of relatives stored finer than ``child``) of the
    model ``child`` is a quantized copy of (see :data:`QUANTIZED_SOURCE_SLACK`), None when it is none's."""
    ratios = [(quantized_copy_ratio(fp, child), -bits, k) for k, (bits, fp) in enumerate(finer)]
    found = sorted((r, b, k) for r, b, k in ratios if r is not None)
    if not found:
        return None
    nearest_ratio, _, nearest = found[0]
    within = sorted((b, r, k) for r, b, k in found if r <= nearest_ratio * QUANTIZED_SOURCE_SLACK)
    near = finer[nearest][1]
    return next(k for _, _, k in within
                if k == nearest or is_duplicate(finer[k][1], near) or is_quantized_copy(finer[k][1], near))


def is_pruned_copy(parent: Fingerprint, child: Fingerprint) -> bool:
    """``child`` is ``parent`` with a share of weights set to zero and the rest (nearly) unchanged."""
    ev = _copy_evidence(parent, child)
    return ev is not None and ev.zeros_delta >= PRUNED_ZEROS and ev.nonzero_rel_distance <= PRUNED_NONZERO_DISTANCE


#: How many relatives with fewer exact zeros are looked at as a pruned model's source, nearest first.
#: Pruning moves a model away from all its relatives at once (the zeroed mass counts in every distance), so
#: the source need not be among the few nearest: an 80 % pruned copy in a `wild` selection zoo had it 9th.
PRUNED_CANDIDATES = 32


def pruning_sources(U: np.ndarray, c: int, pool: np.ndarray, zeros: np.ndarray, sq: np.ndarray | None = None) -> list[int]:
    """Rows of ``pool`` that row ``c`` may be a pruned copy of, densest first (then best agreeing), for
    :func:`is_pruned_copy` to confirm.

    Of the :data:`PRUNED_CANDIDATES` nearest rows with at least :data:`PRUNED_ZEROS` fewer exact zeros, those
    that agree with ``c`` on the sampled entries both keep non-zero (``U`` holds the same weights of every
    member on one scale per tensor; a loose bound, as the sample only estimates the full test). Densest
    first, in steps of :data:`PRUNED_ZEROS` (float16 and int8 copies hold a few incidental zeros): pruning a
    pruned copy further gives what pruning its source would, and the dense source is what people prune.
    ``sq`` (the rows' squared norms, computed once per tree) saves a pass over ``U`` per call.
    """
    with np.errstate(invalid="ignore"):  # NaN zeros (no matched tensor) never qualify
        fewer = pool[(pool != c) & (zeros[c] - zeros[pool] >= PRUNED_ZEROS)] if zeros[c] >= PRUNED_ZEROS else pool[:0]
    if not len(fewer):
        return []
    sq = np.einsum("ij,ij->i", U, U) if sq is None else sq
    # squared distances up to the constant |U[c]|², without copying the candidates' rows
    d2 = sq[fewer] - 2.0 * (U @ U[c])[fewer]
    near = fewer[np.argsort(d2, kind="stable")[:PRUNED_CANDIDATES]]
    kept = (U[near] != 0) & (U[c] != 0)
    off = np.sqrt(np.sum(np.where(kept, U[near] - U[c], 0.0) ** 2, axis=1))
    scale = np.sqrt(np.sum(np.where(kept, U[c], 0.0) ** 2, axis=1))
    ok = off <= 2 * PRUNED_NONZERO_DISTANCE * scale
    agree, off = near[ok], off[ok]
    # within a density step, the one that best agrees on the kept weights: the nearest overall can be the
    # source's parent when the fine-tune between them is smaller than the pruned mass (a 1 % fine-tune,
    # pruned, was hung below its base and above its source)
    return [int(p) for p in agree[np.lexsort((off, np.floor(zeros[agree] / PRUNED_ZEROS)))]]


def merge_tolerance(precision_bits: float) -> float:
    """The merge residual bound for weights stored with ``precision_bits`` bits (as
    :func:`~ancestree.relate.precision_bits` gives them: 25 for float32, 12 for float16, the mantissa plus
    :data:`~ancestree.relate.precision.FLOAT_EXTRA_BITS`, which :data:`ROUNDING_RESIDUAL` was measured
    without): :data:`MERGE_RESIDUAL` plus three times the rounding residual, at most :data:`MAX_MERGE_RESIDUAL`.

    It grows like the rounding error (``2**-bits``), not like its ratio to float32's: ``MERGE_RESIDUAL`` is
    far above float32 rounding, and scaling that margin by ``2**13`` let a float16 model make a fine-tune
    of its own parent "a merge" at residual 0.8.
    """
    mantissa = float(precision_bits) - FLOAT_EXTRA_BITS
    return min(MERGE_RESIDUAL + 3.0 * ROUNDING_RESIDUAL * 2.0 ** -mantissa, MAX_MERGE_RESIDUAL)


def merge_parents(U: np.ndarray, child: int, candidates: list[int], scale: float,
                  tolerance: float | None = None) -> tuple[list[int], list[float], float]:
    """Is ``U[child]`` an affine combination of some ``U[candidates]``? Returns (support, weights, residual).

    ``support`` lists every candidate with a weight of magnitude above :data:`MERGE_WEIGHT` (a task-arithmetic
    merge gives its base a negative weight); the parents are those with positive weights. With a
    ``tolerance`` and a residual below it, the support is one minimal exact combination: candidates are
    dropped while the residual stays below it (two merges of one parent are both among the candidates).

    Merges (weight averaging, task arithmetic) are exact arithmetic on the parents' weights, so a real merge
    leaves a residual at float rounding level while a fine-tune lies far off the span of its relatives.
    ``residual`` is relative to ``scale`` (the child's distance to its nearest relative).
    """
    if len(candidates) < 2 or scale <= 0:
        return [], [], float("inf")
    A = U[candidates].astype(np.float64)
    y = U[child].astype(np.float64)
    weights, distance = _affine_fit(A, y)
    residual = distance / scale
    if tolerance is not None and residual < tolerance and len(candidates) > 2:
        kept = _minimal_fit(A, y, min(tolerance * scale, MINIMAL_SLACK * distance))
        candidates = [candidates[k] for k in kept]
        weights, distance = _affine_fit(A[kept], y)
        residual = distance / scale
    support = [(c, float(w)) for c, w in zip(candidates, weights) if abs(w) > MERGE_WEIGHT]
    return [c for c, _ in support], [w for _, w in support], residual


#: How many of a model's relatives in its tree the wide merge search regresses it on.
MERGE_POOL = 24

#: Coordinates the wide search samples: exact linear relations survive any subset of coordinates.
MERGE_COORDINATES = 512

#: Relative residual on the sampled coordinates below which a combination is checked on all of them.
MERGE_SCREEN = 1e-3

#: ... or, for models stored coarsely, a residual within this many times the child's own rounding (an RMS of
#: ``2**-bits`` of its values, ``bits`` as :func:`~ancestree.relate.precision_bits` counts them): merges of
#: bfloat16 models stored in bfloat16 leave 0.8-0.9 of that, and their task-arithmetic merges, whose base is
#: rarely among the nearest relatives, were all missed by the float32 screen (``wild`` released in bfloat16).
SCREEN_ROUNDING = 3.0


def merge_coordinates(width: int, seed: int = 0) -> np.ndarray:
    """The fixed coordinates the wide merge search works on (all of them for narrow vectors)."""
    if width <= MERGE_COORDINATES:
        return np.arange(width)
    return np.sort(np.random.default_rng(seed).choice(width, MERGE_COORDINATES, replace=False))


def wide_merge_candidates(S: np.ndarray, child: int, pool: list[int], bits: float = math.inf) -> list[int]:
    """Relatives that may combine into ``child`` exactly, found on sampled coordinates ``S`` (rows = models).

    Task arithmetic with several parents extrapolates (``B + 0.7·Σ(Cᵢ − B)`` lies far beyond its parents and
    base), so the members of a merge need not be among the child's nearest relatives. The child is regressed
    on its ``MERGE_POOL`` nearest relatives in ``S`` (an affine fit); with fewer regressors than coordinates a
    fine-tune keeps a large residual, while a merge fits at rounding level. Returns a minimal set of
    relatives that still fits (to be verified on all coordinates with :func:`merge_parents`), or []. ``bits``
    is the child's precision (:data:`SCREEN_ROUNDING`).
    """
    if len(pool) < 2:
        return []
    X = S[pool].astype(np.float64)
    y = S[child].astype(np.float64)
    order = np.argsort(np.linalg.norm(X - y, axis=1))[:MERGE_POOL]
    scale = float(np.linalg.norm(X[order[0]] - y))
    if scale <= 0 or len(order) >= S.shape[1]:
        return []
    screen = MERGE_SCREEN * scale
    limit = max(screen, SCREEN_ROUNDING * 2.0 ** -bits * float(np.linalg.norm(y)))
    fit = _affine_fit(X[order], y)[1]
    if fit > limit:
        return []
    # rows are dropped while the fit stays as good as with all of them, not merely within the rounding: a
    # merged fine-tune that moved less than the rounding from its siblings would go too
    return [pool[order[k]] for k in _minimal_fit(X[order], y, max(screen, MINIMAL_SLACK * fit))]


def _minimal_fit(X: np.ndarray, y: np.ndarray, limit: float) -> list[int]:
    """Rows of ``X`` whose affine hull still passes within ``limit`` of ``y`` after dropping every row it can.

    Another merge among the rows is a second exact dependency (two merges sharing a parent), and the
    least-squares weights spread over both; the rows left are one minimal dependency. The row with the
    smallest weight is tried first (outside the dependency, weights are ~0), so a step costs one or two
    fits instead of one per row.
    """
    keep = list(range(len(X)))
    while len(keep) > 2:
        weights, _ = _affine_fit(X[keep], y)
        for drop in np.argsort(np.abs(weights), kind="stable"):
            trial = keep[:drop] + keep[drop + 1:]
            if _affine_fit(X[trial], y)[1] <= limit:
                keep = trial
                break
        else:
            break
    return keep


def _affine_fit(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Weights (summing to 1) of the point of the affine hull of the rows of ``X`` nearest ``y``, and its distance."""
    if len(X) == 1:
        return np.ones(1), float(np.linalg.norm(y - X[0]))
    w, *_ = np.linalg.lstsq((X[1:] - X[0]).T, y - X[0], rcond=None)
    return np.r_[1.0 - w.sum(), w], float(np.linalg.norm((X[1:] - X[0]).T @ w - (y - X[0])))


def resolve_merges(found: dict[int, tuple[list[int], list[float]]],
                   base_score: Callable[[int, list[int]], float] | None = None) -> dict[int, list[int]]:
    """Pick the real merge children among exact affine dependencies; returns child -> parents.

    If ``M = (A + B)/2`` then also ``A = 2M − B``: every member of an exact dependency is an affine
    combination of the others, and only one way of writing it is the merge. Forms are ranked by:

    1. the number of negative weights: a weight average has none; task arithmetic ``M = B + λ·Σ(Cᵢ − B)``
       has one (its base ``B``); rewritten forms have more, except the base written through the merge,
       ``B = (λ·ΣCᵢ − M)/(nλ − 1)``, and, for two merged models, each fine-tune written through the other,
       ``C₁ = (M + (2λ − 1)·B − λ·C₂)/λ``, which have one too;
    2. then the smallest ``log(total weight) − base_score + EQUAL_WEIGHTS_PRIOR · unequal``: a simpler
       combination is likelier (total 1 for an average, ``|1 − nλ| + nλ`` for task arithmetic, more for
       rewritten forms); for one negative weight ``base_score`` (e.g. the mean ``log P_dir(base → parent)``)
       says how plausibly the negative member is the *parent* of the positive ones: the base of task
       arithmetic is the model the merged fine-tunes came from, while a merge is no one's parent; and merge
       recipes weigh their models alike, a fine-tune written through another does not (``unequal``: the
       coefficient of variation of the positive weights). With three or more merged models the base
       rewritten through the merge can have the smaller total weight, and only the direction tells them apart.

    A merge needs two or more positive weights; each dependency yields one merge.
    """

    def key(item: tuple[int, tuple[list[int], list[float]]]) -> tuple:
        child, (support, weights) = item
        negative = [c for c, w in zip(support, weights) if w < -MERGE_WEIGHT]
        positive = [c for c, w in zip(support, weights) if w > MERGE_WEIGHT]
        plausibility = base_score(negative[0], positive) if base_score and len(negative) == 1 and positive else 0.0
        shares = [w for w in weights if w > MERGE_WEIGHT]
        unequal = float(np.std(shares) / np.mean(shares)) if shares else 0.0
        return (min(len(negative), 2), math.log(sum(abs(w) for w in weights)) - plausibility + EQUAL_WEIGHTS_PRIOR * unequal, child)

    taken: set[int] = set()
    out: dict[int, list[int]] = {}
    for child, (support, weights) in sorted(found.items(), key=key):
        parents = [c for c, w in zip(support, weights) if w > MERGE_WEIGHT]
        group = {child, *support}
        if len(parents) < 2 or child in taken:
            continue
        out[child] = parents
        taken |= group
    return out


def merge_bases(merges: dict[int, list[int]], found: dict[int, tuple[list[int], list[float]]]) -> dict[int, tuple[int, list[int]]]:
    """Task-arithmetic merges among ``merges`` (child -> parents, as :func:`resolve_merges` chose them from
    ``found``): merge -> ``(base, members)``, the base being the one negative weight of the chosen form.
    ``M = B + λ·Σ(Cᵢ − B)`` adds up the updates the Cᵢ made from B: B is an ancestor of every Cᵢ (their
    parent, as a rule) and of M."""
    bases = {}
    for child, parents in merges.items():
        support, weights = found[child]
        negative = [j for j, w in zip(support, weights) if w < -MERGE_WEIGHT]
        if len(negative) == 1:
            bases[child] = (negative[0], list(parents))
    return bases


def merge_kin(bases: dict[int, tuple[int, list[int]]]) -> dict[int, set[int]]:
    """Model -> the models it cannot be the parent of, from :func:`merge_bases`: a member, not of its merge's
    base (an ancestor of every member, parent or further up) nor of a fellow member of that merge (models
    fine-tuned apart and merged); the merge, not of its base. This holds whichever of its ancestors the base
    is; weighing ``base → member`` as a parent edge does not (a review's hub merged over a grandparent)."""
    kin: dict[int, set[int]] = {}
    for merge, (base, members) in bases.items():
        kin.setdefault(merge, set()).add(base)
        for member in members:
            kin.setdefault(member, set()).update({base, *members} - {member})
    return kin


__all__ = ["MERGE_CANDIDATES", "MERGE_POOL", "MERGE_RESIDUAL", "merge_tolerance", "wide_merge_candidates", "is_duplicate", "is_pruned_copy", "pruning_sources", "PRUNED_CANDIDATES", "is_quantized_copy", "quantized_copy_ratio", "quantized_source", "QUANTIZED_SOURCE_SLACK", "merge_parents", "resolve_merges", "merge_bases", "merge_kin"]
