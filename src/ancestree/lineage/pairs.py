"""Open a child and its candidates, and pair their tensors for a weight-by-weight comparison.

Pairing is by name first (an optional leading prefix such as ``bert.`` ignored), then, for formats
that lose names (ONNX), by shape in storage order; a matrix stored transposed is turned back. A
candidate whose paired tensors cover less than :data:`MIN_COVERAGE` of the child's parameters is
*incomparable* (another architecture), which the methods report apart instead of ranking it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ancestree.errors import BadInputError
from ancestree.io.base import Model

#: Fraction of the child's learned parameters that must pair with a candidate's for a comparison.
MIN_COVERAGE = 0.5

Source = str | Path | Model


def open_model(source: Source) -> Model:
    """A :class:`Model` for a path (via :func:`ancestree.io.load_model`) or the model itself."""
    if isinstance(source, Model):
        return source
    from ancestree.io import load_model

    return load_model(source, model_id=str(source))


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``layer.10`` after ``layer.9`` (network order, not alphabetical)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


@dataclass(frozen=True)
class TensorPair:
    """A child tensor and the candidate tensor it corresponds to (``transpose``: candidate stored as Wᵀ)."""

    child: str
    candidate: str
    shape: tuple[int, ...]
    transpose: bool = False


def _strip(name: str) -> str:
    return name.split(".", 1)[1] if "." in name else name


def pair_tensors(child: Model, candidate: Model) -> list[TensorPair]:
    """Pairs of learned tensors of equal shape (up to a transpose), in the child's network order."""
    ct = {n: t for n, t in child.tensors.items() if t.learned}
    pt = {n: t for n, t in candidate.tensors.items() if t.learned}
    pairs: dict[str, TensorPair] = {}
    used: set[str] = set()

    def add(cn: str, pn: str) -> bool:
        cs, ps = ct[cn].shape, pt[pn].shape
        if cs == ps or (len(cs) == 2 and cs == ps[::-1]):
            pairs[cn] = TensorPair(cn, pn, cs, transpose=cs != ps)
            used.add(pn)
            return True
        return False

    for cn in ct:  # 1. same name
        if cn in pt:
            add(cn, cn)
    stripped = {}  # 2. same name once a leading prefix is dropped on either side
    for pn in pt:
        if pn not in used:
            stripped.setdefault(pn, pn)
            stripped.setdefault(_strip(pn), pn)
    for cn in ct:
        if cn not in pairs:
            for key in (cn, _strip(cn)):
                pn = stripped.get(key)
                if pn and pn not in used and add(cn, pn):
                    break
    left = [pn for pn in sorted(pt, key=natural_key) if pn not in used]  # 3. shape in order
    for cn in sorted(ct, key=natural_key):
        if cn in pairs:
            continue
        for pn in left:
            if pn not in used and add(cn, pn):
                break
    return [pairs[n] for n in sorted(pairs, key=natural_key)]


def coverage(child: Model, pairs: list[TensorPair]) -> float:
    """Fraction of the child's learned parameters that are paired."""
    total = sum(t.numel for t in child.tensors.values() if t.learned)
    return sum(child.tensors[p.child].numel for p in pairs) / total if total else 0.0


def incomparable_reason(child: Model, candidate: Model, pairs: list[TensorPair]) -> str | None:
    """Why ``candidate`` cannot be compared with ``child``, or None when it can."""
    cov = coverage(child, pairs)
    if cov >= MIN_COVERAGE:
        return None
    return (f"another architecture: only {cov:.0%} of the child's {child.parameters:,} parameters have a "
            f"counterpart among the candidate's {candidate.parameters:,}")


def read_pair(child: Model, candidate: Model, pair: TensorPair) -> tuple[np.ndarray, np.ndarray]:
    """The float32 values of one pair, the candidate's turned to the child's orientation."""
    c = np.asarray(child.read(pair.child), dtype=np.float32)
    p = np.asarray(candidate.read(pair.candidate), dtype=np.float32)
    return c, (p.T if pair.transpose else p)


def check_distinct(child: Source, candidates: list[Source]) -> None:
    """Refuse an empty candidate list (a usage error, reported like bad input)."""
    if not candidates:
        raise BadInputError(str(child) if not isinstance(child, Model) else child.id, "no candidates given")
