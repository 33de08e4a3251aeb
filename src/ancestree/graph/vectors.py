"""Fingerprints as vectors: models of one architecture become points whose distances mean something.

Models are grouped by architecture (the multiset of their matrix shapes, orientation ignored), so models of
different architectures are never compared; architectures whose matrices pair almost all with each other's
(:data:`FAMILY_SHARE` by name and shape: a fine-tune given a new task head or a resized vocabulary, and
its base) are one group, compared on the matrices every architecture of it holds. Within a group, every member's matrix tensors are lined up with a
reference member's (by name when names agree, else by :func:`ancestree.align.align`, which handles generic
ONNX names and transposed storage, against the named member nearest it: see :func:`_anchor`), and a fixed sample of each tensor's sketch entries becomes part of:

* ``U``: entries divided by the group's typical RMS of that tensor, weighted so that every tensor counts
  the same: ``‖U_a − U_b‖² = mean over tensors of (RMS distance / typical RMS)²``, a scale-free distance;
* ``Z``: entries standardised per tensor: ``Z_a · Z_b`` is the mean over tensors of the sketch correlation,
  ≈ 0 for independent trainings and close to 1 for relatives;
* ``A``: entries scaled to unit norm per tensor, so a block's dot product is the cosine of the two tensors'
  angle — blind to the uniform shrinking of weight decay, which moves a fine-tune in a direction that all
  its siblings share (:func:`angle_distances` turns it into the distance the tree is drawn on);
* per-tensor moments (kurtosis, log RMS, |skewness|, log absmax, zero share, precision) for direction.

Sketch index sets depend only on a dimension's length (:mod:`ancestree.fingerprint.sketch`), so the same
sample positions in two sketches are the same weights of the two models.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ancestree.align import TRANSPOSE_MARGIN, align, canonical_sketch, normalise_name, shape_class, sketch_distances
from ancestree.fingerprint import Fingerprint, TensorPrint
from ancestree.relate import precision_bits

#: Tensors with fewer entries than this (scalars, small constants of an ONNX export) are not part of a vector.
MIN_NUMEL = 64

#: Sketch entries sampled per tensor for the vectors (enough for correlations to ±0.06 on unrelated models).
SAMPLE = 256

#: Seed of the per-shape sample positions.
SAMPLE_SEED = 7310

#: Share of the larger architecture's matrices that the other holds under the same name and shape for two
#: architectures to be one group: a fine-tune with a new task head or a resized vocabulary keeps all but one
#: or two of its base's matrices (GPT-2: 49 of 50), a 6-layer model of a 12-layer design half of them.
FAMILY_SHARE = 0.75

#: Matrices an architecture may have outside its group's core: a head replaced (a pooler and a classifier for
#: a masked-LM head: two), a vocabulary resized (one, two with an untied output layer); or this share of a
#: large model's, if more. (A two-layer BERT classifier beside a resized-vocabulary fine-tune of its base
#: leaves three out.)
FAMILY_MISSING = 3
FAMILY_MISSING_SHARE = 0.05


def matrix_tensors(fp: Fingerprint) -> list[TensorPrint]:
    """The tensors that take part in vectors: two or more dimensions and at least :data:`MIN_NUMEL` entries,
    each learned matrix once: a tied copy (an ``lm_head`` holding the embedding's very values, which a
    ``.bin`` lists and its safetensors conversion drops) would make the two files two architectures.
    Constant matrices (zero-initialised layers) are kept: equal values there are no tie."""
    out, seen = [], set()
    for t in fp.tensors:
        if len(t.shape) < 2 or t.numel < MIN_NUMEL:
            continue
        if not t.is_buffer_like:
            if t.digest in seen:
                continue
            seen.add(t.digest)
        out.append(t)
    return out


def arch_key(fp: Fingerprint) -> tuple:
    """Models with equal keys have the same matrix shapes (up to transposition): one architecture.

    PEFT adapter folders hold weight *differences*, not weights: they get a key of their own kind.
    """
    shapes = tuple(sorted(shape_class(t) for t in matrix_tensors(fp)))
    return ("adapter", shapes) if fp.declared.adapter else ("model", shapes)


def _positions(size: int) -> np.ndarray:
    """Fixed sample positions in a flattened sketch of ``size`` entries (the same for every model)."""
    if size <= SAMPLE:
        return np.arange(size)
    rng = np.random.default_rng([SAMPLE_SEED, size])
    return np.sort(rng.choice(size, SAMPLE, replace=False))


@dataclass
class GroupVectors:
    """The vectors of one architecture group (rows follow ``ids``)."""

    ids: list[str]
    names: list[str]  # the reference member's tensor names, one per vector block
    U: np.ndarray  # scale-free distance vectors (n × D)
    Z: np.ndarray  # standardised correlation vectors (n × D)
    A: np.ndarray  # unit norm per tensor block (n × D)
    offsets: np.ndarray  # block j is columns offsets[j]:offsets[j+1]
    kurtosis: np.ndarray  # n × T
    log_rms: np.ndarray
    abs_skew: np.ndarray
    log_absmax: np.ndarray
    zeros: np.ndarray
    precision: np.ndarray  # n × T bits of precision (25 for float32, 9 for bfloat16, 8 for int8 ...)
    matched: np.ndarray  # n × T: the member has this tensor

    def index(self) -> dict[str, int]:
        return {m: i for i, m in enumerate(self.ids)}


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def _reference(fps: Sequence[Fingerprint]) -> Fingerprint:
    """The member whose matrix-tensor names are shared by most members (so most are matched by name); among
    those, the one of least content key, so the input order does not choose it."""
    sets = [frozenset(t.name for t in matrix_tensors(f)) for f in fps]
    counts = Counter(sets)
    most = max(counts.values())
    return min((f for f, s in zip(fps, sets) if counts[s] == most), key=lambda f: (f.content_key, f.id))


def _named_like(fp: Fingerprint, ref_tensors: list[TensorPrint]) -> bool:
    """Whether ``fp`` holds every reference tensor under its name and shape (no content alignment needed)."""
    return all(t.name in fp and fp[t.name].shape == t.shape for t in ref_tensors)


def _signature(fp: Fingerprint) -> dict[tuple[int, ...], np.ndarray]:
    """Canonical sketches of the tensors alone in their shape class (a patch embedding, a head): these pair
    up between two models without names or content alignment."""
    classes = Counter(shape_class(t) for t in fp.tensors)
    return {shape_class(t): canonical_sketch(t)[0] for t in fp.tensors if classes[shape_class(t)] == 1 and t.is_finite}


def _anchor(fp: Fingerprint, named: Sequence[Fingerprint], signatures: Sequence[dict]) -> Fingerprint | None:
    """The named member nearest ``fp`` on their shape-unique tensors (its likely relative), or None.

    Content alignment is only as good as the partner: tensors of one shape (a transformer's q, k, v and out
    projections) are told apart by their values, which an unrelated reference does not share, so a renamed
    copy (an ONNX export) aligned to it gets an arbitrary order and looks related to other exports instead
    of its original. Aligned to a relative, it gets its true order.
    """
    sig = _signature(fp)
    total = np.zeros(len(named))
    count = np.zeros(len(named))
    for key, mine in sig.items():
        rows = [(i, s[key]) for i, s in enumerate(signatures) if key in s and s[key].shape == mine.shape]
        if not rows:
            continue
        idx = np.array([i for i, _ in rows])
        total[idx] += sketch_distances(mine[None, :], np.stack([r for _, r in rows]))[0]
        count[idx] += 1
    if not count.any():
        return None
    return named[int(np.argmin(np.where(count > 0, total / np.maximum(count, 1), np.inf)))]


def _transposed_square(ref_tensors: list[TensorPrint], named: Sequence[Fingerprint]) -> np.ndarray:
    """``(len(named), len(ref_tensors))``: which square matrices of the named members are stored the other way
    round from the reference's (Linear vs Conv1D layout under the same names), as
    :func:`ancestree.align.orientation` decides it, one vectorised pass per matrix."""
    out = np.zeros((len(named), len(ref_tensors)), dtype=bool)
    for j, t in enumerate(ref_tensors):
        if len(t.shape) != 2 or t.shape[0] != t.shape[1] or not named:
            continue
        mine = t.sketch.astype(np.float64).reshape(1, -1)
        theirs = np.stack([f[t.name].sketch for f in named]).astype(np.float64)
        straight = sketch_distances(mine, theirs.reshape(len(named), -1))[0]
        flipped = sketch_distances(mine, theirs.transpose(0, 2, 1).reshape(len(named), -1))[0]
        out[:, j] = flipped < TRANSPOSE_MARGIN * straight
    return out


def _mapping(ref: Fingerprint, fp: Fingerprint, ref_tensors: list[TensorPrint],
             named: Sequence[Fingerprint], signatures: Sequence[dict], transposed: np.ndarray | None) -> dict[str, tuple[str, bool]]:
    """Reference tensor name -> (member tensor name, stored transposed); a renamed member is aligned by
    content to its nearest named member (:func:`_anchor`, ``signatures`` the named members' :func:`_signature`),
    whose names are the reference's. ``transposed``: a named member's row of :func:`_transposed_square` (None for
    a renamed member)."""
    if transposed is not None:  # a named member
        return {t.name: (t.name, bool(flag)) for t, flag in zip(ref_tensors, transposed)}
    partner = _anchor(fp, named, signatures) or ref
    return {p.a: (p.b, p.transposed) for p in align(partner, fp).pairs}


def _by_arch_key(fps: Sequence[Fingerprint]) -> dict[tuple, list[Fingerprint]]:
    """Fingerprints by :func:`arch_key`, in input order."""
    out: dict[tuple, list[Fingerprint]] = defaultdict(list)
    for f in fps:
        out[arch_key(f)].append(f)
    return out


def _named_shapes(fp: Fingerprint) -> dict[tuple[str, tuple[int, ...]], str]:
    """``(name without wrapper prefixes, shape class) -> name`` of a model's matrices: what two architectures
    compare on (``bert.encoder…`` of a classifier is ``encoder…`` of the bare model)."""
    return {(normalise_name(t.name), shape_class(t)): t.name for t in matrix_tensors(fp)}


def _name_sets(members: Sequence[Fingerprint]) -> list[frozenset]:
    """The distinct sets of :func:`_named_shapes` keys among one architecture's members (a renamed export has
    its own): an architecture answers to another by the set that shares most with it."""
    return list(dict.fromkeys(frozenset(_named_shapes(f)) for f in members))


def _narrow(cores: list[set], sets: list[frozenset]) -> list[set]:
    """Each candidate core cut down to what the one of ``sets`` sharing most with it shares."""
    return [c & max(sets, key=lambda s: len(c & s)) for c in cores]


def _core(fps: Sequence[Fingerprint]) -> tuple[Fingerprint, set[str]]:
    """The reference member and the names of its matrices that every architecture among ``fps`` holds
    under its name (all of them for one architecture). The reference holds them all by name, so models of
    every architecture line up with it by name, renamed exports by content as in one architecture."""
    archs = _by_arch_key(fps)
    if len(archs) == 1:
        ref = _reference(fps)
        return ref, {t.name for t in matrix_tensors(ref)}
    groups = [archs[k] for k in sorted(archs, key=lambda k: (-len(archs[k]), k))]  # as group_by_architecture placed them
    cores = [set(s) for s in _name_sets(groups[0])]
    for members in groups[1:]:
        cores = _narrow(cores, _name_sets(members))
    shared = max(cores, key=len)
    ref = _reference([f for f in fps if shared <= set(_named_shapes(f))])
    names = _named_shapes(ref)
    return ref, {names[k] for k in shared}


def group_vectors(fps: Sequence[Fingerprint]) -> GroupVectors:
    """Vectors of fingerprints of one architecture group (see the module docstring)."""
    ref, core = _core(fps)
    # masks are no lineage evidence: a matrix left out when it is one in every member (as pair evidence
    # leaves out a pair of them; a zero-initialised matrix trained in some members stays)
    ref_tensors = [t for t in matrix_tensors(ref) if t.name in core and not (t.is_buffer_like and all(
        f[t.name].is_buffer_like for f in fps if t.name in f))]
    n, T = len(fps), len(ref_tensors)
    blocks = [_positions(t.sketch.size) for t in ref_tensors]
    width = sum(len(b) for b in blocks)
    raw = np.zeros((n, width), dtype=np.float32)
    stats = {k: np.zeros((n, T)) for k in ("kurtosis", "log_rms", "abs_skew", "log_absmax", "zeros", "precision")}
    matched = np.zeros((n, T), dtype=bool)
    offsets = np.cumsum([0] + [len(b) for b in blocks])
    rows: dict[str, list[tuple[int, int, float]]] = {k: [] for k in stats}
    named = [f for f in fps if _named_like(f, ref_tensors)]
    signatures = [_signature(f) for f in named] if len(named) < len(fps) else []  # only renamed members need them
    flips = dict(zip(map(id, named), _transposed_square(ref_tensors, named)))
    for i, fp in enumerate(fps):
        mapping = _mapping(ref, fp, ref_tensors, named, signatures, flips.get(id(fp)))
        for j, t in enumerate(ref_tensors):
            if t.name not in mapping:
                continue
            name, transposed = mapping[t.name]
            tp = fp[name]
            sk = tp.sketch.T if transposed else tp.sketch
            if sk.shape != t.sketch.shape or not tp.is_finite:  # a NaN/inf tensor is compared with nothing
                continue
            matched[i, j] = True
            raw[i, offsets[j]:offsets[j + 1]] = sk.reshape(-1)[blocks[j]]
            rows["kurtosis"].append((i, j, _finite(tp.kurtosis)))
            rows["log_rms"].append((i, j, math.log(max(tp.rms, 1e-30))))
            rows["abs_skew"].append((i, j, abs(_finite(tp.skewness))))
            rows["log_absmax"].append((i, j, math.log(max(tp.absmax, 1e-30))))
            rows["zeros"].append((i, j, tp.zeros))
            rows["precision"].append((i, j, precision_bits(tp)))
    for key, values in rows.items():  # one vectorised assignment per statistic
        if values:
            ii, jj, vv = zip(*values)
            stats[key][list(ii), list(jj)] = vv
    U = np.zeros_like(raw)
    Z = np.zeros_like(raw)
    A = np.zeros_like(raw)
    for j in range(T):
        sl = slice(offsets[j], offsets[j + 1])
        w = 1.0 / np.sqrt(max(offsets[j + 1] - offsets[j], 1) * T)
        rms = np.exp(stats["log_rms"][matched[:, j], j])
        scale = float(np.median(rms)) if rms.size else 1.0
        U[:, sl] = raw[:, sl] * (w / max(scale, 1e-30))
        block = raw[:, sl] - raw[:, sl].mean(axis=1, keepdims=True)
        sd = block.std(axis=1, keepdims=True)
        Z[:, sl] = np.where(sd > 0, block / np.where(sd > 0, sd, 1.0), 0.0) * w
        norm = np.linalg.norm(raw[:, sl], axis=1, keepdims=True)
        A[:, sl] = raw[:, sl] / np.where(norm > 0, norm, 1.0)
    return GroupVectors([f.id for f in fps], [t.name for t in ref_tensors], U, Z, A, offsets, matched=matched, **stats)


#: Floor of ``1 − cos`` (float32 sketches of identical tensors).
MIN_ANGLE = 1e-9


def angle_distances(gv: GroupVectors, pairs: np.ndarray) -> np.ndarray:
    """``mean over shared tensors of log(1 − cos θ)`` of each pair: the log of a geometric mean of squared angles.

    Angles ignore the per-tensor scale (weight decay, an rsLoRA rescale), and the geometric mean keeps one
    fast-moving tensor (a re-initialised head) from deciding alone. Pairs sharing no tensor get 0 (far).
    """
    out = np.zeros(len(pairs))
    starts = gv.offsets[:-1]
    if len(starts) == 0 or len(pairs) == 0:
        return out
    for s in range(0, len(pairs), 2048):
        p = pairs[s:s + 2048]
        cos = np.add.reduceat(gv.A[p[:, 0]] * gv.A[p[:, 1]], starts, axis=1).astype(np.float64)
        both = gv.matched[p[:, 0]] & gv.matched[p[:, 1]]
        logs = np.log(np.maximum(1.0 - np.clip(cos, -1.0, 1.0), MIN_ANGLE))
        out[s:s + 2048] = np.where(both, logs, 0.0).sum(axis=1) / np.maximum(both.sum(axis=1), 1)
    return out


def _keeps(core: int, size: int) -> bool:
    """Whether an architecture of ``size`` matrices keeps enough of them in a group's core of ``core``:
    :data:`FAMILY_SHARE`, and no more than :data:`FAMILY_MISSING` (or :data:`FAMILY_MISSING_SHARE` of a
    large model's) left out."""
    return core >= FAMILY_SHARE * size and size - core <= max(FAMILY_MISSING, FAMILY_MISSING_SHARE * size)


def group_by_architecture(fps: Sequence[Fingerprint]) -> dict[tuple, list[Fingerprint]]:
    """Fingerprints by architecture group, in input order, keyed by the group's first :func:`arch_key`.

    Architectures join a group when the matrices all its members hold by name (wrapper prefixes aside) and
    shape (its core, what its models are compared on) still cover nearly all of each one's (:func:`_keeps`):
    a base and its fine-tunes given new heads or resized vocabularies. Architectures are placed in turn, the
    most common first (then by their shapes, so that the order of the inputs does not matter), each in the
    group that keeps the largest core: joined pair by pair, a chain of designs each sharing most matrices
    with the next ended with a core of none, and an unrelated model one layer short took a layer out of its
    neighbours' comparisons. Shapes alone would join unrelated designs of one width (a BERT and a ViT),
    compared on tensors paired by chance. An architecture answers by the name set of its members that
    matches best (a renamed export among them has its own). Adapters stay by key."""
    exact = _by_arch_key(fps)
    order = {k: i for i, k in enumerate(exact)}
    families: list[tuple[list[tuple], list[set], list[int]]] = []  # keys, candidate cores, member sizes
    for key in sorted((k for k in exact if k[0] == "model"), key=lambda k: (-len(exact[k]), k)):
        size, sets = len(key[1]), _name_sets(exact[key])
        best: tuple[int, int, list[set]] | None = None
        for f, (_, cores, sizes) in enumerate(families):
            if size < FAMILY_SHARE * max(sizes) or max(len(c) for c in cores) < FAMILY_SHARE * size:
                continue  # cannot keep enough: spares the intersections
            kept = [c for c in _narrow(cores, sets) if all(_keeps(len(c), n) for n in (*sizes, size))]
            if kept and (best is None or max(map(len, kept)) > best[0]):
                best = (max(map(len, kept)), f, kept)
        if best is None:
            families.append(([key], [set(s) for s in sets], [size]))
        else:
            keys, _, sizes = families[best[1]]
            keys.append(key)
            sizes.append(size)
            families[best[1]] = (keys, best[2], sizes)
    name = {k: k for k in exact}
    for keys, _, _ in families:
        first = min(keys, key=order.__getitem__)
        name.update((k, first) for k in keys)
    groups: dict[tuple, list[Fingerprint]] = defaultdict(list)
    for fp in fps:
        groups[name[arch_key(fp)]].append(fp)
    return dict(groups)


#: A lone architecture sharing at least this share of its matrices (named alike) with another group is said
#: to be near it: a model with layers added, dropped or renumbered, which is never compared with that group.
NEAR_SHARE = 0.5


def near_architectures(groups: dict[tuple, list[Fingerprint]]) -> list[tuple[list[Fingerprint], list[Fingerprint], int, int]]:
    """Models alone in their group whose architecture shares at least :data:`NEAR_SHARE` of its matrices by
    name and shape with another group's of no fewer matrices, yet too few to be compared with it: ``([the
    model], the models of the nearest group, matrices shared, matrices of its own)`` each (what a user asks when
    a model stands alone beside its evident base: a student made of every other layer of it). Each lone model
    counts its matrices in the groups holding them (one look-up each, not one comparison per group)."""
    holders: dict[tuple, list[tuple]] = defaultdict(list)
    for key, members in groups.items():
        if key[0] == "model":
            for named in set().union(*_name_sets(members)):
                holders[named].append(key)
    out = []
    for key, members in groups.items():
        if key[0] != "model" or len(members) > 1 or not key[1]:  # a model alone (a group has its own relatives)
            continue
        counts = Counter(other for named in _named_shapes(members[0]) for other in holders[named] if other != key)
        if not counts:
            continue
        nearest, shared = counts.most_common(1)[0]
        # said of the smaller of the two (the one with layers dropped), once
        if shared >= NEAR_SHARE * len(key[1]) and len(key[1]) <= len(nearest[1]):
            out.append((members, groups[nearest], shared, len(key[1])))
    return out


__all__ = ["GroupVectors", "angle_distances", "arch_key", "group_by_architecture", "group_vectors", "matrix_tensors",
           "near_architectures"]
