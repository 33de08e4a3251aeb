"""Pair the tensors of two models: by name where names agree, by shape and content where they do not.

Three passes, each over what the previous left unpaired:

1. exact names with compatible shapes;
2. names after removing wrapper prefixes (``bert.``, ``model.``, ``base_model.model.``, ``module.`` ...);
3. content: tensors of one *shape class* (same shape up to transposition) are matched by the Hungarian
   algorithm on a cost mixing the sketch distance (taken in the better orientation; sketches of a
   transposed matrix are transposes, see :mod:`ancestree.fingerprint.sketch`) and the distance of their
   layout-invariant moments. This pairs ONNX exports (``val_123``, ``onnx::MatMul_45``, weights stored
   transposed) with their originals.

Tensors with no partner (a head one model has and the other lacks) are reported, never forced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ancestree.fingerprint import Fingerprint, TensorPrint, fingerprint
from ancestree.io.base import Model

#: Wrapper prefixes removed (repeatedly, from the front) before names are compared.
PREFIXES = ("base_model.model.", "_orig_mod.", "module.", "model.", "bert.", "roberta.", "transformer.")

#: A square matrix pair is called transposed when the transposed orientation is this much closer.
TRANSPOSE_MARGIN = 0.5


@dataclass(frozen=True)
class TensorPair:
    """Tensor ``a`` of the first model matched with ``b`` of the second; ``transposed``: b is stored as aᵀ."""

    a: str
    b: str
    transposed: bool = False
    by: str = "name"  # "name", "prefix" or "content"
    cost: float = 0.0  # content matches: the assignment cost (0 for identical content)


@dataclass
class Alignment:
    """The pairs of two models' tensors, plus what stayed unpaired on each side."""

    pairs: list[TensorPair]
    unpaired_a: list[str] = field(default_factory=list)
    unpaired_b: list[str] = field(default_factory=list)

    def __iter__(self) -> Iterator[TensorPair]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def to_dict(self) -> dict[str, object]:
        return {
            "pairs": [{"a": p.a, "b": p.b, "transposed": p.transposed, "by": p.by, "cost": p.cost} for p in self.pairs],
            "unpaired_a": list(self.unpaired_a),
            "unpaired_b": list(self.unpaired_b),
        }


def normalise_name(name: str) -> str:
    """``name`` without the wrapper prefixes of :data:`PREFIXES`."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name, changed = name[len(prefix) :], True
    return name


def oriented(t: TensorPrint, transposed: bool) -> np.ndarray:
    """The sketch of ``t``, transposed when the pair says so (so it lines up with its partner)."""
    return t.sketch.T if transposed else t.sketch


def sketch_distance(a: np.ndarray, b: np.ndarray) -> float:
    """``‖a − b‖ / (‖a‖ + ‖b‖)``: 0 for equal sketches, about 0.71 for independent ones of equal scale."""
    a, b = a.astype(np.float64), b.astype(np.float64)  # float32 squares overflow near its limits (masks)
    scale = float(np.linalg.norm(a) + np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / scale if scale > 0 else 0.0


def moment_distances(a: list[TensorPrint], b: list[TensorPrint]) -> np.ndarray:
    """Scale-free distances between layout-invariant moments (mean, spread, shape, sparsity), ``len(a) × len(b)``."""
    def columns(ts: list[TensorPrint]) -> tuple[np.ndarray, ...]:
        return (np.array([t.mean for t in ts], dtype=np.float64), np.array([t.std for t in ts], dtype=np.float64),
                np.nan_to_num(np.array([t.kurtosis for t in ts], dtype=np.float64)), np.array([t.zeros for t in ts], dtype=np.float64))

    (ma, sa, ka, za), (mb, sb, kb, zb) = columns(a), columns(b)
    spread = np.maximum(np.maximum(sa[:, None], sb[None, :]), 1e-12)
    return (np.abs(ma[:, None] - mb[None, :]) / spread
            + np.abs(np.log((sa[:, None] + 1e-12) / (sb[None, :] + 1e-12)))
            + np.abs(ka[:, None] - kb[None, :]) / (1.0 + np.abs(ka))[:, None]
            + np.abs(za[:, None] - zb[None, :]))


def shape_fit(a: TensorPrint, b: TensorPrint) -> bool | None:
    """``False``: same layout; ``True``: b stored as the transpose of a; ``None``: cannot pair."""
    if a.shape == b.shape:
        return False
    if len(a.shape) == 2 and a.shape == tuple(reversed(b.shape)):
        return True
    return None


def orientation(a: TensorPrint, b: TensorPrint) -> bool | None:
    """Whether b is a's transpose, deciding square matrices by which orientation of the sketches agrees."""
    fit = shape_fit(a, b)
    if fit is None or fit is True or len(a.shape) != 2 or a.shape[0] != a.shape[1]:
        return fit
    straight = sketch_distance(a.sketch, b.sketch)
    flipped = sketch_distance(a.sketch, b.sketch.T)
    return flipped < TRANSPOSE_MARGIN * straight


def _pair_by(key, fa: Fingerprint, fb: Fingerprint, left_a: list[str], left_b: list[str], by: str) -> list[TensorPair]:
    """Pairs whose keys agree (keys unique on both sides) and whose shapes fit."""
    index_a = _unique_keys(left_a, key)
    index_b = _unique_keys(left_b, key)
    pairs = []
    for k, na in index_a.items():
        nb = index_b.get(k)
        if nb is None:
            continue
        fit = orientation(fa[na], fb[nb])
        if fit is not None:
            pairs.append(TensorPair(na, nb, bool(fit), by))
    return pairs


def _unique_keys(names: list[str], key) -> dict[str, str]:
    seen: dict[str, list[str]] = defaultdict(list)
    for n in names:
        seen[key(n)].append(n)
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


def shape_class(t: TensorPrint) -> tuple[int, ...]:
    """Shapes equal up to transposition of a matrix share a class."""
    return tuple(sorted(t.shape)) if len(t.shape) == 2 else t.shape


def canonical_sketch(t: TensorPrint) -> tuple[np.ndarray, bool]:
    """The sketch in its shape class's orientation (rows ≤ columns) and whether it was flipped to get there."""
    flipped = len(t.shape) == 2 and t.shape != shape_class(t)
    return (t.sketch.T if flipped else t.sketch).astype(np.float64).reshape(-1), flipped


def sketch_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`sketch_distance` of every row of ``a`` with every row of ``b`` (one row of pairs at a time); NaN
    where a row holds NaN (callers leave such tensors out), without a warning on the console."""
    nb = np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore"):
        return np.stack([np.linalg.norm(b - row, axis=1) / np.maximum(np.linalg.norm(row) + nb, 1e-300) for row in a])


def _content_costs(ta: list[TensorPrint], tb: list[TensorPrint]) -> tuple[np.ndarray, np.ndarray]:
    """Costs of pairing tensors of one shape class (sketch distance in the better orientation + 0.1 × moment
    distance) and whether b is stored as a's transpose, both ``len(ta) × len(tb)``."""
    (sa, fa), (sb, fb) = (zip(*[canonical_sketch(t) for t in ts]) for ts in (ta, tb))
    dist = sketch_distances(np.stack(sa), np.stack(sb))
    flips = np.not_equal.outer(np.array(fa), np.array(fb))
    shape = ta[0].shape
    if len(shape) == 2 and shape[0] == shape[1]:  # a square matrix may be stored either way: take the better
        transposed = sketch_distances(np.stack(sa), np.stack([t.sketch.T.astype(np.float64).reshape(-1) for t in tb]))
        flips = transposed < dist
        dist = np.minimum(dist, transposed)
    costs = dist + 0.1 * moment_distances(ta, tb)
    # a tensor holding NaN or inf (a diverged run) pairs last, by the order left (the assignment refuses NaN)
    return np.where(np.isfinite(costs), costs, UNPAIRABLE), flips


#: Cost of pairing a tensor whose sketch or moments are not finite: above any real one (sketch distances are
#: at most 1, moment distances a few).
UNPAIRABLE = 1e6


def _assignment(costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Hungarian assignment; scipy.optimize is imported here, on first use: importing it costs ~0.3 s,
    which every CLI command would pay while only renamed tensors (ONNX exports) need it."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(costs)


def _pair_by_content(fa: Fingerprint, fb: Fingerprint, left_a: list[str], left_b: list[str]) -> list[TensorPair]:
    groups_a: dict[tuple[int, ...], list[str]] = defaultdict(list)
    groups_b: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for n in left_a:
        groups_a[shape_class(fa[n])].append(n)
    for n in left_b:
        groups_b[shape_class(fb[n])].append(n)
    pairs: list[TensorPair] = []
    for cls, names_a in groups_a.items():
        names_b = groups_b.get(cls)
        if not names_b:
            continue
        costs, flips = _content_costs([fa[n] for n in names_a], [fb[n] for n in names_b])
        rows, cols = _assignment(costs)
        pairs.extend(
            TensorPair(names_a[i], names_b[j], bool(flips[i, j]), "content", float(costs[i, j])) for i, j in zip(rows, cols)
        )
    return pairs


def content_correlation(fa: Fingerprint, fb: Fingerprint) -> tuple[float, int]:
    """Median sketch correlation of the matrices of ``fa`` and ``fb`` paired by content alone (names set
    aside: a student made of every other layer of its model holds its layer 2 as layer 1), and the number
    of pairs; NaN and 0 when no two matrices share a shape."""
    from ancestree.relate.evidence import correlation

    mats_a = [t.name for t in fa.tensors if t.is_matrix and t.is_finite]
    mats_b = [t.name for t in fb.tensors if t.is_matrix and t.is_finite]
    values = [correlation(fa[p.a].sketch, oriented(fb[p.b], p.transposed)) for p in _pair_by_content(fa, fb, mats_a, mats_b)]
    values = [v for v in values if v == v]
    return (float(np.median(values)), len(values)) if values else (float("nan"), 0)


def align(a: Fingerprint | Model, b: Fingerprint | Model) -> Alignment:
    """Pair the learned tensors of two models (fingerprinting them first when given as :class:`Model`)."""
    fa = a if isinstance(a, Fingerprint) else fingerprint(a)
    fb = b if isinstance(b, Fingerprint) else fingerprint(b)
    left_a, left_b = fa.names, fb.names
    pairs: list[TensorPair] = []
    passes = (
        lambda la, lb: _pair_by(lambda n: n, fa, fb, la, lb, "name"),
        lambda la, lb: _pair_by(normalise_name, fa, fb, la, lb, "prefix"),
        lambda la, lb: _pair_by_content(fa, fb, la, lb),
    )
    for step in passes:
        found = step(left_a, left_b)
        pairs.extend(found)
        used_a, used_b = {p.a for p in found}, {p.b for p in found}
        left_a = [n for n in left_a if n not in used_a]
        left_b = [n for n in left_b if n not in used_b]
    order = {n: i for i, n in enumerate(fa.names)}
    pairs.sort(key=lambda p: order[p.a])
    return Alignment(pairs, left_a, left_b)
