"""ProbeX tree experts: route a model to its Model Tree, read its chosen layers, say what it learned.

``ProbeXExperts(...).fit(zoo)`` reads ``zoo/truth.json`` (each model's ``classes`` and ``split``), caches the
candidate layers of every model once (:class:`~ancestree.probex.layers.LayerCache`), clusters the models
into trees with the :class:`~ancestree.probex.router.Router` (no oracle: truth's ``tree`` is never read),
and trains one :class:`~ancestree.probex.model.ProbeX` expert per tree on its ``train`` models, choosing the
layer(s) on its ``val`` models. ``test`` models are never opened during ``fit``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from ancestree.atomic import atomic_path, write_text
from ancestree.errors import DAMAGED_FILE, BadInputError, several
from ancestree.io import load_model
from ancestree.probex.layers import KEY_VERSION, LayerCache, architecture_key, candidate_layers, read_candidates
from ancestree.probex.model import PRESETS, ProbeX, ProbeXConfig
from ancestree.probex.naming import RowNamer
from ancestree.probex.router import MEMBERS_KEY, Router, graph_clusters, sketch
from ancestree.probex.text import DEFAULT_TEMPLATE, CachedEncoder, TextEncoder, encode_classes, get_text_encoder


@dataclass(frozen=True)
class ZooModel:
    """One model of a zoo as ``truth.json`` describes it (``tree`` only ever used to score the router)."""

    id: str
    path: Path
    classes: tuple[str, ...]
    split: str | None
    tree: Any = None


def _damaged_layer(layers: Mapping[str, np.ndarray]) -> str | None:
    """The first layer holding NaN or infinite values (a diverged or damaged checkpoint), if any."""
    return next((name for name, values in layers.items() if not np.isfinite(values).all()), None)


def read_zoo(zoo: str | Path) -> list[ZooModel]:
    """The models of a zoo folder from its ``truth.json``."""
    from ancestree.graph.model_graph import load_zoo_truth

    zoo = Path(zoo)
    data = load_zoo_truth(zoo)
    try:
        models = [ZooModel(m["id"], zoo / m["id"], _classes(m), m.get("split"), m.get("tree")) for m in data["models"]]
    except (AttributeError, TypeError) as exc:
        raise BadInputError(zoo / "truth.json", f"malformed truth.json: {exc.__class__.__name__}: {exc}") from None
    ids = [m.id for m in models]
    outside = next((i for i in ids if not isinstance(i, str) or Path(i).is_absolute() or ".." in Path(i).parts), None)
    if outside is not None:  # a zoo's models are below it: a truth.json is no way to read files elsewhere
        raise BadInputError(zoo / "truth.json", f"model id {outside!r} names no folder below the zoo")
    twice = next((i for i, n in Counter(ids).items() if n > 1), None)
    if twice is not None:
        raise BadInputError(zoo / "truth.json", f"model {twice!r} is listed twice")
    odd = next((m for m in models if m.split not in SPLITS), None)
    if odd is not None:  # an unknown split trained nothing and said so only by "0 experts"
        raise BadInputError(zoo / "truth.json", f"model {odd.id!r} has split {odd.split!r}; expected one of "
                                                f"{', '.join(s for s in SPLITS if s)} (or none)")
    return models


#: The splits a zoo's models may be in (None: not for learning, e.g. a root).
SPLITS = ("train", "val", "test", "root", None)


def _classes(model: dict) -> tuple[str, ...]:
    """A model's ``classes``: a list of names (a lone string would be read letter by letter)."""
    classes = model.get("classes") or ()
    if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
        raise TypeError(f"model {model.get('id')!r}: classes must be a list of names, not {json.dumps(classes)[:80]}")
    return tuple(classes)


#: Words that may lead a query up to the class it names ("a model that knows X", "models trained on X").
LEAD_WORDS = frozenset({"a", "an", "the", "model", "models", "network", "networks", "that", "which", "who", "was", "were",
                        "is", "are", "trained", "fine-tuned", "finetuned", "tuned", "on", "of", "for", "about", "with",
                        "knows", "know", "recognises", "recognizes", "recognise", "recognize", "classifies", "classify",
                        "detects", "detect", "sees", "see", "images", "pictures", "photos", ":"})


def _named_in(text: str, classes: Sequence[str] | None) -> str | None:
    """The alternative of ``classes`` that ``text`` names (it is the query itself, no rival of it)."""
    named = named_class(text, list(classes or ()))
    return named if named != text else None


def named_class(query: str, classes: Sequence[str]) -> str:
    """The known class a query names in so many words, else the query as written: the class at the end of
    the query (a plural allowed), led only by :data:`LEAD_WORDS`. "models trained on red striped circles" is
    the class "red striped circle", whose own row answers it, instead of a sentence embedded near several
    classes (precision@10 0.6 against 1.0 for the bare name on model-j); "dark red striped circle", "not red
    striped circles", "non-red striped circle" and "blue squares and red striped circles" are matched by
    meaning, as an unseen class is."""
    return _named_class(query, tuple(classes))


@lru_cache(maxsize=256)
def _named_class(query: str, classes: tuple[str, ...]) -> str:
    """:func:`named_class`, once per query and expert: a search asks it for every model it ranks."""
    text = " ".join(query.lower().replace(":", " : ").split()).rstrip(".!?")
    for name in sorted(classes, key=len, reverse=True):
        found = re.search(r"(?:^|\s)" + re.escape(" ".join(name.lower().split())) + r"(?:e?s)?$", text)
        if found and all(word in LEAD_WORDS for word in text[: found.start()].split()):
            return name
    return query


#: Sentences that mean nothing a model is trained on, in several registers (gibberish, office mail, finance,
#: code): a query no nearer any known class name than the nearest of these is told it matched nothing
#: (:meth:`ProbeXExperts.off_topic`). Against the 28 class names the ``model-j`` experts know these reach a
#: cosine of 0.29 at most (all-MiniLM-L6-v2); "hello world", "the stock market" or "pictures of cats" 0.16-0.20;
#: class words and unseen but related names ("zebra", "traffic signs", "polka dots") 0.35-1.0. Measured
#: against the experts' own encoder and classes, the bound moves with them, but one-word class names sit
#: nearer everyday words: with CIFAR-10's or AG News's names the references reach 0.25-0.27 and "the stock
#: market" (0.32 to "automobile") or "kittens" (0.34 to a news topic) get no note. A hint, not a filter.
OFF_TOPIC = ("qwzx plorf vintu", "lorem ipsum dolor sit amet", "please find the invoice attached",
             "the meeting moved to Tuesday afternoon", "quarterly tax returns", "interest rates rose by half a percent",
             "the function returns null on error", "asdf jkl")


@dataclass
class Expert:
    """A trained expert of one tree: which layers it reads, the classes it knows, and the network."""

    tree: str
    layers: list[str]
    shapes: list[tuple[int, int]]
    classes: list[str]
    probex: ProbeX
    layer_scores: dict[str, float] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)
    class_rates: dict[str, float] = field(default_factory=dict)
    namer: RowNamer = field(default_factory=RowNamer)
    biases: dict[str, str] = field(default_factory=dict)

    def predict_proba(self, layers: dict[str, np.ndarray]) -> np.ndarray:
        """``(C,)`` probability that the model (its candidate layers) was trained on each known class."""
        proba = self.probex.predict_proba([layers[n][None] for n in self.layers])[0]
        if self.probex.config.row_readout and self.namer.layer is not None and self.namer.coef is not None:  # fitted
            proba = 0.5 * (proba + self.namer.predict_proba(*self.stack(layers, self.namer.layer))[0])
        return proba

    def stack(self, layers: dict[str, np.ndarray], layer: str) -> tuple[np.ndarray, np.ndarray | None]:
        """One model's ``layer`` and its bias as a batch of one (what :class:`RowNamer` reads)."""
        bias = self.biases.get(layer)
        return layers[layer][None], (layers[bias][None] if bias in layers else None)


def _slug(tree: str) -> str:
    """The folder of a tree's expert: stable for a tree name, safe as a file name."""
    return "expert-" + hashlib.sha1(tree.encode()).hexdigest()[:12]


def elementwise_accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    """Share of (model, class) membership bits predicted right at threshold 0.5 (the ProbeX metric)."""
    return float(((proba >= 0.5) == (y >= 0.5)).mean()) if y.size else float("nan")


class ProbeXExperts:
    """One ProbeX expert per Model Tree, with a router in front (scikit-learn style).

    ``clustering="graph"`` takes the trees from ancestree's Model Graph recovery on fingerprints;
    ``"builtin"`` uses the router's own average-linkage clustering of layer sketches.
    """

    def __init__(
        self,
        config: ProbeXConfig | str = "ours",
        text_encoder: str = "minilm",
        template: str = DEFAULT_TEMPLATE,
        max_candidates: int = 32,
        sweep: str = "ridge",
        sweep_epochs: int = 50,
        min_train: int = 8,
        min_class_models: int = 3,
        router: Router | None = None,
        clustering: str = "graph",
        cache_dir: str | Path | None = None,
        resume_dir: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        if isinstance(config, str) and config not in PRESETS:
            raise ValueError(f"config must be one of {sorted(PRESETS)} or a ProbeXConfig, not {config!r}")
        if sweep not in ("ridge", "probex") or clustering not in ("graph", "builtin"):
            raise ValueError(f"sweep must be 'ridge' or 'probex' and clustering 'graph' or 'builtin', not {sweep!r} / {clustering!r}")
        self.config = PRESETS[config] if isinstance(config, str) else config
        self.text_encoder_spec = text_encoder
        self.template = template
        self.max_candidates = max_candidates
        self.sweep = sweep
        self.sweep_epochs = sweep_epochs
        self.min_train = min_train
        self.min_class_models = min_class_models
        self.router = router or Router()
        self.clustering = clustering
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.resume_dir = Path(resume_dir) if resume_dir else None
        self.progress = progress
        self.experts: dict[str, Expert] = {}
        self._cache: LayerCache | None = None
        self._encoder: TextEncoder | None = None
        self.source_: Path | None = None  # the folder it was loaded from
        self._scratch: tempfile.TemporaryDirectory | None = None  # removed with the object (no leftovers in /tmp)

    def _work_dir(self) -> Path:
        """Where layer and text caches go: the folder given, else a temporary one owned by this object."""
        folder = self.resume_dir or self.cache_dir
        if folder:
            return folder
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="probex-")
        return Path(self._scratch.name)

    # -- text ---------------------------------------------------------------------------------------
    @property
    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            self._encoder = get_text_encoder(self.text_encoder_spec, self._work_dir() / "text-embeddings.npz")
        return self._encoder

    def class_embeddings(self, classes: Sequence[str]) -> np.ndarray:
        return encode_classes(self.encoder, classes, self.template)

    def prompt(self, text: str) -> str:
        """A free-text query is used as written; a bare class name is wrapped in the template."""
        return text if "model" in text.lower() else self.template.format(text)

    # -- reading models -----------------------------------------------------------------------------
    @property
    def cache(self) -> LayerCache:
        if self._cache is None:
            root = self.cache_dir or self._work_dir() / "cache"
            self._cache = LayerCache(root, max_layers=self.max_candidates)
        return self._cache

    def read_layers(self, path: str | Path, model_id: str | None = None) -> tuple[str, dict[str, np.ndarray]]:
        """``(architecture key, {candidate layer: matrix})`` of a model, through the cache when there is one."""
        if self._cache is not None or self.cache_dir is not None:
            entry = self.cache.add(path, model_id)
            names = [*entry["layers"], *entry.get("biases", {}).values()]
            return entry["arch"], {n: self.cache.matrix(entry["key"], n) for n in names}
        with load_model(path, model_id) as model:
            names = candidate_layers(model.tensors, self.max_candidates)
            return architecture_key(model.tensors), read_candidates(model, names)  # with biases

    # -- training -----------------------------------------------------------------------------------
    def fit(self, zoo: str | Path) -> ProbeXExperts:
        """Cache layers, route, and train (or resume) one expert per tree of ``zoo``.

        Models whose candidate layers hold NaN or infinite values (a diverged run) are left out of routing
        and training (one would turn every gradient NaN); ``skipped_`` maps them to the reason.
        """
        models = [m for m in read_zoo(zoo) if m.split != "test"]
        if not any(m.split == "train" and m.classes for m in models):  # said so only by "0 experts" before
            raise BadInputError(Path(zoo) / "truth.json", "no model of the train split lists its classes: ProbeX learns "
                                                          "what models were trained on from those (see `ancestree zoo make`)")
        entries = self.cache.add_all({m.id: m.path for m in models}, progress=self.progress)
        self.skipped_: dict[str, str] = {}
        sketches = {}
        for m in models:  # each model's layers read once: checked, then sketched for the router
            layers = {n: self.cache.matrix(entries[m.id]["key"], n) for n in entries[m.id]["layers"]}
            damaged = _damaged_layer(layers)
            if damaged:
                self.skipped_[m.id] = f"NaN or infinite values in layer {damaged}"
            else:
                sketches[m.id] = sketch(layers)
        models = [m for m in models if m.id not in self.skipped_]
        self.router = copy.deepcopy(self.router)  # the router given is a setting: fitting another object's copy leaves it as given
        clusters = graph_clusters({m.id: m.path for m in models}, self.cache.root / "fingerprints") if self.clustering == "graph" else None
        self.router.fit(sketches, {m.id: entries[m.id]["arch"] for m in models}, clusters)
        #: Model Trees found; the router's groups can be more (a tree's ONNX or PEFT copies read another layout)
        self.trees_ = len(set(clusters.values())) if clusters is not None else len(self.router.trees)
        by_id = {m.id: m for m in models}
        self.experts = {}
        trees = tqdm(self.router.trees, desc="tree experts", disable=not self.progress, leave=False)
        for tree in trees:
            members = [by_id[i] for i in tree.members]
            expert = self._resume(tree.name, members)
            if expert is None:
                expert = self._train_expert(tree.name, members, entries)
                if expert is not None and self.resume_dir:
                    self._save_expert(self.resume_dir, expert)  # saved as soon as trained: a rerun resumes here
            if expert is not None:
                self.experts[tree.name] = expert
        return self

    def _labels(self, models: list[ZooModel], classes: list[str]) -> np.ndarray:
        col = {c: j for j, c in enumerate(classes)}
        y = np.zeros((len(models), len(classes)), dtype=np.float32)
        for i, m in enumerate(models):
            for c in m.classes:
                if c in col:
                    y[i, col[c]] = 1.0
        return y

    def _train_expert(self, name: str, members: list[ZooModel], entries: dict[str, dict]) -> Expert | None:
        train = [m for m in members if m.split == "train" and m.classes]
        val = [m for m in members if m.split == "val" and m.classes]
        if len(train) < self.min_train:
            return None  # too few labelled models: this tree gets "no expert", never a guess
        classes = self._known_classes(train)
        candidates, biases = entries[train[0].id]["layers"], entries[train[0].id].get("biases", {})
        stack = lambda ms, layer: self.cache.stack([entries[m.id]["key"] for m in ms], layer)  # noqa: E731
        y_train, y_val = self._labels(train, classes), self._labels(val, classes)
        scores = self._sweep(candidates, train, val or train, y_train, y_val if val else y_train, stack)
        chosen = sorted(scores, key=lambda n: -scores[n])[: self.config.n_layers]
        chosen = [n for n in candidates if n in chosen]  # keep depth order
        probex = ProbeX(self.config).fit([stack(train, n) for n in chosen], y_train, self.class_embeddings(classes))
        shapes = [tuple(entries[train[0].id]["shapes"][n]) for n in chosen]
        rates = dict(zip(classes, y_train.mean(0).round(6).tolist()))
        expert = Expert(name, chosen, shapes, classes, probex, scores, [m.id for m in members], rates, biases=biases)
        if self.config.zero_shot == "rows" or self.config.row_readout:
            with_bias = lambda ms: {n: (stack(ms, n), stack(ms, biases[n]) if n in biases else None) for n in candidates}  # noqa: E731
            names = self.encoder.encode(list(classes))  # bare names: the template adds nothing to a profile
            expert.namer.fit(with_bias(train), y_train, names, with_bias(val) if val else None, y_val if val else None)
        return expert

    def _known_classes(self, train: list[ZooModel]) -> list[str]:
        """Classes with at least ``min_class_models`` training models: enough to learn from. (A root trained
        on every class would otherwise make each held-out class "seen" through that one model.)"""
        counts: dict[str, int] = {}
        for m in train:
            for c in m.classes:
                counts[c] = counts.get(c, 0) + 1
        return sorted(c for c, n in counts.items() if n >= self.min_class_models)

    def _sweep(self, candidates, train, val, y_train, y_val, stack) -> dict[str, float]:
        """Validation accuracy of each candidate layer alone, read by a fast proxy of the expert.

        ``sweep="ridge"`` (default): kernel ridge regression of the classes on the flattened layer (the dense
        linear classifier ProbeX factorises), solved in the N × N kernel so every layer costs milliseconds;
        ``sweep="probex"``: a short ProbeX fit per layer (``sweep_epochs``), as the paper's layer sweep.
        """
        scores = {}
        for layer in candidates:
            xt, xv = stack(train, layer), stack(val, layer)
            if self.sweep == "ridge":
                proba = ridge_proba(xt.reshape(len(xt), -1), y_train, xv.reshape(len(xv), -1))
            else:
                quick = ProbeXConfig.from_dict({**self.config.to_dict(), "epochs": self.sweep_epochs, "joint": False, "n_layers": 1})
                proba = ProbeX(quick).fit([xt], y_train, None).predict_proba([xv])
            scores[layer] = round(elementwise_accuracy(proba, y_val), 6)
        return scores

    # -- inference ----------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        """An object neither fitted nor loaded has no trees: its answers ("no expert fits") would be wrong."""
        if not self.router.trees:
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("these ProbeXExperts are not fitted: call fit(zoo) or ProbeXExperts.load(folder) first")

    def route(self, path: str | Path, model_id: str | None = None) -> tuple[Expert | None, dict[str, np.ndarray]]:
        """The expert of the model's tree (or ``None``) and the model's candidate layers."""
        self._check_fitted()
        arch, layers = self.read_layers(path, model_id)
        damaged = _damaged_layer(layers)
        if damaged:
            raise BadInputError(path, f"NaN or infinite values in layer {damaged}: ProbeX cannot read this model's weights")
        tree = self.router.route(sketch(layers), arch)
        expert = self.experts.get(tree.name) if tree else None
        lacking = [n for n in expert.layers if n not in layers] if expert is not None else []
        if lacking:  # the model has the layout the expert was trained on: its expert.json was changed since
            assert tree is not None  # an expert was found for it
            raise BadInputError(self.source_, f"damaged ProbeX experts folder: the expert of tree {tree.name} reads "
                                              f"layer {lacking[0]!r}, which models of its layout do not have")
        return expert, layers

    def predict(self, path: str | Path, model_id: str | None = None) -> dict[str, Any]:
        """``{"model", "tree", "classes": [{"name", "probability"}]}`` (the contract's JSON)."""
        model_id = str(path) if model_id is None else model_id
        expert, layers = self.route(path, model_id)
        if expert is None:
            return {"model": model_id, "tree": None, "classes": []}
        proba = expert.predict_proba(layers)
        order = np.argsort(-proba, kind="stable")
        return {
            "model": model_id,
            "tree": expert.tree,
            "classes": [{"name": expert.classes[j], "probability": round(float(proba[j]), 6)} for j in order],
        }

    def text_scores(self, expert: Expert, layers: dict[str, np.ndarray], queries: Sequence[str]) -> np.ndarray:
        """How well a model (already routed to ``expert``) matches each query (a class name or a sentence).

        With a fitted :class:`RowNamer` (``zero_shot="rows"``) the score is the response of the output row
        named by the query; otherwise the ProbeX text head's score of the query's prompt.
        """
        if expert.namer.layer is not None and expert.probex.config.zero_shot == "rows":  # fitted
            # the query (first) as the class it names; the alternatives of `--classes` as given: a class the user
            # names as another is not replaced by a known one
            named = [named_class(queries[0], expert.classes), *queries[1:]] if queries else []
            return expert.namer.scores(*expert.stack(layers, expert.namer.layer), self.encoder.encode(named))[0]
        prompts = self.encoder.encode([self.prompt(q) for q in queries])
        return expert.probex.text_scores([layers[n][None] for n in expert.layers], prompts)[0]

    def search(self, text: str, models: Iterable[tuple[str, str | Path]], classes: Sequence[str] | None = None) -> dict[str, Any]:
        """Rank ``(id, path)`` models by how well their weights match ``text``; best first.

        With ``classes``, the score is the softmax probability of the query against the prompts of those
        class names (zero-shot: they need not have been seen in training), which cancels a model's bias
        towards every prompt; without, it is the plain cosine. Models with no expert are left out.
        """
        several(models, "models")
        several(classes or [], "classes")
        itself = (text, _named_in(text, classes))  # the query, and the alternative it names: no rival of it
        queries = [text] + [c for c in classes or () if c not in itself]
        results: list[dict[str, Any]] = []
        damaged: dict[str, str] = {}
        for model_id, path in models:
            try:
                expert, layers = self.route(path, model_id)
            except BadInputError as exc:  # one damaged model does not end a search over many
                damaged[model_id] = exc.problem
                continue
            if expert is None:
                continue
            cos = self.text_scores(expert, layers, queries)
            score = float(cos[0]) if len(queries) == 1 else float(_softmax(cos * logit_scale(expert))[0])
            results.append({"model": model_id, "score": round(score, 6)})
        results.sort(key=lambda r: -r["score"])
        note = self.off_topic(text) if results else None
        return {"query": text, "results": results, **({"damaged": damaged} if damaged else {}), **({"note": note} if note else {})}

    def off_topic(self, text: str) -> str | None:
        """Why ``text`` matches nothing the experts know, else None: its text embedding is no nearer any class
        they were trained on than the nearest of :data:`OFF_TOPIC` (meaningless text) is. The ranking is still
        given (weights always score), but it says little."""
        known = sorted({c for expert in self.experts.values() for c in expert.classes})
        if not known or any(named_class(text, expert.classes) != text for expert in self.experts.values()):
            return None
        vectors = self.encoder.encode([text, *OFF_TOPIC, *known])
        query, null, names = vectors[0], vectors[1:len(OFF_TOPIC) + 1], vectors[len(OFF_TOPIC) + 1:]
        nearest = names @ query
        best = int(np.argmax(nearest))
        if nearest[best] > float((null @ names.T).max()):
            return None
        return (f"the query is unlike every class the experts were trained on (nearest: {known[best]!r}, cosine "
                f"{nearest[best]:.2f}, no nearer than meaningless text): the ranking says little")

    # -- persistence --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``experts.json``, ``router.pt`` and one folder per expert (tensors + JSON only)."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for expert in self.experts.values():
            self._save_expert(directory, expert)
        if isinstance(self.encoder, CachedEncoder) and self.encoder.path is not None:
            copy_text_cache(self.encoder.path, directory / "text-embeddings.npz")
        with atomic_path(directory / "router.pt") as tmp:
            tensors = {t.name: torch.as_tensor(t.centroid) for t in self.router.trees}
            tensors.update({t.name + MEMBERS_KEY: torch.as_tensor(t.sketches) for t in self.router.trees if t.sketches is not None})
            torch.save(tensors, tmp)
        meta = {
            "key_version": KEY_VERSION,
            "config": self.config.to_dict(),
            "text_encoder": self.text_encoder_spec,
            "template": self.template,
            "max_candidates": self.max_candidates,
            "router": self.router.to_json(),
            "experts": {tree: _slug(tree) for tree in self.experts},
        }
        write_text(directory / "experts.json", json.dumps(meta, indent=2))
        return directory

    @staticmethod
    def _save_expert(directory: Path, expert: Expert) -> None:
        folder = directory / _slug(expert.tree)
        folder.mkdir(parents=True, exist_ok=True)
        state = {**expert.probex.state(), **{f"namer.{k}": torch.as_tensor(v) for k, v in expert.namer.state().items()}}
        with atomic_path(folder / "weights.pt") as tmp:
            torch.save(state, tmp)
        meta = {
            "tree": expert.tree,
            "layers": expert.layers,
            "shapes": [list(s) for s in expert.shapes],
            "classes": expert.classes,
            "layer_scores": expert.layer_scores,
            "members": expert.members,
            "class_rates": expert.class_rates,
            "biases": expert.biases,
            "namer": expert.namer.describe(),
            "probex": expert.probex.describe(),
        }
        write_text(folder / "expert.json", json.dumps(meta, indent=2))  # written last: marks the expert complete

    @staticmethod
    def _load_expert(folder: Path) -> Expert:
        meta = json.loads((folder / "expert.json").read_text())
        shapes = cast("list[tuple[int, int]]", [tuple(int(d) for d in s) for s in meta["shapes"]])
        if not isinstance(meta["layers"], list) or len(meta["layers"]) != len(shapes):
            raise ValueError(f"{folder.name}/expert.json lists {meta['layers']!r} for {len(shapes)} layer shapes")
        with warnings.catch_warnings():  # a refused pickle: torch's multi-line advice would bury the one-line error
            warnings.simplefilter("ignore")
            state = torch.load(folder / "weights.pt", weights_only=True)
        namer_state = {k[len("namer.") :]: v.numpy() for k, v in state.items() if k.startswith("namer.")}
        probex = ProbeX.restore(meta["probex"], shapes, {k: v for k, v in state.items() if not k.startswith("namer.")})
        namer = RowNamer.restore(meta.get("namer"), namer_state)
        return Expert(meta["tree"], meta["layers"], shapes, meta["classes"], probex, meta["layer_scores"], meta["members"],
                      meta.get("class_rates", {}), namer, meta.get("biases", {}))

    def _resume(self, name: str, members: list[ZooModel]) -> Expert | None:
        """An expert already trained (same tree, same members, same config) in ``resume_dir``."""
        folder = self.resume_dir / _slug(name) if self.resume_dir else None
        if folder is None or not (folder / "expert.json").is_file():
            return None
        try:
            expert = self._load_expert(folder)
        except DAMAGED_FILE:
            return None  # cut off or damaged (an interrupted run, a full disk): trained again, then overwritten
        same = expert.tree == name and expert.members == [m.id for m in members]
        return expert if same and expert.probex.config == self.config else None

    @classmethod
    def load(cls, directory: str | os.PathLike[str], cache_dir: str | Path | None = None) -> ProbeXExperts:
        """Experts saved by :meth:`save` (everything read with ``weights_only=True``)."""
        directory = Path(directory)
        if not (directory / "experts.json").is_file():
            raise BadInputError(directory, "not a ProbeX experts folder (no experts.json); train one with `ancestree probex train`")
        try:
            return cls._load(directory, cache_dir)
        except BadInputError:
            raise
        except pickle.UnpicklingError:  # torch's weights_only refusal: a page of advice, cut short it says nothing
            raise BadInputError(directory, "damaged ProbeX experts folder: a weights.pt holds pickled Python objects, "
                                           "not tensors only (refused without running them)") from None
        except DAMAGED_FILE as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise BadInputError(directory, f"damaged ProbeX experts folder ({exc.__class__.__name__}: {first or 'empty or cut short'})") from None

    @classmethod
    def _load(cls, directory: Path, cache_dir: str | Path | None) -> ProbeXExperts:
        meta = json.loads((directory / "experts.json").read_text())
        if not isinstance(meta, dict):
            raise BadInputError(directory / "experts.json", "not a ProbeX experts file (a JSON object is expected)")
        if meta.get("key_version") != KEY_VERSION:  # its trees' layout keys would match no model now
            raise BadInputError(directory / "experts.json", "experts written by an older ancestree (other architecture keys): "
                                                            "train them again with `ancestree probex train`")
        obj = cls(
            ProbeXConfig.from_dict(meta["config"]),
            text_encoder=meta["text_encoder"],
            template=meta["template"],
            max_candidates=meta["max_candidates"],
            cache_dir=cache_dir,
            progress=False,
        )
        centroids = {k: v.numpy() for k, v in torch.load(directory / "router.pt", weights_only=True).items()}
        obj.router = Router.from_json(meta["router"], centroids)
        obj.source_ = directory
        obj.experts = {tree: cls._load_expert(directory / slug) for tree, slug in meta["experts"].items()}
        # read, never written: `search` and `serve` read experts folders (queries must not grow them, and a
        # folder that cannot be written is no error); a model fitted again is saved with a cache of its own
        obj._encoder = get_text_encoder(obj.text_encoder_spec, directory / "text-embeddings.npz", read_only=True)
        return obj


def ridge_proba(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Kernel ridge regression of multi-hot classes on centred features; ``alpha`` relative to the kernel scale."""
    mean = x_train.mean(0)
    a, b = (x_train - mean).astype(np.float64), (x_val - mean).astype(np.float64)
    k = a @ a.T
    k_reg = k + alpha * np.trace(k) / len(k) * np.eye(len(k))
    coef = np.linalg.solve(k_reg, y_train - y_train.mean(0))
    return b @ a.T @ coef + y_train.mean(0)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def logit_scale(expert: Expert) -> float:
    """What turns an expert's prompt scores into softmax logits: its (learned or unit) temperature for plain
    cosines; 1 for calibrated scores, which are already standardised."""
    if expert.probex.config.zero_shot != "cosine":
        return 1.0
    return float(expert.probex.nets["text"].log_scale.detach().clamp(max=np.log(100.0)).exp())


def copy_text_cache(src: Path, dst: Path) -> None:
    """Carry the text-embedding cache along with saved experts (so search needs no re-encoding)."""
    if src.is_file() and src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)


@lru_cache(maxsize=4)
def _load_cached(directory: str, stamp: int) -> ProbeXExperts:
    return ProbeXExperts.load(directory)


def search(
    query: str,
    experts_dir: str | Path | ProbeXExperts,
    model_paths: Iterable[str | Path] | Mapping[str, str | Path],
    classes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rank models by how well their weights match ``query``: ``[{"model": id, "score": float}]``, best first.

    ``experts_dir`` is a folder written by ``ancestree probex train`` (loaded once per process and reused
    while unchanged) or fitted :class:`ProbeXExperts`; ``model_paths`` are paths (their ids are the paths as
    given) or ``{id: path}``; ``classes`` are other class names to rank the query against (see
    :meth:`ProbeXExperts.search`). Models of a tree with no expert are left out; a model that cannot be read,
    and a query unlike every class the experts know, are told in a ``UserWarning`` (the method returns them
    as ``"damaged"`` and ``"note"``).
    """
    if isinstance(experts_dir, ProbeXExperts):
        experts = experts_dir
    else:
        meta = Path(experts_dir) / "experts.json"
        stamp = meta.stat().st_mtime_ns if meta.is_file() else 0
        experts = _load_cached(str(Path(experts_dir).resolve()), stamp)
    several(model_paths, "model_paths")
    items = model_paths.items() if isinstance(model_paths, Mapping) else ((str(p), p) for p in model_paths)
    record = experts.search(query, list(items), classes)
    for model_id, problem in record.get("damaged", {}).items():
        warnings.warn(f"{model_id}: {problem}; left out of the results", stacklevel=2)
    if "note" in record:
        warnings.warn(record["note"], stacklevel=2)
    return record["results"]
