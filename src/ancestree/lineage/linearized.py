"""Learning-free parent detection with probe data (Neural Lineage), and the paper's feature baselines.

The child's features on probe inputs are compared with each candidate's. The baselines
(:class:`FeatureRanker`) compare them as they are. The linearised method (:class:`LinearizedRanker`)
first moves the candidate along the fine-tuning direction, to first order:

    f_lin(x) = f(x; θp) + α · J(x) · (θc − θp)

computed exactly with one forward-mode Jacobian-vector product (``torch.func.jvp`` through
``functional_call``). For the true parent the step is small and the linearisation nearly reproduces the
child; for anything else ``θc − θp`` is large and the first-order model misses badly, which is what
separates them. ``α`` is chosen on a zoo (:meth:`LinearizedRanker.fit`), not fixed at 1.

The child's hidden units are re-aligned to the candidate's before the difference is taken (the same
Hungarian matching as the weights method), so a permuted child is handled; its features do not change.

Metrics (higher score = more similar): ``l1`` and ``l2`` are ``−log`` of the relative error
``‖f_c − f‖ / ‖f_c‖``; ``cka`` is ``−log(1 − CKA)`` with linear CKA.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch

from ancestree.errors import BadInputError, IncomparableError
from ancestree.lineage.pairs import Source, adapter_config_of, adapter_reason, check_distinct
from ancestree.lineage.permute import align_units
from ancestree.lineage.probe import MIN_CENTRED, probe_inputs, require_inputs, small_probe_note
from ancestree.lineage.result import CandidateScore, Calibration, Ranking, make_ranking
from ancestree.lineage.runnable import Runnable, load_runnable
from ancestree.lineage.weights import COPY_OF_CHILD, is_adapter, rank_adapter_instead

METRICS = ("l1", "l2", "cka")

#: Default calibrations of the CLI: lenient (a candidate is plausible while the relative feature error is
#: below about 0.5). The benchmark fits its own on the zoo's train families; those thresholds are tight
#: for that zoo (they call the parent in tests/test_lineage_data.py "none"), so they are not the default.
DEFAULT_CALIBRATION = {
    (kind, metric): Calibration(0.3, float(-np.log(0.5))) for kind in ("baseline", "linearized") for metric in ("l1", "l2", "cka")
}

#: α per metric, chosen by top-1 accuracy on 80 tasks of the ``lineage`` zoo's train families (benchmarks/bench_lineage.py).
ALPHA = {"l1": 0.5, "l2": 0.5, "cka": 0.75}

#: α when the metric has no fitted value.
DEFAULT_ALPHA = 0.5


def linear_cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear centred kernel alignment of two feature matrices (rows = inputs)."""
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    cross = (a.T @ b).norm() ** 2
    denom = (a.T @ a).norm() * (b.T @ b).norm()
    return float(cross / denom) if denom > 0 else 0.0


def similarity(metric: str, child: torch.Tensor, other: torch.Tensor) -> float:
    """The score of ``other`` features against the child's (higher = more alike)."""
    if metric == "l1":
        err = float((child - other).abs().mean() / child.abs().mean().clamp_min(1e-12))
    elif metric == "l2":
        err = float((child - other).norm() / child.norm().clamp_min(1e-12))
    elif metric == "cka":
        err = 1.0 - linear_cka(child, other)
    else:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if not np.isfinite(err):
        return -50.0
    return float(-np.log(max(err, 1e-9)))


def _same_parameters(a: Runnable, b: Runnable) -> bool:
    """Every parameter of ``a`` equal to ``b``'s (same names and shapes: :meth:`Runnable.comparable` held)."""
    pa, pb = a.params(), b.params()
    return pa.keys() == pb.keys() and all(pa[n].shape == pb[n].shape and torch.equal(pa[n], pb[n]) for n in pa)


def _finite(features: torch.Tensor) -> bool:
    return bool(torch.isfinite(features).all())


def _open_runnable(source: Source) -> Runnable:
    if isinstance(source, Runnable):
        return source
    return load_runnable(_path_of(source), getattr(source, "id", None) or str(source))


def _path_of(source: Source) -> str | Path:
    """Where a source is read from: a model's ``path``, else the path itself."""
    return cast("str | Path", getattr(source, "path", source))


def _card(source: Source) -> dict:
    try:
        from ancestree.io import load_model

        with load_model(_path_of(source)) as model:
            return dict(model.meta.card)
    except BadInputError:
        return {}


class FeatureRanker:
    """The paper's baseline: similarity of child and candidate features on probe inputs (no linearisation).

    Parameters
    ----------
    metric: ``"l1"``, ``"l2"`` or ``"cka"``.
    probe_data: a ``.npy``/``.npz`` path or an array of inputs; None makes inputs for the child.
    """

    kind = "baseline"

    def __init__(self, metric: str = "l1", probe_data: str | Path | np.ndarray | None = None,
                 calibration: Calibration | None = None) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        self.metric = metric
        self.probe_data = probe_data
        self.calibration = calibration or DEFAULT_CALIBRATION[(self.kind, metric)]

    @property
    def method(self) -> str:
        return f"{self.kind}-{self.metric}"

    def candidate_features(self, child: Runnable, cand: Runnable, x: torch.Tensor,
                           f_c: torch.Tensor) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
        """``(child features to compare with, {α: features standing for the candidate})``; the baseline has
        only α = 0 and, as in the paper, no unit alignment."""
        return f_c, {0.0: cand.features(x)}

    def _alphas(self) -> list[float]:
        return [0.0]

    def features_by_alpha(self, child: Source, candidates: Sequence[Source]):
        """``(child runnable, {candidate id: child features}, {candidate id: {α: features}}, incomparable)``."""
        check_distinct(child, list(candidates))
        if self.metric == "cka":  # l1 and l2 compare input by input: one input is few but computable
            require_inputs(self.probe_data, MIN_CENTRED, "linear CKA")
        c_run = _open_runnable(child)
        x = probe_inputs(c_run, self.probe_data, _card(child))
        f_c = c_run.features(x)
        if not _finite(f_c):
            raise BadInputError(c_run.id, "its outputs on the probe inputs are NaN or infinite (damaged weights?), so the "
                                          "data methods cannot compare it; --method weights leaves damaged tensors out")
        child_feats, out, incomparable = {}, {}, {}
        for source in candidates:
            if not isinstance(source, Runnable) and (reason := adapter_reason(adapter_config_of(source))):
                incomparable[getattr(source, "id", None) or str(source)] = reason  # nothing to run
                continue
            try:
                cand = _open_runnable(source)
            except IncomparableError as exc:  # an ONNX or GGUF candidate, weights of another architecture: nothing to run
                incomparable[getattr(source, "id", None) or str(source)] = exc.problem
                continue
            if not c_run.comparable(cand):
                incomparable[cand.id] = "another architecture: its parameters differ in names or shapes from the child's"
                continue
            if _same_parameters(c_run, cand):  # its features equal the child's: it would be "the parent" at 1.0
                incomparable[cand.id] = COPY_OF_CHILD
                continue
            mine, theirs = self.candidate_features(c_run, cand, x, f_c)
            if not all(map(_finite, (mine, *theirs.values()))):
                incomparable[cand.id] = "NaN or infinite outputs on the probe inputs (damaged weights): nothing to compare"
                continue
            child_feats[cand.id], out[cand.id] = mine, theirs
        return c_run, child_feats, out, incomparable

    def rank(self, child: Source, candidates: Sequence[Source]) -> Ranking:
        if is_adapter(child):  # cannot be run alone, and run on each candidate it would differ from each by the same step
            return rank_adapter_instead(self.method, child, candidates)
        c_run, f_c, feats, incomparable = self.features_by_alpha(child, candidates)
        alpha = self._alphas()[0]
        scored = [CandidateScore(cid, similarity(self.metric, f_c[cid], f[alpha])) for cid, f in feats.items()]
        ranking = make_ranking(c_run.id, self.method, scored, self.calibration, incomparable)
        if note := small_probe_note(self.probe_data):
            ranking.note(*note)
        return ranking


class LinearizedRanker(FeatureRanker):
    """Neural Lineage's learning-free method: features of the candidate linearised toward the child.

    Parameters
    ----------
    metric: ``"l1"``, ``"l2"`` or ``"cka"``.
    alpha: step along ``θc − θp`` (chosen on a zoo by :meth:`fit`).
    align_units: re-align the child's hidden units to the candidate's before taking ``θc − θp``.
    """

    kind = "linearized"

    def __init__(self, metric: str = "l1", probe_data: str | Path | np.ndarray | None = None, alpha: float | None = None,
                 calibration: Calibration | None = None, align_units: bool = True) -> None:
        super().__init__(metric, probe_data, calibration)
        alpha = ALPHA.get(metric, DEFAULT_ALPHA) if alpha is None else alpha
        self.alpha = alpha
        self.align_units = align_units
        self.alphas = [alpha]

    def _alphas(self) -> list[float]:
        return self.alphas

    def aligned_child(self, child: Runnable, cand: Runnable) -> tuple[dict[str, torch.Tensor], int]:
        """The child's parameters with its hidden units matched to the candidate's, and how many layers moved."""
        pc = child.params()
        if not self.align_units:
            return pc, 0
        aligned, permuted = align_units({n: v.numpy() for n, v in pc.items()}, {n: v.numpy() for n, v in cand.params().items()})
        return {n: torch.as_tensor(np.ascontiguousarray(v)) for n, v in aligned.items()}, permuted

    def delta(self, child: Runnable, cand: Runnable, pc: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """``θc − θp`` per parameter, the child's units first matched to the candidate's; zero for a head of
        another size (the features are the head's input, so it plays no part)."""
        pc = self.aligned_child(child, cand)[0] if pc is None else pc
        pp = cand.params()
        return {n: pc[n] - pp[n] if pc[n].shape == pp[n].shape else torch.zeros_like(pp[n]) for n in pp}

    def candidate_features(self, child: Runnable, cand: Runnable, x: torch.Tensor,
                           f_c: torch.Tensor) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
        pc, permuted = self.aligned_child(child, cand)
        if permuted:  # the child's own features in the candidate's unit order (the head's input is a hidden layer)
            f_c = child.features(x, pc)
        params = cand.params()
        with torch.no_grad():
            f_p, jd = torch.func.jvp(  # type: ignore[misc]  # torch: a 3-tuple only with has_aux, not overloaded
                lambda p: cand.forward(p, x), (params,), (self.delta(child, cand, pc),))
        return f_c, {a: f_p + a * jd for a in self.alphas}

    def fit(self, tasks: Sequence[tuple[Source, Sequence[Source], str | None]],
            alphas: Sequence[float] = (0.25, 0.5, 0.75, 1.0, 1.5)) -> LinearizedRanker:
        """Choose α (top-1 accuracy, ties to the likelier) and the calibration on tasks ``(child, candidates, parent id or None)``."""
        from ancestree.lineage.calibrate import fit_calibration, log_likelihood

        before, self.alphas = self.alphas, list(alphas)  # the features are computed for every α tried
        per_alpha: dict[float, list] = {a: [] for a in alphas}

        def quality(a: float) -> tuple[float, float]:
            hits = [int(np.argmax(s) == t) for s, t in per_alpha[a] if t is not None]
            cal = fit_calibration(per_alpha[a])
            return (float(np.mean(hits)) if hits else 0.0, log_likelihood(per_alpha[a], cal))

        try:
            for child, candidates, truth in tasks:
                _, f_c, feats, _ = self.features_by_alpha(child, candidates)
                ids = list(feats)
                for a in alphas:
                    scores = [similarity(self.metric, f_c[i], feats[i][a]) for i in ids]
                    per_alpha[a].append((scores, ids.index(truth) if truth in ids else None))
            alpha = max(alphas, key=quality)
            calibration = fit_calibration(per_alpha[alpha])
        except BaseException:
            self.alphas = before  # a failed fit leaves the ranker as it was (it ranked with the first α tried)
            raise
        self.alpha, self.alphas, self.calibration = alpha, [alpha], calibration
        return self
