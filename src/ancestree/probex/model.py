"""ProbeX: learn from a layer's weights what a model was trained on, and align weights with text.

A layer's weight matrix ``X`` (``h × w``) is read by ``r_U`` learned probes ``U`` (``w × r_U``): the responses
``X·U`` go through a shared projection ``V`` (``h -> r_V``) with a ReLU, and one linear map over the flattened
``r_U × r_V`` responses (the per-probe encoders) gives a representation ``z`` of size ``r_T``. Heads on ``z``:

* class membership: a linear layer, BCE-with-logits on the multi-hot training classes;
* text alignment: a linear map of frozen text embeddings into ``r_T``; logits are cosines between ``z`` and
  the mapped class prompts, trained with cross-entropy.

:data:`FAITHFUL` reproduces the paper's design (two separate networks, no input normalisation, no
temperature, one layer). :data:`OURS` adds, each switchable for the ablation:

* ``delta``: the input is ``X - X_ref`` with ``X_ref`` the tree's reference (mean of its training models), so
  the shared root weights, identical in every model, no longer drown the small fine-tuning change;
* ``standardize``: per-sample standardisation of every view, removing how *far* a model drifted (learning
  rate, epochs) and keeping *where* it drifted;
* ``views``: probes on ``Xᵀ`` as well, and on the Gram matrices ``X·Xᵀ`` and ``Xᵀ·X``;
* ``temperature``: a learned logit scale, and ``symmetric``: a CLIP-style loss in both directions
  (model -> classes and class -> models of the batch);
* ``joint``: one encoder trained with both heads; ``n_layers``: several layers, encodings summed;
* ``zero_shot``: how a prompt is scored against a model. ``"cosine"`` (the paper): the plain cosine.
  ``"calibrated"``: the cosine standardised by its mean and spread over the *training* models, so a prompt
  that is near every model (a hub) stops winning for all of them. ``"+transfer"``: add the (standardised)
  logit of a class-head row synthesised for the prompt by kernel ridge from the seen classes' text
  embeddings to their learned class-head rows (an unseen "red dotted circle" borrows from the seen
  "red striped circle", "blue dotted circle", ...). ``"rows"``: text is not scored by this network at all
  but by :class:`~ancestree.probex.naming.RowNamer`, which names the output neurons of the tree;
* ``row_readout``: class membership is the mean of this network's probability and the RowNamer's
  (a logistic reading of the class's own output row).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ProbeXConfig:
    """Every knob of the expert network; the defaults are the paper's."""

    r_u: int = 128
    r_v: int = 128
    r_t: int = 128
    delta: bool = False
    standardize: bool = False
    views: tuple[str, ...] = ("x",)
    temperature: bool = False
    symmetric: bool = False
    joint: bool = False
    zero_shot: str = "cosine"
    row_readout: bool = False
    n_layers: int = 1
    epochs: int = 500
    batch_size: int = 128
    lr: float = 1e-3
    lr_text: float = 2e-3
    weight_decay: float = 1e-5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "views": list(self.views)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeXConfig:
        return cls(**{**data, "views": tuple(data.get("views", ("x",)))})


FAITHFUL = ProbeXConfig()
OURS = ProbeXConfig(
    delta=True, standardize=True, views=("x", "xt"), temperature=False, symmetric=False, joint=True, n_layers=1,
    zero_shot="rows", row_readout=True,
)
PRESETS = {"faithful": FAITHFUL, "ours": OURS}

#: Views of a matrix X (h × w) and the shape each one has.
VIEW_SHAPES = {
    "x": lambda h, w: (h, w),
    "xt": lambda h, w: (w, h),
    "gram": lambda h, w: (h, h),
    "gramt": lambda h, w: (w, w),
}


def make_views(x: torch.Tensor, views: tuple[str, ...], standardize: bool) -> list[torch.Tensor]:
    """The requested views of a batch of matrices ``(B, h, w)``, each standardised per sample if asked."""
    out = []
    for view in views:
        if view == "x":
            v = x
        elif view == "xt":
            v = x.transpose(1, 2)
        elif view == "gram":
            v = x @ x.transpose(1, 2) / x.shape[2]
        elif view == "gramt":
            v = x.transpose(1, 2) @ x / x.shape[1]
        else:
            raise ValueError(f"unknown view {view!r}")
        if standardize:
            flat = v.flatten(1)
            v = (v - flat.mean(1)[:, None, None]) / (flat.std(1)[:, None, None] + 1e-8)
        out.append(v)
    return out


class ProbeEncoder(nn.Module):
    """One matrix view ``(B, h, w)`` -> ``(B, r_T)``: probes U, shared projection V + ReLU, per-probe encoders."""

    def __init__(self, h: int, w: int, r_u: int, r_v: int, r_t: int) -> None:
        super().__init__()
        self.probes = nn.Parameter(torch.randn(w, r_u) / math.sqrt(w))
        self.project = nn.Linear(h, r_v)
        self.encode = nn.Linear(r_u * r_v, r_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        responses = x @ self.probes  # (B, h, r_u)
        projected = F.relu(self.project(responses.transpose(1, 2)))  # (B, r_u, r_v)
        return self.encode(projected.flatten(1))


class ProbeXNet(nn.Module):
    """Encoders for every (layer, view), summed into ``z``; a class head and/or a text head on top."""

    def __init__(self, shapes: list[tuple[int, int]], n_classes: int, text_dim: int, cfg: ProbeXConfig, heads: tuple[str, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.heads = heads
        self.encoders = nn.ModuleList(
            ProbeEncoder(*VIEW_SHAPES[v](h, w), cfg.r_u, cfg.r_v, cfg.r_t) for h, w in shapes for v in cfg.views
        )
        self.class_head = nn.Linear(cfg.r_t, n_classes) if "bce" in heads else None
        self.text_map = nn.Linear(text_dim, cfg.r_t) if "text" in heads else None
        # Faithful: cosine logits used as they are (scale 1); ours: a learned scale, started near CLIP's 1/0.07.
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)), requires_grad=cfg.temperature)
        if not cfg.temperature:
            self.log_scale.data.zero_()

    def forward(self, layers: list[torch.Tensor]) -> torch.Tensor:
        views = [v for x in layers for v in make_views(x, self.cfg.views, self.cfg.standardize)]
        return torch.stack([enc(v) for enc, v in zip(self.encoders, views)]).sum(0)

    def text_logits(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        assert self.text_map is not None, "a net without the text head"
        t = F.normalize(self.text_map(text), dim=1)
        return self.log_scale.clamp(max=math.log(100.0)).exp() * F.normalize(z, dim=1) @ t.T


def _class_head(net: ProbeXNet) -> nn.Linear:
    """The class head of the ``"bce"`` net (built with it)."""
    assert net.class_head is not None, "a net without the class head"
    return net.class_head


def _text_map(net: ProbeXNet) -> nn.Linear:
    """The text map of the ``"text"`` net (built with it)."""
    assert net.text_map is not None, "a net without the text head"
    return net.text_map


def _standardise(score: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Scores of each prompt (column) relative to their mean and spread over reference models."""
    return (score - reference.mean(0)) / (reference.std(0) + 1e-6)


def _text_loss(logits: torch.Tensor, y: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """Cross-entropy of cosine logits against the (normalised) multi-hot classes; optionally both ways."""
    has = y.sum(1) > 0
    loss = -(y[has] / y[has].sum(1, keepdim=True) * F.log_softmax(logits[has], 1)).sum(1).mean()
    if symmetric:
        cols = y.sum(0) > 0
        yt, lt = y[:, cols].T, logits[:, cols].T
        loss = 0.5 * (loss - (yt / yt.sum(1, keepdim=True) * F.log_softmax(lt, 1)).sum(1).mean())
    return loss


@dataclass
class ProbeX:
    """One expert on one tree: ``fit(layers, Y, text_embeddings)``, then ``predict_proba`` / ``text_scores``.

    ``layers`` is a list (one per layer used) of ``(N, h, w)`` float32 arrays; ``Y`` the ``(N, C)`` multi-hot
    training classes; ``text`` the ``(C, d)`` embeddings of the class prompts.
    """

    config: ProbeXConfig = field(default_factory=ProbeXConfig)
    nets: dict[str, ProbeXNet] = field(default_factory=dict)
    reference: list[np.ndarray] = field(default_factory=list)
    #: embeddings of the training models per head, and the seen classes' text (for zero-shot calibration)
    train_z: dict[str, torch.Tensor] = field(default_factory=dict)
    text_seen: torch.Tensor | None = None

    # -- training -----------------------------------------------------------------------------------
    def fit(self, layers: list[np.ndarray], y: np.ndarray, text: np.ndarray | None = None) -> ProbeX:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.reference = [x.mean(0) for x in layers] if cfg.delta else []
        shapes = [tuple(x.shape[1:]) for x in layers]
        plan: list[tuple[tuple[str, ...], float]] = (
            [(("bce", "text"), cfg.lr)] if cfg.joint else [(("bce",), cfg.lr), (("text",), cfg.lr_text)]
        )
        text_dim = 0 if text is None else text.shape[1]
        inputs, yt = self._inputs(layers), torch.as_tensor(y, dtype=torch.float32)
        tt = None if text is None else torch.as_tensor(text, dtype=torch.float32)
        self.nets = {}
        self.text_seen = tt
        for heads, lr in plan:
            heads = tuple(h for h in heads if h == "bce" or tt is not None)
            if not heads:
                continue
            net = ProbeXNet(shapes, y.shape[1], text_dim, cfg, heads)
            self._train(net, inputs, yt, tt, lr)
            for head in heads:
                self.nets[head] = net
        if tt is not None:
            self.train_z = {head: self._z(head, layers).detach() for head in self.nets}
        return self

    def _train(self, net: ProbeXNet, inputs: list[torch.Tensor], y: torch.Tensor, text: torch.Tensor | None, lr: float) -> None:
        cfg = self.config
        # fused Adam: on CPU the per-tensor loop over the 2M-weight per-probe encoder costs more than the step
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=lr, weight_decay=cfg.weight_decay, fused=True)
        gen = torch.Generator().manual_seed(cfg.seed)
        n = y.shape[0]
        net.train()
        for _ in range(cfg.epochs):
            for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
                z = net([x[idx] for x in inputs])
                loss = torch.zeros(())
                if net.class_head is not None:
                    loss = loss + F.binary_cross_entropy_with_logits(net.class_head(z), y[idx])
                if net.text_map is not None:
                    assert text is not None  # the text head is only built with text
                    loss = loss + _text_loss(net.text_logits(z, text), y[idx], cfg.symmetric)
                opt.zero_grad()
                loss.backward()
                opt.step()
        net.eval()

    def _inputs(self, layers: list[np.ndarray]) -> list[torch.Tensor]:
        if self.config.delta:
            layers = [x - ref for x, ref in zip(layers, self.reference)]
        return [torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32) for x in layers]

    # -- inference ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _z(self, head: str, layers: list[np.ndarray]) -> torch.Tensor:
        net = self.nets[head]
        inputs = self._inputs(layers)
        return torch.cat([net([x[i : i + 256] for x in inputs]) for i in range(0, inputs[0].shape[0], 256)])

    @torch.no_grad()
    def predict_proba(self, layers: list[np.ndarray]) -> np.ndarray:
        """``(N, C)`` probability that each model was trained on each training class."""
        return torch.sigmoid(_class_head(self.nets["bce"])(self._z("bce", layers))).numpy()

    @torch.no_grad()
    def text_scores(self, layers: list[np.ndarray], text: np.ndarray) -> np.ndarray:
        """``(N, K)`` score of each model for each prompt (any class, seen or not); higher = better match."""
        t = torch.as_tensor(text, dtype=torch.float32)
        score = self._cosines(self._z("text", layers), t)
        if "calibrated" in self.config.zero_shot and "text" in self.train_z:
            score = _standardise(score, self._cosines(self.train_z["text"], t))
        if "transfer" in self.config.zero_shot and "bce" in self.train_z and self.text_seen is not None:
            head = self._transfer_head(t)
            logits = self._z("bce", layers) @ head[:, :-1].T + head[:, -1]
            score = score + _standardise(logits, self.train_z["bce"] @ head[:, :-1].T + head[:, -1])
        return score.numpy()

    def _cosines(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        net = self.nets["text"]
        return F.normalize(z, dim=1) @ F.normalize(_text_map(net)(text), dim=1).T

    def _transfer_head(self, text: torch.Tensor, ridge: float = 0.1) -> torch.Tensor:
        """Class-head rows (weights | bias) for prompts, by kernel ridge from the seen classes' rows."""
        head = _class_head(self.nets["bce"])
        rows = torch.cat([head.weight, head.bias[:, None]], 1)  # (C, r_T + 1)
        assert self.text_seen is not None  # callers check it
        seen = F.normalize(self.text_seen, dim=1)
        gram = seen @ seen.T
        alpha = torch.linalg.solve(gram + ridge * torch.eye(len(gram)), rows - rows.mean(0))
        return F.normalize(text, dim=1) @ seen.T @ alpha + rows.mean(0)

    # -- persistence --------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        """Tensors only (loadable with ``torch.load(weights_only=True)``)."""
        out = {f"ref.{i}": torch.as_tensor(r) for i, r in enumerate(self.reference)}
        out.update({f"train_z.{head}": z for head, z in self.train_z.items()})
        if self.text_seen is not None:
            out["text_seen"] = self.text_seen
        seen: dict[int, str] = {}
        for head, net in self.nets.items():
            if id(net) in seen:
                continue
            seen[id(net)] = head
            out.update({f"net.{head}.{k}": v for k, v in net.state_dict().items()})
        return out

    def describe(self) -> dict[str, Any]:
        """The JSON half of a saved expert: config and how the networks are laid out."""
        groups: dict[str, list[str]] = {}
        for head, net in self.nets.items():
            groups.setdefault(str(id(net)), []).append(head)
        return {
            "config": self.config.to_dict(),
            "nets": list(groups.values()),
            "n_classes": _class_head(self.nets["bce"]).out_features,
            "text_dim": _text_map(self.nets["text"]).in_features if "text" in self.nets else 0,
        }

    @classmethod
    def restore(cls, meta: dict[str, Any], shapes: list[tuple[int, int]], state: dict[str, torch.Tensor]) -> ProbeX:
        cfg = ProbeXConfig.from_dict(meta["config"])
        expert = cls(
            config=cfg,
            reference=[state[f"ref.{i}"].numpy() for i in range(len(shapes)) if f"ref.{i}" in state],
            train_z={k[len("train_z.") :]: v for k, v in state.items() if k.startswith("train_z.")},
            text_seen=state.get("text_seen"),
        )
        for heads in meta["nets"]:
            net = ProbeXNet(shapes, meta["n_classes"], meta["text_dim"], cfg, tuple(heads))
            prefix = f"net.{heads[0]}."
            net.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
            net.eval()
            for head in heads:
                expert.nets[head] = net
        return expert


def with_overrides(cfg: ProbeXConfig, **changes: Any) -> ProbeXConfig:
    """A copy of ``cfg`` with some fields changed (for the ablation)."""
    return replace(cfg, **changes)
