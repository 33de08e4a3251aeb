"""Weights-only parent detection: which candidate's weights the child's were most plausibly tuned from.

For each comparable candidate the child's tensors are paired with the candidate's (names, shapes,
transposes), the child's hidden units are re-aligned to the candidate's when they were permuted, and
evidence is gathered tensor by tensor:

* ``residual`` (the score's basis): ``sqrt(Σ‖c − s·p‖² / Σ‖c‖²)`` with a per-tensor least-squares scale
  ``s``. Fitting the scale removes the uniform shrinking of weight decay, the drift that otherwise brings
  two far-trained cousins nearer each other than either is to its parent; what remains is what training
  actually moved. Quantized, pruned and LoRA-merged children stay within a few percent of their parent.
* ``distance``: the same without the scale (the plain relative L2 distance);
* ``shared``: fraction of entries exactly equal (frozen layers, pruned survivors, exact copies);
* ``effective_rank``: the entropy effective rank of the difference matrices relative to their size
  (a LoRA step or a short fine-tune is a low-rank move; the difference to a non-parent sums several);
* ``kurtosis_drop``: mean excess kurtosis of the candidate minus the child over the matrices (MoTHer's
  direction cue: fine-tuning lowers it);
* ``recovered_parent`` and ``recovered_link``: 1 for the candidate(s) that tree recovery over the child
  and all the candidates (weights only, :class:`~ancestree.graph.GraphRecovery`) makes the child's parent,
  and for those it links to the child in either direction. A pair's evidence cannot tell a parent from its
  sibling, or an older ancestor from a cousin: each is a fine-tune or two away. The recovered graph also
  sees the candidates' relations to each other (the parent's siblings hang below the grandparent, with
  their own updates the child does not share), so it places the child where the whole set of models says
  it branched off. The link survives a wrong direction, which small sets of models get more often.

Two features come from the residual: ``closeness = −log(residual)`` tells near candidates apart (0.1 from
0.2), ``explained = log(1 − residual²)``, the log of the share of the child's energy the candidate
explains, tells far ones apart (a far-trained descendant at 0.93 from an unrelated model of the same
architecture at 0.998, which ``closeness`` hardly separates, so the difference's effective rank decided).

The score is a linear function of the features; probabilities come from the calibrated softmax with a
"none of these" option (:class:`~ancestree.lineage.result.Calibration`): the none score, learned on the zoo
(``fit``), is a threshold, so a child whose best candidate is still far away gets ``parent: null``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import ml_dtypes
import numpy as np
from scipy.stats import kurtosis

from ancestree.blas import one_blas_thread
from ancestree.fingerprint import FingerprintCache, fingerprint
from ancestree.fingerprint.cache import as_cache
from ancestree.fingerprint.sketch import take_sketch
from ancestree.fingerprint.types import Fingerprint, SketchSpec
from ancestree.graph import GraphRecovery
from ancestree.io.base import Model
from ancestree.lineage.pairs import (Source, TensorPair, adapter_config_of, check_distinct, incomparable_reason, open_model,
                                     pair_tensors)
from ancestree.lineage.permute import align_units
from ancestree.lineage.result import CandidateScore, Calibration, Ranking, make_ranking
from ancestree.relate import adapter_verdict
from ancestree.relate.update import effective_rank, even_indices, scaled_residual

#: Why a candidate holding the child's very values is not ranked (every method says it so).
COPY_OF_CHILD = "holds the child's own weights (the same values: a copy of the child, not its parent)"

#: Tensors larger than this are compared on their sketch sub-matrix (same rows/columns in every model).
MAX_FULL = 1 << 22

#: The difference of matrices larger than this (entries) has its effective rank taken on evenly spaced rows
#: and columns, at most :data:`RANK_SIDE` of each: its spectrum in float64 took 2.8 s for a 2048² matrix (90 s
#: a 512 MB candidate). The values themselves stay whole up to :data:`MAX_FULL`, so permuted hidden units are
#: still aligned on them (a sketch of the same rows in each model cannot be). The ``lineage`` zoo's largest
#: tensor holds 196 608 entries.
FULL_RANK = 1 << 20
RANK_SIDE = 512

#: Sketch side for large tensors (a 512×512 sub-matrix: relative distances within ~1% of the full ones).
LARGE_SKETCH = SketchSpec(matrix=512, vector=4096)

#: Fraction of exact zeros above which a child tensor is taken as pruned.
PRUNED = 0.2

#: Residual floor so an exact copy gets a finite score.
FLOOR = 1e-6

#: Floor of the explained share, so an unrelated candidate (residual ~1) gets a finite score.
EXPLAINED_FLOOR = 1e-4

#: Features of a (child, candidate) pair the score is a linear function of.
FEATURES = ("closeness", "low_rank", "shared", "kurtosis_drop", "explained", "recovered_parent", "recovered_link")

#: Default coefficients and calibration of the CLI: a lenient hand-set threshold (a candidate stays
#: plausible while its scale-fitted residual is below about 0.6 with a difference of low effective rank).
#: :meth:`WeightsRanker.fit` on the ``lineage`` zoo's train families (benchmarks/bench_lineage.py) gives
#: about (1.6, 0.9, 0.0, -0.1, 0.9, 1.3, 1.4), whose none threshold is tight for that zoo's short fine-tunes
#: and calls the longer fine-tunes of other families "none", so it is not the default; the default keeps its
#: proportions (the recovered parent and the link weigh about 0.8 closeness units each). With temperature 1
#: the coefficients carry the scale; the none score (:func:`default_calibration`) is that of a virtual candidate.
DEFAULT_COEF = (6.0, 3.0, 0.0, 0.0, 2.0, 5.0, 5.0)


def features(evidence: dict[str, float]) -> np.ndarray:
    """The feature vector (:data:`FEATURES`) of one pair's evidence."""
    return np.array([
        -np.log(max(evidence["residual"], FLOOR)),
        -np.log(max(evidence["effective_rank"], 1e-3)),
        evidence["shared"],
        evidence["kurtosis_drop"],
        np.log(max(1.0 - min(evidence["residual"], 1.0) ** 2, EXPLAINED_FLOOR)),
        # absent: the graph abstains, as if it had marked every candidate (see ``GRAPH_MIN_CANDIDATES``)
        evidence.get("recovered_parent", 1.0),
        evidence.get("recovered_link", 1.0),
    ])


def default_calibration(coef: Sequence[float] = DEFAULT_COEF) -> Calibration:
    """The CLI's none score: the score of a virtual candidate at residual 0.6 with effective rank 0.3 that
    the recovered graph made the parent (the lenient threshold applies to the graph's choice)."""
    virtual = {"residual": 0.6, "effective_rank": 0.3, "shared": 0.0, "kurtosis_drop": 0.0,
               "recovered_parent": 1.0, "recovered_link": 1.0}
    return Calibration(temperature=1.0, none_score=float(features(virtual) @ np.asarray(coef)))


#: Fewer comparable candidates than this and the graph abstains: with one or two the set says little about
#: where the child branched off, and the direction of a lone edge is often wrong (a child with its parent
#: alone came out as the parent's parent, and the parent then fell to a coin toss with "none").
GRAPH_MIN_CANDIDATES = 3


def recovered_relatives(child: Fingerprint, candidates: Sequence[Fingerprint]) -> tuple[set[int], set[int], set[int]]:
    """``(parents, linked, merged)``: indices of the candidates that tree recovery over the child and all of
    them, from weights alone, makes the child's parents (one, several for a merge, none when it puts the child
    above them or apart), of those it links to the child in either direction, and of the parents it finds
    the child an exact combination of (a merge: empty otherwise)."""
    if not candidates:
        return set(), set(), set()
    # copies of one model (the same values at other paths) are one model to the graph, which would hang the
    # second below the first; each copy then gets what their one model gets
    first_of: dict[object, int] = {}
    first = [first_of.setdefault(_values_key(fp) or i, i) for i, fp in enumerate(candidates)]
    kept = sorted(set(first))
    # numbered ids: a child and a candidate may share a folder name in different places
    prints = [replace(fp, id=str(i)) for i, fp in enumerate([child, *(candidates[k] for k in kept)])]
    graph = GraphRecovery(use_declared=False).fit(prints).graph_.graph

    def copies(nodes) -> set[int]:
        ones = {kept[int(n) - 1] for n in nodes}
        return {i for i, f in enumerate(first) if f in ones}

    parents = copies(graph.predecessors("0"))
    merged = copies(p for p in graph.predecessors("0") if graph.edges[p, "0"].get("relation") == "merge")
    return parents, parents | copies(graph.successors("0")), merged


def add_recovered_relatives(child: Fingerprint, candidates: Sequence[Fingerprint], evidence: Sequence[dict[str, float]],
                            merges_only: bool = False) -> None:
    """Set ``recovered_parent``, ``recovered_link`` and ``recovered_merge`` in each candidate's evidence
    (order of ``candidates``); with ``merges_only``, only ``recovered_merge``."""
    parents, linked, merged = recovered_relatives(child, candidates)
    for i, ev in enumerate(evidence):
        if not merges_only:
            ev["recovered_parent"], ev["recovered_link"] = float(i in parents), float(i in linked)
        ev["recovered_merge"] = float(i in merged)


@dataclass
class _Sums:
    residual: float = 0.0
    plain: float = 0.0
    norm: float = 0.0
    shared: float = 0.0
    numel: float = 0.0


def _values(model: Model, pair: TensorPair, side: str) -> np.ndarray:
    name = pair.child if side == "child" else pair.candidate
    values = np.asarray(model.read(name), dtype=np.float32)
    if side == "candidate" and pair.transpose:
        values = values.T
    if values.size > MAX_FULL:
        return take_sketch(values, LARGE_SKETCH)
    return np.array(values, dtype=np.float32)


def _rank_view(diff: np.ndarray) -> np.ndarray:
    """``diff``, or evenly spaced rows and columns of it when it is larger than :data:`FULL_RANK` entries."""
    if diff.size <= FULL_RANK:
        return diff
    return diff[np.ix_(even_indices(diff.shape[0], RANK_SIDE), even_indices(diff.shape[1], RANK_SIDE))]


def _on_support(c: np.ndarray, p: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Restrict a pruned child's tensor (many exact zeros the candidate lacks) to its surviving entries.

    Pruning sets entries to zero and keeps the rest exactly, so the zeros say nothing about which model
    the survivors came from; comparing on the survivors makes a pruned copy exact again.
    """
    zeros = c == 0
    if len(shape) >= 2 and zeros.mean() > PRUNED and (p == 0).mean() < zeros.mean() / 2:
        return c[~zeros], p[~zeros]
    return c, p


def _constant(values: np.ndarray) -> bool:
    return values.size == 0 or bool(np.all(values == values.flat[0]))


def _pooled(child: dict[str, np.ndarray]) -> list[str]:
    """The arrays the evidence pools: the matrices carry the lineage; gains and biases (LayerNorm's ~1) are
    large, alike in every model and would swamp the residual of unrelated models (two GPT-2s of other seeds
    came out 0.34 apart, a "parent"). A model of vectors only pools its vectors."""
    return [n for n, c in child.items() if c.ndim >= 2] or list(child)


def compare(child: dict[str, np.ndarray], cand: dict[str, np.ndarray]) -> dict[str, float]:
    """Evidence that ``cand`` is ``child``'s parent, from aligned arrays of equal shapes (same names)."""
    sums, ranks, kurt = _Sums(), [], []
    for name in _pooled(child):
        c = child[name]
        c, p = _on_support(c.astype(np.float64).ravel(), cand[name].astype(np.float64).ravel(), c.shape)
        residual, cc = scaled_residual(c, p)
        sums.residual += residual
        sums.plain += float(np.sum((c - p) ** 2))
        sums.norm += cc
        sums.shared += float(np.count_nonzero((c == p) & (c != 0)))
        sums.numel += c.size
        shape = child[name].shape
        if len(shape) >= 2:
            r = effective_rank(_rank_view((child[name] - cand[name]).reshape(shape[0], -1)))
            if r is not None:
                ranks.append(r)
            if c.size >= 64 and not (_constant(p) or _constant(c)):  # a zeroed layer has no kurtosis (NaN)
                kurt.append(float(kurtosis(p) - kurtosis(c)))
    norm = max(sums.norm, 1e-30)
    return {
        "residual": float(np.sqrt(sums.residual / norm)),
        "distance": float(np.sqrt(sums.plain / norm)),
        "shared": sums.shared / max(sums.numel, 1.0),
        "effective_rank": float(np.mean(ranks)) if ranks else 1.0,
        "kurtosis_drop": float(np.mean(kurt)) if kurt else 0.0,
    }


#: Score of the base an adapter declares (against 0 for "none of these" and for a candidate it only fits):
#: the declared base then takes ~0.97 with two others, the confidence ``tree`` gives a declared adapter edge.
DECLARED_ADAPTER_SCORE = float(np.log(97.0))


def is_adapter(source: Source) -> bool:
    """Whether ``source`` is a PEFT adapter folder (its config read; a model opened here is closed again)."""
    return adapter_config_of(source) is not None


def rank_adapter_instead(method: str, child: Source, candidates: Sequence[Source],
                         cache: FingerprintCache | str | bool | None = None) -> Ranking:
    """For a method that compares whole models (the detector, the data methods): a PEFT adapter folder holds
    weight differences, which that method would rank against weights as if they were a model; its parent is
    found by the adapter check (:meth:`WeightsRanker.rank_adapter`) instead, with a note saying so."""
    ranking = WeightsRanker(cache=cache).rank_adapter(child, candidates)
    ranking.note(ranking.child, f"a PEFT adapter folder (weight differences, not a model): {method} does not apply; "
                                "ranked by the weights method's adapter check (the base it declares and fits)")
    return ranking


def _values_key(fp: Fingerprint) -> frozenset[tuple[str, str]] | None:
    """What two models with every tensor equal, name by name and entry by entry, share (None: no tensors)."""
    return frozenset((t.name, t.digest) for t in fp.tensors) or None


def _same_values(a: Fingerprint, b: Fingerprint) -> bool:
    """Every tensor equal, name by name and entry by entry, in any order (a .bin keeps its state dict's order,
    safetensors sorts): a copy of the file, not a relative. (Equal
    ``content_key``s are not enough: they also match a copy with its hidden units permuted, which the
    robustness table asks to rank as a child of the model it was permuted from.)"""
    key = _values_key(a)
    return key is not None and key == _values_key(b)


#: Float types a model is released in by a plain cast (``model.half()``, ``.to(torch.bfloat16)``).
CAST_TYPES = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}

#: Share of entries that must equal the child's values cast for a candidate to be the child's cast copy.
CAST_SHARE = 0.999


def _cast_of_child(child: Model, candidate: Model, pairs: Sequence[TensorPair], c_values: dict[str, np.ndarray],
                   p_values: dict[str, np.ndarray]) -> str | None:
    """Why the candidate is the child's own weights cast to a coarser float type (its float16 or bfloat16
    release, maybe keeping some tensors as they were: entry for entry the child's values cast), or None.

    A parent stored coarser is no such cast: the fine-tune moved the child off its grid. A child still on
    that grid (a frozen backbone saved in float32 from a bfloat16 parent, a few biases trained) cannot be
    told from its own cast, and is not set aside. Block-quantized candidates (int8, 4-bit) never are: their
    rounding hides a small fine-tune."""
    cast_to: str | None = None
    equal = on_grid = nonzero = cast_entries = total = 0
    for pair in pairs:
        if pair.child not in c_values:
            continue
        c, p = c_values[pair.child], p_values[pair.child]
        kept, stored = child.tensors[pair.child].dtype, candidate.tensors[pair.candidate].dtype
        total += c.size
        if stored == kept:  # a tensor the release kept as it was (float32 norms, `_keep_in_fp32_modules`)
            equal += int(np.count_nonzero(c == p))
            continue
        if stored not in CAST_TYPES or kept not in ("float32", "float64") or cast_to not in (None, stored):
            return None
        cast_to = stored
        rounded = c.astype(CAST_TYPES[stored]).astype(np.float32)
        equal += int(np.count_nonzero(rounded == p))
        on_grid += int(np.count_nonzero((rounded == c) & (c != 0)))  # zeros sit on every grid (a pruned child's)
        nonzero += int(np.count_nonzero(c))
        cast_entries += c.size
    if cast_to is None or cast_entries < total / 2 or on_grid >= nonzero / 2 or equal < CAST_SHARE * total:
        return None
    return f"holds the child's own weights cast to {cast_to} ({equal / total:.1%} of entries equal): a copy of the child, not its parent"


class WeightsRanker:
    """Rank candidate parents of a child from weights alone (any format ancestree reads).

    Parameters
    ----------
    coef:
        Weights of :data:`FEATURES` in the score; :meth:`fit` learns them (with the none score) from zoo tasks.
    calibration:
        Temperature and none score of the probabilities.
    align_units:
        Re-align permuted hidden units of the child before comparing (MLP/CNN chains).
    tree:
        Add the ``recovered_parent`` and ``recovered_link`` evidence (tree recovery over the child and all
        candidates, from the fingerprints that align each pair's tensors). Off, the graph abstains: both are 1
        for every candidate, so the ranking rests on the pair evidence and the none threshold still fits.
        It abstains too with fewer than :data:`GRAPH_MIN_CANDIDATES` candidates, or when the child's hidden
        units had to be re-aligned to the nearest candidate (fingerprints are compared unit by unit, so the
        graph would not see the permuted child's parent).
    cache:
        Where fingerprints are kept between runs (as for :func:`~ancestree.fingerprint.fingerprint`: a
        :class:`~ancestree.fingerprint.FingerprintCache`, a folder, ``True`` for the default one, or ``None``).
    """

    method = "weights"

    def __init__(self, coef: Sequence[float] | None = None, calibration: Calibration | None = None,
                 align_units: bool = True, tree: bool = True, cache: FingerprintCache | str | bool | None = None) -> None:
        self.coef = tuple(DEFAULT_COEF if coef is None else coef)
        if len(self.coef) != len(FEATURES):  # e.g. coefficients fitted by a version with fewer features
            raise ValueError(f"coef needs {len(FEATURES)} values, one per feature {FEATURES}; got {len(self.coef)}")
        self.calibration = calibration or default_calibration(self.coef)
        self.align_units = align_units
        self.tree = tree
        self.cache = as_cache(cache)

    # -- evidence ---------------------------------------------------------------------------------------
    def aligned(self, child: Model, candidate: Model, cache: dict[str, Any] | None = None,
                candidate_print: Fingerprint | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int] | str:
        """``(child arrays, candidate arrays, layers permuted)`` keyed by the child's names, in the child's
        orientation and unit order; or the reason the candidate is incomparable.

        ``cache`` (one per child) keeps the child's fingerprint and tensors across candidates;
        ``candidate_print`` is the candidate's fingerprint when the caller has it.
        """
        cache = {} if cache is None else cache
        if "__print__" not in cache:
            cache["__print__"] = fingerprint(child, self.cache)
        candidate_print = candidate_print or fingerprint(candidate, self.cache)
        if _same_values(candidate_print, cache["__print__"]):
            return COPY_OF_CHILD
        pairs = pair_tensors(child, candidate, cache["__print__"], candidate_print)
        reason = incomparable_reason(child, candidate, pairs)
        if reason:
            return reason
        c_values, p_values = {}, {}
        for pair in pairs:
            if pair.child not in cache:
                cache[pair.child] = _values(child, pair, "child")
            c_values[pair.child] = cache[pair.child]
            p_values[pair.child] = _values(candidate, pair, "candidate")
        # a tensor holding NaN or inf (a diverged run) says nothing about lineage: compare the others
        damaged = [n for n in c_values if not (np.isfinite(c_values[n]).all() and np.isfinite(p_values[n]).all())]
        for name in damaged:
            del c_values[name], p_values[name]
        if not c_values:
            return "NaN or infinite values in every tensor the child and this candidate share: nothing to compare"
        cast = _cast_of_child(child, candidate, pairs, c_values, p_values)
        if cast is not None:
            return cast
        if all(_constant(c_values[n]) or _constant(p_values[n]) for n in _pooled(c_values)):
            return ("every weight matrix the two share is constant (all zeros or one value) in one of them: "
                    "no evidence of lineage")  # scored, its residual and kurtosis were NaN (an invalid JSON)
        permuted = 0
        if self.align_units:
            c_values, permuted = align_units(c_values, p_values)
        return c_values, p_values, permuted

    def evidence(self, child: Model, candidate: Model, cache: dict[str, Any] | None = None,
                 candidate_print: Fingerprint | None = None) -> dict[str, float] | str:
        """The pair evidence (the recovered-graph features are the ranking's), or why the candidate is incomparable."""
        got = self.aligned(child, candidate, cache, candidate_print)
        if isinstance(got, str):
            return got
        c_values, p_values, permuted = got
        ev = compare(c_values, p_values)
        if not all(np.isfinite(v) for v in ev.values()):  # a score of NaN would be an invalid JSON, and ranked first
            return "no finite evidence: the weights the two share leave every measure undefined"
        ev["permuted_layers"] = float(permuted)
        ev["coverage"] = float(sum(c_values[n].size for n in c_values) / max(child.entries, 1))
        return ev

    def add_graph_evidence(self, child: Fingerprint, candidates: Sequence[Fingerprint], evidence: Sequence[dict[str, float]]) -> None:
        """Add the recovered-graph features to the candidates' pair evidence, unless the graph abstains; a
        merge it finds is marked even then (an exact combination has no direction to get wrong: a merge asked
        about its two parents alone)."""
        if self.graph_applies(evidence):
            add_recovered_relatives(child, candidates, evidence)
        elif self.tree and len(evidence) >= 2:
            add_recovered_relatives(child, candidates, evidence, merges_only=True)

    def graph_applies(self, evidence: Sequence[dict[str, float]]) -> bool:
        """Whether the recovered graph is asked about these candidates (else it abstains)."""
        if not self.tree or len(evidence) < GRAPH_MIN_CANDIDATES:
            return False
        # the nearest candidate matched only after re-aligning the child's units: fingerprints compare unit
        # by unit, so the graph cannot see that relation (unrelated candidates get arbitrary matchings)
        nearest = max(evidence, key=self.score_of)  # pair evidence only: the graph's features are not set yet
        return nearest.get("permuted_layers", 0.0) == 0

    def without_graph(self) -> WeightsRanker:
        """The same ranker with the graph abstaining (same coefficients, calibration and cache)."""
        return WeightsRanker(self.coef, self.calibration, self.align_units, tree=False, cache=self.cache)

    def score_of(self, evidence: dict[str, float]) -> float:
        return float(features(evidence) @ np.asarray(self.coef))

    # -- ranking ----------------------------------------------------------------------------------------
    def score_candidates(self, child: Source, candidates: Sequence[Source]) -> tuple[str, list[CandidateScore], dict[str, str]]:
        """Unranked scores of every comparable candidate, and the incomparable ones with their reason."""
        check_distinct(child, list(candidates))
        with one_blas_thread():  # small matrices: BLAS threads only spin on a shared CPU
            return self._score(child, candidates)

    def _score(self, child: Source, candidates: Sequence[Source]) -> tuple[str, list[CandidateScore], dict[str, str]]:
        c_model = open_model(child)
        cache: dict[str, Any] = {}
        ids, evidence, prints, incomparable = [], [], [], {}
        for source in candidates:
            cand = open_model(source)
            try:
                cand_print = fingerprint(cand, self.cache)  # aligns the pair, and places it in the graph
                ev = self.evidence(c_model, cand, cache, cand_print)
            finally:
                if cand is not source:
                    cand.close()
            if isinstance(ev, str):
                incomparable[cand.id] = ev
            else:
                ids.append(cand.id)
                evidence.append(ev)
                prints.append(cand_print)
        self.add_graph_evidence(cache["__print__"], prints, evidence)
        scored = [CandidateScore(i, self.score_of(ev), evidence=ev) for i, ev in zip(ids, evidence)]
        return c_model.id, scored, incomparable

    def rank(self, child: Source, candidates: Sequence[Source]) -> Ranking:
        """Candidates best first with calibrated probabilities; ``.parent`` is None when none is plausible."""
        if is_adapter(child):
            return self.rank_adapter(child, candidates)
        child_id, scored, incomparable = self.score_candidates(child, candidates)
        ranking = make_ranking(child_id, self.method, scored, self.calibration, incomparable)
        # a merge splits the probability between its parents: say so rather than let one of them win by a hair
        # (and only when the chosen parent is one of them: "none of these" and a merge would contradict)
        merged = [c.candidate for c in ranking.ranking if c.evidence.get("recovered_merge")]
        ranking.merge_of = merged if len(merged) > 1 and ranking.parent in merged else []
        return ranking

    def rank_adapter(self, child: Source, candidates: Sequence[Source]) -> Ranking:
        """The base of a PEFT adapter folder among ``candidates``: its weight differences fit every model of one
        architecture (:func:`~ancestree.relate.adapter_verdict`), so the candidate it declares as its base
        (``base_model_name_or_path``) is the parent, with the tree's confidence in a declared adapter; a
        candidate it only fits is as likely as "none of these"; one it does not fit is incomparable."""
        check_distinct(child, list(candidates))
        adapter = fingerprint(child, self.cache)
        scored, incomparable = [], {}
        for source in candidates:
            cand = fingerprint(source, self.cache)
            found = adapter_verdict(adapter, cand)
            if found is None:
                incomparable[cand.id] = "another adapter (weight differences); an adapter's base is a model"
            elif found[0].kind == "unrelated":
                incomparable[cand.id] = found[0].reason
            else:
                declared = found[0].kind == "adapter"
                scored.append(CandidateScore(cand.id, DECLARED_ADAPTER_SCORE if declared else 0.0,
                                             evidence={"declared_base": float(declared)}))
        return make_ranking(adapter.id, self.method, scored, Calibration(1.0, 0.0), incomparable)

    def fit(self, tasks: Sequence[tuple[Sequence[dict[str, float]], int | None]]) -> WeightsRanker:
        """Learn coefficients and the none score from tasks ``(evidence of each candidate, true index or None)``.

        Two stages: the coefficients as a pure ranking model on the tasks whose parent is present, then
        the temperature and none score on all tasks. Fitting both at once let the none tasks pull the
        coefficients toward features that separate "none" a little and rank the parent worse.
        """
        from ancestree.lineage.calibrate import fit_calibration, fit_choice_model

        data = [(np.stack([features(e) for e in evs]), t) for evs, t in tasks if evs]
        coef, _ = fit_choice_model(data, none=False)
        self.coef = tuple(float(c) for c in coef)
        self.calibration = fit_calibration([(f @ coef, t) for f, t in data])
        return self
