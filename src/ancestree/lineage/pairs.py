"""Open a child and its candidates, and pair their tensors for a weight-by-weight comparison.

Pairing is :func:`ancestree.align.align`'s (names, wrapper prefixes, then content for formats that lose
names such as ONNX; a matrix stored transposed is turned back). A
candidate whose paired tensors cover less than :data:`MIN_COVERAGE` of the child's parameters is
*incomparable* (another architecture), which the methods report apart instead of ranking it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ancestree.errors import BadInputError
from ancestree.align import align
from ancestree.fingerprint import Fingerprint, fingerprint
from ancestree.io.base import Model
from ancestree.io.loader import model_files

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


def pair_tensors(child: Model, candidate: Model, child_print: Fingerprint | None = None,
                 candidate_print: Fingerprint | None = None) -> list[TensorPair]:
    """Pairs of learned tensors (via :func:`ancestree.align.align`: names, prefixes, then content), in the
    child's network order. ``child_print`` and ``candidate_print`` save fingerprinting the models again."""
    alignment = align(child_print or fingerprint(child), candidate_print or fingerprint(candidate))
    pairs = [TensorPair(p.a, p.b, child.tensors[p.a].shape, p.transposed) for p in alignment]
    return sorted(pairs, key=lambda p: natural_key(p.child))


def coverage(child: Model, pairs: list[TensorPair]) -> float:
    """Fraction of the child's learned entries that are paired."""
    total = child.entries  # as read: a PEFT child's dense updates, not its low-rank factors
    return sum(child.tensors[p.child].numel for p in pairs) / total if total else 0.0


def adapter_config_of(source: Source) -> dict | None:
    """The ``adapter_config.json`` of a PEFT adapter folder, None for a whole model (a model opened here is
    closed again)."""
    model = open_model(source)
    try:
        return model.meta.adapter_config
    finally:
        if model is not source:
            model.close()


def adapter_reason(config: dict | None) -> str | None:
    """Why a PEFT adapter (its ``config``) cannot stand as a candidate parent; None for a whole model
    (``config`` None). It holds low-rank updates, not a network; its base, or the adapter merged into it, can."""
    if config is None:
        return None
    base = config.get("base_model_name_or_path")
    return ("a PEFT adapter (low-rank updates" + (f" of {base}" if base else "") + "), not a whole model: give its base, "
            "or the adapter merged into it, as the candidate")


def incomparable_reason(child: Model, candidate: Model, pairs: list[TensorPair]) -> str | None:
    """Why ``candidate`` cannot be compared with ``child``, or None when it can."""
    if child.meta.adapter_config is None and (reason := adapter_reason(candidate.meta.adapter_config)):
        return reason
    cov = coverage(child, pairs)
    if cov >= MIN_COVERAGE:
        return None
    return (f"another architecture: only {cov:.0%} of the child's {child.entries:,} weights have a "
            f"counterpart among the candidate's {candidate.entries:,}")


def read_pair(child: Model, candidate: Model, pair: TensorPair) -> tuple[np.ndarray, np.ndarray]:
    """The float32 values of one pair, the candidate's turned to the child's orientation."""
    c = np.asarray(child.read(pair.child), dtype=np.float32)
    p = np.asarray(candidate.read(pair.candidate), dtype=np.float32)
    return c, (p.T if pair.transpose else p)


def check_distinct(child: Source, candidates: list[Source]) -> None:
    """Refuse an empty candidate list, a candidate given twice (by any path), or the child itself among its
    candidates (usage errors, reported like bad input)."""
    name = str(child) if not isinstance(child, Model) else child.id
    if not candidates:
        raise BadInputError(name, "no candidates given")
    # the same model twice split its probability with itself; by another path too: a link, or a folder and
    # one of its own weight files (as for the child below)
    seen: dict[Path, str | Path] = {}  # the paths among the candidates (models given open are not)
    for c in candidates:
        if isinstance(c, Model):
            continue
        key = Path(c).resolve()
        if key in seen:
            raise BadInputError(c, f"given twice among the candidates (also as {seen[key]})")
        seen[key] = c
    for folder, c in [(k, c) for k, c in seen.items() if k.is_dir()]:
        for own in model_files(folder):  # a folder, and one of the very files it is read from
            if own in seen:
                raise BadInputError(seen[own], f"given twice among the candidates (also as {c}, whose weights it holds)")
    if not isinstance(child, Model):
        itself = Path(child).resolve()
        # by another path too: a symlink to the child's folder or to one of its weight files (a folder below
        # the child's is no copy: a Trainer run keeps its checkpoints there, run/checkpoint-500/)
        if any(not isinstance(c, Model) and (itself == (other := Path(c).resolve()) or (other.is_file() and other.parent == itself))
               for c in candidates):
            raise BadInputError(name, "is also among its own candidates")
