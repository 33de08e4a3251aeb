"""The learned lineage detector (Neural Lineage's learning-based method), trained on a zoo.

For each (child, candidate) pair three tokens are encoded:

* a **weight token**: ``K`` weight matrices of the pair (evenly spaced in network order, the child's units
  aligned to the candidate's), each reduced to the same ``S×S`` sub-matrix of rows and columns as the
  fingerprint sketches use, child and candidate stacked as two channels per layer, through a small conv net;
* a **feature token**: the Gram matrices of child and candidate features on the probe inputs and their
  cross-Gram (3 channels, size-agnostic, invariant to unit order), through a small conv net; zeros
  (with a flag) when the models cannot be run;
* an **evidence token** (an addition to the paper's design): the weights method's evidence vector.

A transformer runs over ``[CLS, weight, feature, evidence]`` per candidate; a linear head on CLS gives the
candidate's score; a learned "no parent" token through the same head gives the none score; the softmax
over candidates + none is trained with cross-entropy on zoo tasks (:mod:`ancestree.lineage.tasks`).
Saved as a state dict plus a JSON config in one ``torch.save`` file, loadable with ``weights_only=True``,
with the weight layouts it was trained on (:class:`TrainedOn`): a child whose matrices have other shapes is
refused by name rather than scored with numbers the detector never learned to read.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ancestree.atomic import check_writable, write_bytes
from ancestree.errors import BadInputError
from ancestree.fingerprint import FingerprintCache, fingerprint
from ancestree.fingerprint.sketch import as_matrix, index_set
from ancestree.io.torch_pickle import load_checkpoint
from ancestree.lineage.pairs import Source, check_distinct, open_model
from ancestree.lineage.probe import MIN_CENTRED, require_inputs, small_probe_note
from ancestree.lineage.result import CandidateScore, Calibration, Ranking, make_ranking
from ancestree.lineage.weights import FEATURES, WeightsRanker, compare, features, is_adapter, rank_adapter_instead

#: Seed of the row/column index sets of the weight token (independent of the fingerprint's).
INDEX_SEED = 7


@dataclass(frozen=True)
class DetectorConfig:
    layers: int = 4  # K weight matrices per pair
    side: int = 24  # S: sub-matrix side
    probes: int = 32  # probe inputs for the feature token
    dim: int = 64
    heads: int = 4
    depth: int = 2
    evidence: int = len(FEATURES) + 1  # length of the evidence vector (weights features and distance)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


# -- inputs --------------------------------------------------------------------------------------------------
#: The weight matrices a weight token is made of: ``(name, shape)`` of each of the K picks, in order.
Layout = tuple[tuple[str, tuple[int, ...]], ...]


def picked_layers(c_values: dict[str, np.ndarray], cfg: DetectorConfig) -> list[str]:
    """The K evenly spaced weight matrices (in network order) of the child's aligned arrays."""
    names = [n for n, v in c_values.items() if v.ndim >= 2]
    return [names[int(i)] for i in np.linspace(0, len(names) - 1, cfg.layers).round()] if names else []


def layout(c_values: dict[str, np.ndarray], cfg: DetectorConfig) -> Layout:
    """What the weight token of these arrays is made of (the detector stores the layouts it trained on)."""
    return tuple((name, tuple(int(d) for d in c_values[name].shape)) for name in picked_layers(c_values, cfg))


def weight_token(c_values: dict[str, np.ndarray], p_values: dict[str, np.ndarray], cfg: DetectorConfig) -> np.ndarray:
    """``(2K, S, S)``: the same sub-matrix of K evenly spaced weight matrices, child and candidate channels."""
    out = np.zeros((2 * cfg.layers, cfg.side, cfg.side), dtype=np.float32)
    for k, name in enumerate(picked_layers(c_values, cfg)):
        c, p = as_matrix(c_values[name]), as_matrix(p_values[name])
        rows, cols = index_set(c.shape[0], cfg.side, INDEX_SEED), index_set(c.shape[1], cfg.side, INDEX_SEED)
        scale = float(np.std(c)) or 1.0
        out[2 * k, : len(rows), : len(cols)] = c[np.ix_(rows, cols)] / scale
        out[2 * k + 1, : len(rows), : len(cols)] = p[np.ix_(rows, cols)] / scale
    return out


def _gram(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a - a.mean(0)
    b = b - b.mean(0)
    g = (a @ b.T).double()
    return (g / g.norm().clamp_min(1e-12) * len(g)).float().numpy()


def feature_token(f_c: torch.Tensor | None, f_p: torch.Tensor | None, cfg: DetectorConfig) -> np.ndarray:
    """``(4, P, P)``: child Gram, candidate Gram, cross-Gram and an 'available' flag channel."""
    out = np.zeros((4, cfg.probes, cfg.probes), dtype=np.float32)
    if f_c is None or f_p is None:
        return out
    n = min(cfg.probes, len(f_c))
    out[0, :n, :n] = _gram(f_c[:n], f_c[:n])
    out[1, :n, :n] = _gram(f_p[:n], f_p[:n])
    if f_c.shape[1] == f_p.shape[1]:  # heads of another size: no cross-Gram
        out[2, :n, :n] = _gram(f_c[:n], f_p[:n])
    out[3] = 1.0
    return out


def _shown(lay: Layout) -> str:
    """``fc1.weight 48x768, fc2.weight 48x48``: each picked matrix once, in order."""
    return ", ".join(dict.fromkeys(f"{n} {'x'.join(map(str, shape))}" for n, shape in lay)) or "no weight matrix"


@dataclass(frozen=True)
class TrainedOn:
    """The weight layouts a detector was trained on. Its weight token is K matrices picked by position and
    cut to a fixed sub-matrix: on matrices of other shapes it still produces numbers, but ones it never
    learned to read (a detector trained on MLPs ranked a CNN's candidates with confident nonsense)."""

    layouts: tuple[Layout, ...]

    def problem(self, lay: Layout, whose: str = "these are") -> str | None:
        """Why a pair of this layout is beyond the detector (no trained layout has its shapes), or None."""
        if any(_shapes(t) == _shapes(lay) for t in self.layouts):
            return None
        near = min(self.layouts, key=lambda t: sum(a != b for a, b in zip(_shapes(t), _shapes(lay))))
        more = f" (or {len(self.layouts) - 1} other layouts)" if len(self.layouts) > 1 else ""
        return f"trained on weight matrices {_shown(near)}{more}; {whose} {_shown(lay)}"

    def renamed(self, lay: Layout) -> Layout | None:
        """The trained layout of the same shapes when ``lay`` has them under other names (an ONNX export's,
        another architecture's of the same sizes), else None."""
        if lay in self.layouts:
            return None
        return next((t for t in self.layouts if _shapes(t) == _shapes(lay)), None)

    def to_json(self) -> str:
        return json.dumps([[[n, list(shape)] for n, shape in lay] for lay in self.layouts])

    @classmethod
    def from_json(cls, text: str) -> TrainedOn:
        return cls(tuple(tuple((str(n), tuple(int(d) for d in shape)) for n, shape in lay) for lay in json.loads(text)))


def _shapes(lay: Layout) -> tuple[tuple[int, ...], ...]:
    return tuple(shape for _, shape in lay)


def evidence_vector(ev: dict[str, float]) -> np.ndarray:
    return np.append(features(ev), -np.log(max(ev["distance"], 1e-6))).astype(np.float32)


class Encoded(NamedTuple):
    """One child against its candidates: the detector's inputs for each comparable candidate."""

    child: str
    ids: list[str]  # comparable candidates, in the order of the stacked inputs
    inputs: dict[str, np.ndarray]  # "weights", "features", "evidence", one row per candidate
    incomparable: dict[str, str]
    layouts: list[Layout]  # what each candidate's weight token is made of

    def take(self, keep: Sequence[int]) -> dict[str, np.ndarray]:
        """The stacked inputs of the candidates at positions ``keep`` only."""
        return {k: v[list(keep)] for k, v in self.inputs.items()}


class PairEncoder:
    """Builds the detector's inputs for one child against its candidates (caching the child's side)."""

    def __init__(self, cfg: DetectorConfig, probe_data: str | Path | np.ndarray | None = None,
                 weights: WeightsRanker | None = None) -> None:
        self.cfg, self.probe_data = cfg, probe_data
        self.weights = weights or WeightsRanker()
        self._features: dict[tuple[str, str], torch.Tensor | None] = {}

    def without_graph(self) -> PairEncoder:
        """The same encoder with the recovered graph abstaining; probe features computed so far are shared."""
        encoder = PairEncoder(self.cfg, self.probe_data, self.weights.without_graph())
        encoder._features = self._features
        return encoder

    def _run(self, source: str, probe_key: str, x: torch.Tensor | None) -> torch.Tensor | None:
        key = (source, probe_key)
        if key not in self._features:
            from ancestree.lineage.runnable import load_runnable

            try:
                f = None if x is None else load_runnable(source).features(x)
            except BadInputError:
                f = None
            # damaged weights (NaN/inf outputs) give no features: the weight tokens still compare
            self._features[key] = f if f is None or bool(torch.isfinite(f).all()) else None
        return self._features[key]

    def _probe(self, child: str) -> tuple[str, torch.Tensor | None]:
        from ancestree.lineage.linearized import _card
        from ancestree.lineage.probe import probe_inputs
        from ancestree.lineage.runnable import load_runnable

        try:
            run = load_runnable(child)
        except BadInputError:
            return "none", None
        card = _card(child)
        x = probe_inputs(run, self.probe_data, card)[: self.cfg.probes]
        return json.dumps(card.get("datasets", [])) + str(self.probe_data), x

    def encode(self, child: Source, candidates: Sequence[Source]) -> Encoded:
        """The inputs of every comparable candidate, and the incomparable ones with their reason."""
        c_model = open_model(child)
        probe_key, x = self._probe(str(getattr(child, "path", child)))
        f_c = self._run(str(getattr(child, "path", child)), probe_key, x)
        cache: dict[str, Any] = {}
        ids, w, f, evidence, prints, layouts, incomparable = [], [], [], [], [], [], {}
        for source in candidates:
            cand = open_model(source)
            cand_print = fingerprint(cand, self.weights.cache)
            got = self.weights.aligned(c_model, cand, cache, cand_print)
            if isinstance(got, str):
                incomparable[cand.id] = got
                continue
            c_values, p_values, permuted = got
            ids.append(cand.id)
            w.append(weight_token(c_values, p_values, self.cfg))
            layouts.append(layout(c_values, self.cfg))
            f.append(feature_token(f_c, self._run(str(getattr(source, "path", source)), probe_key, x), self.cfg))
            evidence.append({**compare(c_values, p_values), "permuted_layers": float(permuted)})
            prints.append(cand_print)
        self.weights.add_graph_evidence(cache["__print__"], prints, evidence)
        e = [evidence_vector(ev) for ev in evidence]
        stacked = {"weights": np.stack(w) if w else np.zeros((0,)), "features": np.stack(f) if f else np.zeros((0,)),
                   "evidence": np.stack(e) if e else np.zeros((0,))}
        return Encoded(c_model.id, ids, stacked, incomparable, layouts)


# -- the network ----------------------------------------------------------------------------------------------
def _conv(channels: int, dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, stride=2, padding=1), nn.GELU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, dim),
    )


class LineageDetector(nn.Module):
    """Scores each candidate from its [CLS, weight, feature, evidence] tokens; plus a learned none score."""

    ev_mean: torch.Tensor  # buffers (registered in __init__)
    ev_std: torch.Tensor

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight_encoder = _conv(2 * cfg.layers, cfg.dim)
        self.feature_encoder = _conv(4, cfg.dim)
        self.evidence_encoder = nn.Sequential(nn.Linear(cfg.evidence, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.types = nn.Parameter(torch.randn(1, 4, cfg.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, 2 * cfg.dim, dropout=0.0, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.head = nn.Linear(cfg.dim, 1)
        # A skip path from the evidence straight to the score: the detector starts as (and can stay) a
        # linear choice model on the weights evidence, and the tokens only have to learn a correction.
        # Without it the conv encoders memorised the training families (held-out loss above the prior).
        self.skip = nn.Linear(cfg.evidence, 1)
        self.dropout = nn.Dropout(0.2)
        self.none_token = nn.Parameter(torch.zeros(1, cfg.dim))
        # Standardisation of the evidence vector, set from the training data (its raw scales range over
        # orders of magnitude, which made training collapse to the prior).
        self.register_buffer("ev_mean", torch.zeros(cfg.evidence))
        self.register_buffer("ev_std", torch.ones(cfg.evidence))
        #: the weight layouts of its training pairs (None: a file saved before they were recorded)
        self.trained_on: TrainedOn | None = None

    def forward(self, weights: torch.Tensor, feats: torch.Tensor, evidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(n,)`` of ``n`` candidates and the none score ``()``."""
        evidence = ((evidence - self.ev_mean) / self.ev_std).clamp(-6.0, 6.0)
        tokens = torch.stack([self.weight_encoder(weights), self.feature_encoder(feats), self.evidence_encoder(evidence)], 1)
        seq = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], 1) + self.types
        out = self.dropout(self.transformer(seq)[:, 0])
        scores = self.head(out).squeeze(-1) + self.skip(evidence).squeeze(-1)
        return scores, self.head(self.none_token).reshape(())


def _tensors(stacked: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(stacked[k]) for k in ("weights", "features", "evidence"))


# -- training, saving, ranking --------------------------------------------------------------------------------
def train_detector(encoded: Sequence[tuple[dict[str, np.ndarray], int | None]], cfg: DetectorConfig | None = None,
                   epochs: int = 30, lr: float = 5e-4, seed: int = 0, log=None,
                   layouts: Iterable[Layout] = ()) -> LineageDetector:
    """Train on encoded tasks ``(inputs of the candidates, index of the right answer or None)``; ``layouts``
    (:attr:`Encoded.layouts` of those tasks) are kept as what it was trained on, and checked when it ranks."""
    cfg = cfg or DetectorConfig()
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses to thread hand-offs on a shared CPU
    try:
        model = _train(encoded, cfg, epochs, lr, seed, log)
    finally:
        torch.set_num_threads(threads)
    seen = sorted(set(layouts))
    model.trained_on = TrainedOn(tuple(seen)) if seen else None
    return model


def _loss(model: LineageDetector, item) -> torch.Tensor:
    (w, f, e), target = item
    scores, none = model(w, f, e)
    return nn.functional.cross_entropy(torch.cat([scores, none[None]])[None], torch.tensor([target]))


def _train(encoded, cfg: DetectorConfig, epochs: int, lr: float, seed: int, log) -> LineageDetector:
    """AdamW with a cosine schedule and clipped gradients, one task per step; 15% of the tasks are held
    out and the epoch with the lowest held-out loss is kept (the training families only: no test data)."""
    model = LineageDetector(cfg)
    data = [(_tensors(s), len(s["evidence"]) if t is None else t) for s, t in encoded if len(s["evidence"])]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    n_val = max(1, len(data) * 15 // 100) if len(data) >= 20 else 0
    val, fit = [data[i] for i in order[:n_val]], [data[i] for i in order[n_val:]]
    evidence = torch.cat([e for (_, _, e), _ in fit])
    model.ev_mean.copy_(evidence.mean(0))
    model.ev_std.copy_(evidence.std(0).clamp_min(1e-3))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs * len(fit), 1))
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for i in rng.permutation(len(fit)):
            loss = _loss(model, fit[i])
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += float(loss.detach())
        model.eval()
        with torch.no_grad():
            held = float(np.mean([float(_loss(model, item)) for item in val])) if val else total / max(len(fit), 1)
        if held < best:
            best, best_state = held, {k: v.detach().clone() for k, v in model.state_dict().items()}
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / max(len(fit), 1):.4f}, held-out {held:.4f}")
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


def save_detector(model: LineageDetector, path: str | Path) -> None:
    """One file: ``{"config": json, "state_dict": tensors, "trained_on": json}`` (loadable with ``weights_only=True``)."""
    import io

    buffer = io.BytesIO()
    blob = {"config": model.cfg.to_json(), "state_dict": model.state_dict()}
    if model.trained_on is not None:
        blob["trained_on"] = model.trained_on.to_json()
    torch.save(blob, buffer)
    write_bytes(path, buffer.getvalue())


def load_detector(path: str | Path) -> LineageDetector:
    try:
        blob = load_checkpoint(Path(path))  # weights only, warnings kept off stderr, refusals explained
        cfg = DetectorConfig(**json.loads(blob["config"]))
        if cfg.evidence != DetectorConfig.evidence:  # another version's evidence vector: its inputs would not fit
            raise BadInputError(path, f"a detector of another ancestree version (evidence of {cfg.evidence} numbers, "
                                      f"this version has {DetectorConfig.evidence}): train it again with `ancestree lineage train`")
        model = LineageDetector(cfg)
        model.load_state_dict(blob["state_dict"])
        if "trained_on" in blob:  # older files lack it: they rank unchecked, as before
            model.trained_on = TrainedOn.from_json(blob["trained_on"])
    except FileNotFoundError:
        raise BadInputError(path, "no such detector file") from None
    except BadInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means the file is not a detector
        raise BadInputError(path, f"not a detector saved by `ancestree lineage train` ({exc.__class__.__name__})") from None
    return model.eval()


class DetectorRanker:
    """Rank candidates with a trained :class:`LineageDetector`."""

    method = "detector"

    def __init__(self, model: LineageDetector, probe_data: str | Path | np.ndarray | None = None,
                 cache: FingerprintCache | str | bool | None = None, source: str | Path | None = None) -> None:
        self.model = model
        self.encoder = PairEncoder(model.cfg, probe_data, WeightsRanker(cache=cache))
        self.source = source  # the detector file, named when it cannot rank a child

    @property
    def cache(self) -> FingerprintCache | None:
        """The fingerprint cache its weight evidence reads through."""
        return self.encoder.weights.cache

    @classmethod
    def load(cls, path: str | Path, probe_data: str | Path | np.ndarray | None = None,
             cache: FingerprintCache | str | bool | None = None) -> DetectorRanker:
        return cls(load_detector(path), probe_data, cache, source=path)

    def without_graph(self) -> DetectorRanker:
        """The same detector with the recovered graph abstaining (as :meth:`WeightsRanker.without_graph`)."""
        ranker = copy.copy(self)
        ranker.encoder = self.encoder.without_graph()
        return ranker

    def rank(self, child: Source, candidates: Sequence[Source]) -> Ranking:
        check_distinct(child, list(candidates))
        if is_adapter(child):  # its tensors are weight differences: no weight token of a model to score
            return rank_adapter_instead("the detector", child, candidates, self.encoder.weights.cache)
        probe_data = self.encoder.probe_data
        require_inputs(probe_data, MIN_CENTRED, "the detector's feature token (Gram matrices over the inputs)")
        got = self.encoder.encode(child, candidates)
        keep, incomparable, notes = self._within_training(got)
        if not keep:
            return make_ranking(got.child, self.method, [], Calibration(), incomparable)
        with torch.no_grad():
            scores, none = self.model(*_tensors(got.take(keep)))
        scored = [CandidateScore(got.ids[i], float(s)) for i, s in zip(keep, scores)]
        ranking = make_ranking(got.child, self.method, scored, Calibration(1.0, float(none)), incomparable)
        for note in [*notes, small_probe_note(probe_data, used=self.model.cfg.probes)]:
            if note:
                ranking.note(*note)
        return ranking

    def _within_training(self, got: Encoded) -> tuple[list[int], dict[str, str], list[tuple[str, str]]]:
        """``(positions of the candidates whose weight layout it was trained on, incomparable, notes)``.

        A pair of another layout is set apart as incomparable; when that leaves no candidate, the child is
        beyond the detector and :class:`BadInputError` names the file and the mismatch: its scores would
        be numbers it never learned to read, not a ranking. Other names on trained shapes are ranked, with
        a note. A file saved before layouts were recorded is not checked."""
        trained = self.model.trained_on
        if trained is None:
            return list(range(len(got.ids))), dict(got.incomparable), []
        keep: list[int] = []
        notes: list[tuple[str, str]] = []
        incomparable = dict(got.incomparable)
        for i, (cid, lay) in enumerate(zip(got.ids, got.layouts)):
            if problem := trained.problem(lay, "this pair's are"):
                incomparable[cid] = f"beyond the detector: {problem}"
                continue
            keep.append(i)
            if (same := trained.renamed(lay)) and not notes:
                notes.append((str(self.source or "detector"), f"trained on weight matrices {_shown(same)}; {got.child}'s of "
                                                              f"the same shapes are {_shown(lay)}: ranked as if they were those"))
        if got.ids and not keep:
            mismatch = trained.problem(got.layouts[0], f"{got.child}'s are")
            raise BadInputError(self.source, f"{mismatch}: it cannot rank "
                                             "this child's candidates (train one on models of its architecture with "
                                             "`ancestree lineage train`, or use --method weights)")
        return keep, incomparable, notes


def fit_on_zoo(zoo: str | Path, out: str | Path | None = None, cfg: DetectorConfig | None = None, epochs: int = 30,
               max_tasks: int = 400, seed: int = 0, log=print) -> LineageDetector:
    """Train a detector on the train split of ``zoo`` (cross-generation and none tasks) and save it."""
    from ancestree.lineage.tasks import Zoo, make_tasks

    if epochs < 1 or max_tasks < 1:
        raise BadInputError(None, f"--epochs and --max-tasks must be at least 1 (got {epochs} and {max_tasks})")
    if out is not None:
        check_writable(out)  # before minutes of training, not after
    cfg = cfg or DetectorConfig()
    z = Zoo.load(zoo)
    tasks = make_tasks(z, splits=("train",), candidate_splits=("train",), seed=seed, older=True)
    plain = [t for t in tasks if t.variant == "plain"]
    if not plain:
        raise BadInputError(zoo, "has no parent-detection tasks in its train split (make one with "
                                 "`ancestree zoo make DIR --preset lineage`)")
    # max_tasks of the paper's tasks, plus a third as many with older ancestors beside the sought one (the
    # steps of an --ancestors walk): in place of paper tasks they cost 2-6 points of top-1
    elders = [t for t in tasks if t.variant == "older"]
    tasks = ([plain[i] for i in np.random.default_rng(seed).permutation(len(plain))[:max_tasks]]
             + [elders[i] for i in np.random.default_rng([seed, 1]).permutation(len(elders))[: max_tasks // 3]])
    encoder, encoded, layouts, start = PairEncoder(cfg), [], [], time.perf_counter()
    for n, task in enumerate(tasks):
        got = encoder.encode(task.child, list(task.candidates))
        encoded.append((got.inputs, None if task.truth is None else got.ids.index(task.truth)))
        layouts += got.layouts
        if log and (n + 1) % 50 == 0:
            log(f"encoded {n + 1}/{len(tasks)} tasks ({time.perf_counter() - start:.0f} s)")
    model = train_detector(encoded, cfg, epochs=epochs, seed=seed, log=log, layouts=layouts)
    if out is not None:
        save_detector(model, out)
    return model
