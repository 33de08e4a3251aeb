"""One word about a pair from its evidence: a readable summary, not the graph's decision.

The thresholds below are for a pair looked at alone; tree recovery (``ancestree.graph``) weighs the same
numbers across many models and calibrates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ancestree.errors import IncomparableError
from ancestree.fingerprint import Fingerprint
from ancestree.fingerprint.types import resolve_name
from ancestree.relate.evidence import MIN_CORRELATION_VALUES, PairEvidence

#: Verdict kinds, most specific first, with their human labels. Kinds reuse the contract's relation names.
KINDS = {
    "duplicate": "same weights",
    "quantized": "quantized",
    "pruned": "pruned",
    "adapter": "low-rank adapter",
    "finetune": "fine-tuned relative",
    "unrelated": "unrelated",
    "unknown": "relation unknown",
}

# Independently trained networks have independent weights: the correlation of matching entries is ~0 and
# ‖a − b‖² ≈ ‖a‖² + ‖b‖², so the relative distance is ≈ √2 for equal scales. Fine-tunes keep most of the
# parent (correlation typically > 0.9, relative distance < 0.5). Below UNRELATED_CORRELATION with a
# relative distance above UNRELATED_DISTANCE nothing of a shared ancestor is left to see.
UNRELATED_CORRELATION = 0.2
UNRELATED_DISTANCE = 0.8
# Small tensors correlate by chance: between independent weights a layer's sketch correlation deviates by
# 1/√(values), 0.06 for a 16×16 matrix, so 0.2 is 3 deviations there. A correlation counts only when it
# also stands CHANCE_DEVIATIONS above chance (0.25 for 16×16; large layers keep the 0.2 line).
CHANCE_DEVIATIONS = 4.0

# A rounded copy differs by about one storage step of the coarser dtype (ancestree.relate.precision):
# ev.quant_ratio ≤ ev.quant_limit (QUANTIZED_RATIO against a step bounded by the largest entry,
# QUANTIZED_STEP_RATIO against a step measured block by block).

# Pruning zeroes a visible share of the weights (≥ 5 points more exact zeros) and leaves the rest alone:
# the surviving entries differ by < 5% (exactly 0 for a plain pruned copy; a short recovery fine-tune
# after pruning stays within it).
PRUNED_ZEROS = 0.05
PRUNED_NONZERO_DISTANCE = 0.05

# A merged LoRA of rank r changes a matrix by a rank-r update; its sketch difference has rank ≤ r, while
# a full fine-tune gives a full-rank sketch difference. Rank ≤ half the sketch side (``low_rank_limit``) on at least
# 80% of the changed matrices (heads trained in full are the usual exceptions) reads as an adapter.
LOW_RANK_SHARE = 0.8

# Identical content on (nearly) every paired parameter: the same weights, maybe renamed or re-exported.
DUPLICATE_SHARE = 0.999
# ... and the pairs hold most of both models' parameters: an export may drop a buffer or tie a weight, but a
# model identical on half its tensors and reshaped on the rest is another architecture, not a copy.
DUPLICATE_COVERAGE = 0.9


@dataclass(frozen=True)
class Verdict:
    """``kind`` is a key of :data:`KINDS`; ``reason`` one sentence with the numbers behind it."""

    kind: str
    reason: str

    @property
    def label(self) -> str:
        return KINDS[self.kind]


def same_weights(ev: PairEvidence) -> bool:
    """Identical values on the paired tensors, and those hold (nearly) all of both models' parameters."""
    return ev.identical_fraction >= DUPLICATE_SHARE and min(ev.coverage_a, ev.coverage_b) > DUPLICATE_COVERAGE


def verdict(ev: PairEvidence) -> Verdict:
    """Classify a pair: same weights, quantized, pruned, low-rank adapter, fine-tuned relative or unrelated."""
    if ev.identical_fraction >= DUPLICATE_SHARE:
        reshaped = len(set(ev.unpaired_a) & set(ev.unpaired_b))  # one name, other shapes (a resized vocabulary)
        heads = len(ev.unpaired_a) + len(ev.unpaired_b) - 2 * reshaped
        extra = f"; {heads} tensor(s) present on one side only" if heads else ""
        extra += f"; {reshaped} tensor(s) of other shapes on the two sides" if reshaped else ""
        extra += f"; {len(ev.non_finite)} tensor(s) holding NaN or infinite values left out" if ev.non_finite else ""
        extra += f"; {len(ev.buffers)} mask or constant tensor(s) left out" if ev.buffers else ""
        identical = f"{ev.identical_fraction:.1%} of the {len(ev.layers)} paired tensors hold identical values{extra}"
        if same_weights(ev):
            return Verdict("duplicate", f"{identical}.")
        return Verdict("finetune", f"{identical}, but they hold only {ev.coverage_a:.0%} of a's and {ev.coverage_b:.0%} "
                                   "of b's parameters: the same weights with other tensors or shapes beside them "
                                   "(another head or architecture), not a copy.")
    if not ev.varying_layers:  # zeros or constants against anything: every cue below would be vacuous
        return Verdict("unknown", f"no evidence to compare: each of the {len(ev.layers)} paired tensors is constant "
                                  "(all zeros or one value) in at least one model, so neither correlation nor "
                                  "distance can tell how the weights are related.")
    corr = ev.correlation
    correlated = corr == corr and corr >= max(UNRELATED_CORRELATION, CHANCE_DEVIATIONS * ev.chance_correlation)
    if not correlated and ev.rel_distance > UNRELATED_DISTANCE:
        return Verdict("unrelated", f"matching weights are {_correlated(corr, 'uncorrelated')} and far apart (relative distance {ev.rel_distance:.2f}, √2 ≈ 1.41 for independent training).")
    if ev.within_rounding and ev.precision_a != ev.precision_b:
        coarse = "b" if ev.precision_b < ev.precision_a else "a"
        low, high = sorted((ev.precision_a, ev.precision_b))
        digits = 0 if high - low >= 1 else 1  # a conversion (bfloat16 values in float16) is half a bit coarser
        return Verdict("quantized", f"model {coarse} is stored coarser ({low:.{digits}f} vs {high:.{digits}f} effective bits) and the models differ by {ev.quant_ratio:.2f}× its rounding step.")
    if abs(ev.zeros_delta) >= PRUNED_ZEROS and ev.nonzero_rel_distance <= PRUNED_NONZERO_DISTANCE:
        side = "b" if ev.zeros_delta > 0 else "a"
        return Verdict("pruned", f"model {side} has {abs(ev.zeros_delta):.1%} more exact zeros and agrees with the other on its non-zero weights (relative difference {ev.nonzero_rel_distance:.3f}).")
    if ev.changed_matrices and ev.low_rank_fraction >= LOW_RANK_SHARE:
        return Verdict("adapter", f"{ev.low_rank_matrices} of {ev.changed_matrices} changed matrices differ by a low-rank update (rank ≤ {ev.max_rank}), as a merged LoRA does.")
    if correlated or ev.rel_distance <= UNRELATED_DISTANCE:
        return Verdict("finetune", f"weights are {_correlated(corr, 'correlated')} with relative distance {ev.rel_distance:.3f} and full-rank differences: one was trained from the other or both from a common ancestor.")
    return Verdict("unrelated", f"no shared structure: weights are {_correlated(corr, 'uncorrelated')}, relative distance {ev.rel_distance:.2f}.")


#: A median correlation at or below minus this reads as one model being the other with its signs flipped.
NEGATED_CORRELATION = 0.9


def _correlated(corr: float, word: str) -> str:
    """``"correlated (median r = 0.93)"``; when no tensor has enough values for a correlation (the median
    is NaN), say so instead of printing ``nan``."""
    if corr == corr and word == "uncorrelated" and corr <= -UNRELATED_CORRELATION:  # "uncorrelated (r = -1.00)" read wrong
        negated = ": one may be the other negated" if corr <= -NEGATED_CORRELATION else ""
        return f"anti-correlated (median r = {corr:.2f}{negated})"
    if corr == corr:
        return f"{word} (median r = {corr:.2f})"
    return f"too small to correlate (no varying tensor has {MIN_CORRELATION_VALUES} sketch values)"


def shares_weights(a: Fingerprint, b: Fingerprint, ranks: bool = True) -> bool:
    """Whether the pair evidence of ``a`` and ``b`` says they are relatives (any verdict but ``unrelated`` and
    ``unknown``); False for models with nothing to compare. ``ranks=False`` skips the per-matrix SVDs (the low-rank cues)."""
    from ancestree.relate.evidence import relate

    try:
        return verdict(relate(a, b, ranks=ranks)).kind not in ("unrelated", "unknown")  # unknown: no evidence
    except IncomparableError:
        return False


def adapter_verdict(fa: Fingerprint, fb: Fingerprint) -> tuple[Verdict, dict[str, Any]] | None:
    """The verdict, and its evidence, when exactly one of the pair is a PEFT adapter folder, else None.

    An adapter holds weight *differences* (``B·A`` per changed matrix), not weights: comparing them with a
    model's weights says nothing (they came out "unrelated"). What the pair can show is whether the adapter
    fits the model (the model has every tensor it changes, with the same shape) and whether the adapter
    declares it as its base (``base_model_name_or_path``); which of several models of one architecture it
    was trained on is not in the differences (``tree`` finds it when the merged model is among the inputs).
    """
    if fa.declared.adapter == fb.declared.adapter:
        return None
    adapter, model = (fa, fb) if fa.declared.adapter else (fb, fa)
    missing = [t.name for t in adapter.tensors if t.name not in model or model[t.name].shape != t.shape]
    declared = adapter.declared.base_names
    named = any(resolve_name(n, [model.id]) for n in declared)  # as the tree resolves declared bases
    ranks = sorted(set(adapter.declared.lora_ranks))
    evidence = {"adapter": adapter.id, "model": model.id, "declared_base": adapter.declared.base_model, "ranks": ranks,
                "changed_tensors": len(adapter.tensors), "missing_in_model": missing}
    what = f"{adapter.id} is a LoRA adapter (rank {', '.join(map(str, ranks)) or '?'}, {len(adapter.tensors)} changed tensors)"
    if missing:
        return Verdict("unrelated", f"{what}; {model.id} lacks {len(missing)} of them with that shape "
                                    f"(first: {missing[0]}), so the adapter does not apply to it."), evidence
    if named:
        return Verdict("adapter", f"{what} declared for {model.id}, which has every tensor it changes."), evidence
    return Verdict("unknown", f"{what}; it fits {model.id} (every tensor it changes, same shapes) but declares "
                              f"{', '.join(declared) or 'no base'}: the differences fit every model of this "
                              "architecture, so only a declaration or a merged copy ties it to one."), evidence

