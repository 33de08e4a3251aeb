"""Which of two related models is the parent: a small logistic model on weight-statistics deltas.

MoTHer fixes one rule by hand (the parent has the higher kurtosis) and flips it by hand when it fails. Here
the rule is learned: every feature is antisymmetric (``f(c, p) = −f(p, c)``), so a logistic model without an
intercept gives ``P(p→c) = σ(w·f(p, c))`` and ``P(c→p) = 1 − P(p→c)`` by construction. The weights ``w`` are
fitted on the true edges of synthetic zoos (:func:`fit_direction`, run by
``python -m ancestree.graph.direction ZOO... -o src/ancestree/graph/direction.json``) and shipped as a small
JSON file; ``direction.json`` records which zoos it was fitted on.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np

from ancestree.atomic import write_text
from ancestree.graph.vectors import GroupVectors

#: Feature names, in order (all are "child minus parent" summaries over the matched tensors).
FEATURES = (
    "kurtosis_delta",  # mean of asinh(kurtosis) change
    "kurtosis_votes",  # share of tensors whose kurtosis grew, minus share that shrank
    "log_rms_delta",  # mean log RMS change (weight decay shrinks, long training grows)
    "rms_votes",
    "abs_skew_delta",
    "log_absmax_delta",
    "zeros_delta",
    "precision_delta",  # bits of precision (a copy stored coarser is the child)
)

DEFAULT_PATH = "direction.json"


def pair_features(gv: GroupVectors, parents: np.ndarray, children: np.ndarray) -> np.ndarray:
    """Features of hypothesised edges ``parents[k] → children[k]`` (row indices of ``gv``), shape (m, F)."""
    both = gv.matched[parents] & gv.matched[children]
    count = np.maximum(both.sum(axis=1), 1)

    def mean(delta: np.ndarray) -> np.ndarray:
        return np.where(both, delta, 0.0).sum(axis=1) / count

    dk = np.arcsinh(gv.kurtosis[children]) - np.arcsinh(gv.kurtosis[parents])
    dr = gv.log_rms[children] - gv.log_rms[parents]
    cols = [
        mean(dk),
        mean(np.sign(np.where(np.abs(dk) > 1e-6, dk, 0.0))),
        mean(dr),
        mean(np.sign(np.where(np.abs(dr) > 1e-6, dr, 0.0))),
        mean(gv.abs_skew[children] - gv.abs_skew[parents]),
        mean(gv.log_absmax[children] - gv.log_absmax[parents]),
        mean(gv.zeros[children] - gv.zeros[parents]),
        np.clip(mean(gv.precision[children] - gv.precision[parents]), -16, 16) / 8.0,
    ]
    return np.stack(cols, axis=1)


class DirectionModel:
    """``P(parent → child)`` from :func:`pair_features`; ``coef`` has one weight per feature, no intercept."""

    def __init__(self, coef: np.ndarray | None = None, meta: dict | None = None) -> None:
        self.coef = np.zeros(len(FEATURES)) if coef is None else np.asarray(coef, dtype=np.float64)
        self.meta = dict(meta or {})

    def fit(self, X: np.ndarray, C: float = 1.0) -> DirectionModel:
        """Fit on features of TRUE edges (parent → child); reversed copies are the negatives."""
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        data = np.vstack([X, -X])
        labels = np.r_[np.ones(len(X)), np.zeros(len(X))]
        lr = LogisticRegression(C=C, fit_intercept=False, max_iter=1000).fit(data, labels)
        self.coef = lr.coef_[0]
        self.meta["train_pairs"] = int(len(X))
        self.meta["train_accuracy"] = float(np.mean(X @ self.coef > 0)) if len(X) else 0.0
        return self

    def proba(self, X: np.ndarray) -> np.ndarray:
        """P(the first model of each row is the parent)."""
        return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(X) @ self.coef, -30, 30)))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "coef": [float(c) for c in self.coef], **self.meta}

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> DirectionModel:
        if list(data.get("features", [])) != list(FEATURES):
            raise ValueError("direction model was fitted on other features; refit it")
        meta = {k: v for k, v in data.items() if k not in ("features", "coef")}
        return cls(np.asarray(data["coef"], dtype=np.float64), meta)

    @classmethod
    def load(cls, path: str | Path | None = None) -> DirectionModel:
        """The shipped model (``graph/direction.json``) or the one at ``path``."""
        if path is None:
            text = resources.files("ancestree.graph").joinpath(DEFAULT_PATH).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))


__all__ = ["FEATURES", "DirectionModel", "pair_features"]
