"""Evidence about a pair of models, from two fingerprints and their alignment: numbers, not decisions.

Per aligned tensor pair (:class:`LayerEvidence`) and for the whole pair (:class:`PairEvidence`):
identical content, sketch distances (estimates of the full RMS distance), correlation, the numerical
rank of the difference, quantization and pruning cues and moment deltas for direction. Distances are
relative to model ``a`` (the first argument): ``rel_distance = ‖W_b − W_a‖ / ‖W_a‖``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ancestree.align import Alignment, TensorPair, align, oriented
from ancestree.errors import IncomparableError
from ancestree.fingerprint import Fingerprint, TensorPrint
from ancestree.fingerprint.types import both_buffers
from ancestree.relate.precision import QUANTIZED_RATIO, precision_bits, quantization_noise, rounding_limit
from ancestree.relate.update import squared_singular_values

#: Singular values below this fraction of the largest are numerical zeros (float64 SVD of float32 data).
RANK_RTOL = 1e-4

#: Singular values below this multiple of the expected largest singular value of pure storage noise are noise.
NOISE_MARGIN = 3.0

#: What the rank of a difference between coarsely stored models may leave: at most this multiple of the
#: rounding noise's own energy in the rest of the matrix. Pure rounding leaves 0.6-0.8 of it (the two models
#: round alike where the update is below a step). Cast to bfloat16, the full fine-tunes of the ``wild`` zoo
#: read as low-rank adapters on 12 of 38 pairs (31.6 %) with the noise bound alone, 3 with this rule (1.5;
#: 4 at 2), ``lineage`` 1 of 46 and 0; its LoRA merges and all 52 of ``vthr-lora`` stay adapters at both.
NOISE_EXCESS = 1.5

#: Low-rank cues only mean something on sketches with at least this many rows and columns.
MIN_RANK_SIDE = 16

#: The median correlation counts layers whose sketch has at least this many values (fewer are noise).
MIN_CORRELATION_VALUES = 64


def low_rank_limit(side: int) -> int:
    """The largest rank of a difference that reads as a low-rank (LoRA) update of a ``side``-wide matrix.

    Half the side: a rank-r LoRA of an m x n matrix stores r(m + n) numbers, as many as the matrix itself
    once r reaches mn / (m + n) (half the side of a square matrix), so nobody trains a LoRA that wide;
    full fine-tunes measured on the zoos have difference ranks of 0.63-1.0 of the side, merged LoRAs of
    ranks 1-16 at most 0.46.
    """
    return side // 2


@dataclass
class LayerEvidence:
    """What one aligned tensor pair says (sketch-based numbers estimate the full tensors)."""

    a: str
    b: str
    shape: tuple[int, ...]
    numel: int
    transposed: bool
    identical: bool
    rms_a: float
    rms_b: float
    distance: float  # RMS of W_b - W_a, estimated from the sketches
    rel_distance: float  # distance / rms_a
    correlation: float  # Pearson correlation of the sketches (NaN when one is constant)
    diff_rank: int | None  # numerical rank of the sketch difference (matrices only)
    rank_limit: int | None  # the largest rank the sketch can show: min(sketch rows, cols)
    quant_ratio: float | None  # distance / storage noise of the coarser side (when precisions differ)
    quant_limit: float | None  # the most a copy stored as the coarser side can show (rounding_limit)
    zeros_a: float
    zeros_b: float
    nonzero_rel_distance: float  # rel. distance on entries non-zero on both sides (pruning cue)
    kurtosis_a: float
    kurtosis_b: float

    @property
    def is_matrix(self) -> bool:
        return self.rank_limit is not None


#: How far one matrix of a rounded copy may go past the bound a copy's median keeps (a Q4 copy's 17×32
#: position embedding, one block short of its levels, read 1.53 against 1.5); a LoRA's changed matrices are
#: tens to hundreds of rounding steps away.
ROUNDING_SPREAD = 2.0


@dataclass
class PairEvidence:
    """The evidence about models ``a`` and ``b`` (numbers only; see :func:`ancestree.relate.verdict`)."""

    a: str
    b: str
    layers: list[LayerEvidence]
    unpaired_a: list[str] = field(default_factory=list)
    unpaired_b: list[str] = field(default_factory=list)
    non_finite: list[str] = field(default_factory=list)  # paired tensors left out: NaN or inf on either side
    buffers: list[str] = field(default_factory=list)  # paired tensors left out: masks / constants on both sides
    coverage_a: float = 0.0  # fraction of a's parameters that are paired
    coverage_b: float = 0.0
    identical_fraction: float = 0.0  # fraction of paired parameters with identical content
    distance: float = 0.0  # parameter-weighted RMS distance over paired matrices (all tensors if none)
    rel_distance: float = 0.0  # ‖ΔW‖ / ‖W_a‖ over the same
    mean_layer_distance: float = 0.0  # MoTHer-style: mean over matrices of per-layer RMS distance
    correlation: float = float("nan")  # median per-layer correlation (sketches of >= MIN_CORRELATION_VALUES)
    precision_a: float = 0.0  # parameter-weighted mean bits of precision
    precision_b: float = 0.0
    quant_ratio: float | None = None  # median over changed layers; ~1 for a rounded copy
    quant_limit: float = QUANTIZED_RATIO  # median over the same layers of the most a rounded copy shows
    zeros_delta: float = 0.0  # zero fraction of b minus that of a (parameter-weighted)
    nonzero_rel_distance: float = 0.0
    changed_matrices: int = 0  # matrices (sketch side >= MIN_RANK_SIDE) that differ beyond storage noise
    low_rank_matrices: int = 0  # ... of which the difference has rank <= half the sketch side
    max_rank: int = 0  # largest difference rank among changed matrices
    kurtosis_delta: float = 0.0  # mean over matrices of kurtosis_a - kurtosis_b (direction cue)
    norm_ratio: float = 1.0  # ‖W_b‖ / ‖W_a‖ over paired matrices (weight decay shrinks children)
    chance_correlation: float = 0.0  # deviation of one layer's correlation between independent weights: 1/√(median sketch size)

    @property
    def low_rank_fraction(self) -> float:
        return self.low_rank_matrices / self.changed_matrices if self.changed_matrices else 0.0

    @property
    def within_rounding(self) -> bool:
        """The models differ as a rounded copy and its source do: their median ``quant_ratio`` within
        ``quant_limit``, and every one of those layers (:func:`rounded_layers`) within :data:`ROUNDING_SPREAD`
        of its own bound. The median alone was not enough: a LoRA merged into 4 of 14 matrices of a model
        kept the 10 others at float16's rounding from the base's float16 copy, and the merge read as that
        copy's "quantized" copy."""
        if self.quant_ratio is None or self.quant_ratio > self.quant_limit:
            return False
        return all(l.quant_ratio is not None and l.quant_limit is not None
                   and l.quant_ratio <= ROUNDING_SPREAD * l.quant_limit for l in rounded_layers(self.layers))

    @property
    def varying_layers(self) -> int:
        """Paired tensors that vary on both sides (a finite correlation). A pair with a constant side (all
        zeros, one fill value) has a distance that only measures the other side's size: no lineage evidence."""
        return sum(1 for l in self.layers if math.isfinite(l.correlation))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: NaN becomes ``None``; shapes become lists."""
        out = asdict(self)
        out["low_rank_fraction"] = self.low_rank_fraction
        out["varying_layers"] = self.varying_layers
        return _clean(out)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def same_content(ta: TensorPrint, tb: TensorPrint, transposed: bool) -> bool:
    """Identical values: equal digest in the same layout; equal layout hash and sketch when transposed."""
    if not transposed:
        return ta.digest == tb.digest
    return ta.layout_hash == tb.layout_hash and np.array_equal(ta.sketch, tb.sketch.T)


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two sketches; NaN when either is constant or empty."""
    if x.size == 0 or y.size == 0:  # a zero-size tensor: numpy warned of an empty mean on stderr
        return float("nan")
    x = x.astype(np.float64).ravel() - x.mean(dtype=np.float64)
    y = y.astype(np.float64).ravel() - y.mean(dtype=np.float64)
    denom = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denom if denom > 0 else float("nan")


def difference_rank(diff: np.ndarray, noise_rms: float) -> int:
    """Numerical rank of a sketch difference, ignoring what storage rounding alone would produce.

    The largest singular value of a p×q matrix of i.i.d. noise of RMS σ is about σ(√p + √q); singular
    values below :data:`NOISE_MARGIN` times that, or below :data:`RANK_RTOL` of the largest, are zeros.
    And what the rank leaves must look like rounding noise too (at most :data:`NOISE_EXCESS` times its
    energy), else the rank grows until it does: a full fine-tune stored in bfloat16 has most of its singular
    values below the bound, and was read as a merged LoRA of the few above it; a LoRA's own smallest
    singular values may sink below the bound as well, and are counted back the same way.
    """
    if not diff.any():
        return 0
    s = np.sqrt(squared_singular_values(diff))[::-1]  # error ~1e-8 of the largest: far below both tolerances
    p, q = diff.shape
    rank = int(np.sum(s > max(RANK_RTOL * s[0], NOISE_MARGIN * noise_rms * (math.sqrt(p) + math.sqrt(q)))))
    if noise_rms > 0:
        left = np.cumsum((s**2)[::-1])[::-1]  # left[k]: the energy beyond the k largest singular values
        while rank < len(s) and left[rank] > NOISE_EXCESS * noise_rms**2 * (p - rank) * (q - rank):
            rank += 1
    return rank


def layer_evidence(ta: TensorPrint, tb: TensorPrint, pair: TensorPair, ranks: bool = True) -> LayerEvidence:
    """The evidence of one aligned pair (``ranks=False`` skips the SVD: ``diff_rank`` is then ``None``)."""
    sa = ta.sketch.astype(np.float64)
    sb = oriented(tb, pair.transposed).astype(np.float64)
    diff = sb - sa
    identical = same_content(ta, tb, pair.transposed)
    distance = 0.0 if identical else float(np.sqrt(np.mean(diff * diff))) if diff.size else 0.0
    both = (sa != 0) & (sb != 0)
    nz_norm = float(np.linalg.norm(sa[both]))
    noise_a, noise_b = quantization_noise(ta), quantization_noise(tb)
    quant_ratio = quant_limit = None
    bits_a, bits_b = precision_bits(ta), precision_bits(tb)
    if bits_a != bits_b:
        coarse = max(noise_a, noise_b)
        quant_ratio = distance / coarse if coarse > 0 else (0.0 if distance == 0 else math.inf)
        quant_limit = rounding_limit(ta if bits_a < bits_b else tb)
    rank = limit = None
    if ta.is_matrix and diff.ndim == 2:
        limit = int(min(diff.shape))
        if ranks:
            rank = 0 if identical else difference_rank(diff, math.hypot(noise_a, noise_b))
    return LayerEvidence(
        a=pair.a,
        b=pair.b,
        shape=ta.shape,
        numel=ta.numel,
        transposed=pair.transposed,
        identical=identical,
        rms_a=ta.rms,
        rms_b=tb.rms,
        distance=distance,
        rel_distance=distance / ta.rms if ta.rms > 0 else (0.0 if distance == 0 else math.inf),
        correlation=1.0 if identical and ta.variance > 0 else correlation(sa, sb),
        diff_rank=rank,
        rank_limit=limit,
        quant_ratio=quant_ratio,
        quant_limit=quant_limit,
        zeros_a=ta.zeros,
        zeros_b=tb.zeros,
        nonzero_rel_distance=float(np.linalg.norm(diff[both])) / nz_norm if nz_norm > 0 else 0.0,
        kurtosis_a=ta.kurtosis,
        kurtosis_b=tb.kurtosis,
    )


def _weighted(values: list[float], weights: list[float]) -> float:
    w = np.asarray(weights, dtype=np.float64)
    return float(np.dot(values, w) / w.sum()) if w.sum() > 0 else 0.0


def _tied(fp: Fingerprint, unpaired: Sequence[str], paired: Sequence[str]) -> int:
    """Parameters of unpaired tensors that hold the very values of a paired one of the same model: tied
    weights (an ``lm_head`` sharing the embedding), which one file lists twice and another once."""
    digests = {fp[name].digest for name in paired}
    return sum(fp[name].numel for name in unpaired if fp[name].digest in digests)


def rounded_layers(layers: Sequence[LayerEvidence]) -> list[LayerEvidence]:
    """The changed layers stored at different precisions, on which rounding is judged: the matrices (all such
    tensors if no matrix differs in precision): a GGUF keeps its biases in float32, finer than a float16
    relative's, and three such biases outvoted three 4-bit matrices."""
    rounded = [l for l in layers if not l.identical and l.quant_ratio is not None]
    return [l for l in rounded if l.is_matrix] or rounded


def summarise(fa: Fingerprint, fb: Fingerprint, layers: list[LayerEvidence], alignment: Alignment,
              non_finite: Sequence[str] = (), buffers: Sequence[str] = ()) -> PairEvidence:
    """Aggregate per-layer evidence into model-level numbers (parameter-weighted where it matters)."""
    n = [float(l.numel) for l in layers]
    # paired but left out: masks (no parameters to cover) and tensors holding NaN (they pair, unreadable);
    # each pair has one size on both sides
    masked = sum(fa[name].numel for name in (*buffers, *non_finite))
    paired_b = sum(fb[l.b].numel for l in layers) + _tied(fb, alignment.unpaired_b, [l.b for l in layers])
    tied_a = _tied(fa, alignment.unpaired_a, [l.a for l in layers])
    matrices = [l for l in layers if l.is_matrix]
    # Distances pool the matrices (all tensors if there are none): gains and biases have large means and
    # tiny spreads (LayerNorm gains ≈ 1), which would pull the relative distance of unrelated models off √2.
    pooled = matrices or layers
    sq_diff = sum(l.numel * l.distance**2 for l in pooled)
    sq_a = sum(l.numel * l.rms_a**2 for l in pooled)
    sq_b = sum(l.numel * l.rms_b**2 for l in pooled)
    n_pooled = sum(l.numel for l in pooled)
    counted = [l for l in layers if np.isfinite(l.correlation) and _sketch_size(fa[l.a]) >= MIN_CORRELATION_VALUES]
    corrs = [l.correlation for l in counted]
    rounded = rounded_layers(layers)
    ratios = [l.quant_ratio for l in rounded if l.quant_ratio is not None]  # all of them (for the type)
    limits = [l.quant_limit for l in rounded if l.quant_limit is not None]
    # Matrices whose difference rises above storage noise (rank 0 = within rounding of an identical copy).
    rankable = [l for l in matrices if (l.rank_limit or 0) >= MIN_RANK_SIDE and (l.diff_rank or 0) > 0]
    low = [l for l in rankable if (l.diff_rank or 0) <= low_rank_limit(l.rank_limit or 0)]
    kurt = [l.kurtosis_a - l.kurtosis_b for l in matrices if np.isfinite(l.kurtosis_a - l.kurtosis_b)]
    nz_terms = [(l.nonzero_rel_distance * l.rms_a) ** 2 * l.numel for l in pooled]
    return PairEvidence(
        a=fa.id,
        b=fb.id,
        layers=layers,
        unpaired_a=list(alignment.unpaired_a),
        unpaired_b=list(alignment.unpaired_b),
        non_finite=list(non_finite),
        buffers=list(buffers),
        coverage_a=(sum(n) + tied_a) / max(sum(t.numel for t in fa.tensors) - masked, 1),
        coverage_b=paired_b / max(sum(t.numel for t in fb.tensors) - masked, 1),
        identical_fraction=sum(l.numel for l in layers if l.identical) / max(sum(n), 1.0),
        distance=math.sqrt(sq_diff / max(n_pooled, 1)),
        rel_distance=math.sqrt(sq_diff / sq_a) if sq_a > 0 else 0.0,
        mean_layer_distance=float(np.mean([l.distance for l in matrices])) if matrices else 0.0,
        correlation=float(np.median(corrs)) if corrs else float("nan"),
        precision_a=_weighted([precision_bits(fa[l.a]) for l in layers], n),
        precision_b=_weighted([precision_bits(fb[l.b]) for l in layers], n),
        quant_ratio=float(np.median(ratios)) if ratios else None,
        quant_limit=float(np.median(limits)) if limits else QUANTIZED_RATIO,
        zeros_delta=_weighted([l.zeros_b - l.zeros_a for l in layers], n),
        nonzero_rel_distance=math.sqrt(sum(nz_terms) / sq_a) if sq_a > 0 else 0.0,
        changed_matrices=len(rankable),
        low_rank_matrices=len(low),
        max_rank=max((l.diff_rank or 0 for l in rankable), default=0),
        kurtosis_delta=float(np.mean(kurt)) if kurt else 0.0,
        norm_ratio=math.sqrt(sq_b / sq_a) if sq_a > 0 else 1.0,
        chance_correlation=1.0 / math.sqrt(float(np.median([_sketch_size(fa[l.a]) for l in counted]))) if counted else 0.0,
    )


def _sketch_size(t: TensorPrint) -> int:
    return int(t.sketch.size)


def relate(fa: Fingerprint, fb: Fingerprint, alignment: Alignment | None = None, *, ranks: bool = True) -> PairEvidence:
    """All evidence about the pair ``(fa, fb)``; raises :class:`IncomparableError` when no tensor pairs.

    ``ranks=False`` skips the per-matrix SVD (half the time of a pair; the low-rank cues are then empty),
    for all-pairs screens over many models.
    """
    if fa.spec != fb.spec:
        raise IncomparableError(fb.id, f"fingerprinted with other sketch settings than {fa.id}; refingerprint both")
    empty = next((f for f in (fa, fb) if not f.tensors), None)
    if empty is not None:
        raise IncomparableError(empty.id, "holds no floating-point (learned) tensor: nothing to compare")
    alignment = alignment if alignment is not None else align(fa, fb)
    if not alignment.pairs:
        raise IncomparableError(fb.id, f"shares no tensor (by name or shape) with {fa.id}: different architectures?")
    # a tensor holding NaN or inf (a diverged checkpoint) says nothing about lineage: compare the rest
    pairs = [p for p in alignment.pairs if fa[p.a].is_finite and fb[p.b].is_finite]
    left_out = [p.a for p in alignment.pairs if not (fa[p.a].is_finite and fb[p.b].is_finite)]
    # masks and fill values on both sides are buffers, not weights: unrelated models share them too
    buffers = [p.a for p in pairs if both_buffers(fa[p.a], fb[p.b])]
    pairs = [p for p in pairs if not both_buffers(fa[p.a], fb[p.b])]
    if not pairs and buffers:
        raise IncomparableError(fb.id, f"shares only masks or constant tensors with {fa.id}: nothing to compare")
    if not pairs:
        bad = fa if not all(t.is_finite for t in fa.tensors) else fb
        raise IncomparableError(bad.id, "holds NaN or infinite values in every tensor the pair shares: nothing to compare")
    layers = [layer_evidence(fa[p.a], fb[p.b], p, ranks) for p in pairs]
    return summarise(fa, fb, layers, alignment, left_out, buffers)
