"""Calibrated edge confidences: Platt scaling of the recovery scores, fitted on held-out zoo edges.

Tree edges get ``σ(a · logit(score) + b)``; edges decided by exact tests (duplicates, quantized, pruned,
merges, adapters) get the share of such edges that were right in the zoos the calibration was fitted on.
The fitted numbers live in ``graph/calibration.json`` (recoveries that weigh declared bases) and
``graph/calibration-weights.json`` (weights only, ``--no-declared``); see :func:`fit_calibration`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ancestree.atomic import write_text


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class Calibration:
    """Maps an :class:`~ancestree.graph.recover.Edge`'s raw score to a calibrated probability."""

    def __init__(self, a: float = 1.0, b: float = 0.0, by_kind: dict[str, float] | None = None, meta: dict | None = None) -> None:
        self.a, self.b = float(a), float(b)
        self.by_kind = dict(by_kind or {})
        self.meta = dict(meta or {})

    def apply(self, edge: Any) -> float:
        if edge.kind != "tree":
            return float(self.by_kind.get(edge.kind, edge.score))
        return float(1.0 / (1.0 + np.exp(-(self.a * _logit(edge.score) + self.b))))

    def fit(self, kinds: list[str], scores: list[float], correct: list[bool],
            more_exact: tuple[list[str], list[bool]] = ([], [])) -> Calibration:
        """Fit on edges of held-out zoos: their kind, raw score and whether they were right.

        ``more_exact`` (kinds, right) are further edges counted for the rates of the exact kinds only: a
        rate is a share, and a handful of edges shrinks it far (six right duplicates of six gave 0.875),
        while the tree edges' scaling depends on the zoos it is fitted on."""
        from sklearn.linear_model import LogisticRegression

        kinds_a, scores_a, y = np.asarray(kinds), np.asarray(scores, dtype=np.float64), np.asarray(correct, dtype=bool)
        tree = kinds_a == "tree"
        if tree.sum() >= 4 and 0 < y[tree].sum() < tree.sum():
            lr = LogisticRegression(C=10.0).fit(_logit(scores_a[tree]).reshape(-1, 1), y[tree])
            self.a, self.b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        exact_kinds = np.concatenate([kinds_a[~tree], np.asarray(more_exact[0], dtype=kinds_a.dtype)])
        exact_y = np.concatenate([y[~tree], np.asarray(more_exact[1], dtype=bool)])
        for kind in set(exact_kinds[exact_kinds != "tree"].tolist()):
            sel = exact_kinds == kind
            # Laplace-smoothed share of right edges of this kind
            self.by_kind[kind] = float((exact_y[sel].sum() + 1) / (sel.sum() + 2))
        self.meta["edges"] = int(len(y))
        self.meta["exact_edges"] = int((exact_kinds != "tree").sum())
        return self

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "by_kind": self.by_kind, **self.meta}

    def save(self, path: str | Path) -> None:
        write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        meta = {k: v for k, v in data.items() if k not in ("a", "b", "by_kind")}
        return cls(data.get("a", 1.0), data.get("b", 0.0), data.get("by_kind", {}), meta)

    @classmethod
    def load(cls, path: str | Path | None = None, weights_only: bool = False) -> Calibration:
        """The calibration at ``path``, else the shipped one: of recoveries that weigh declared bases
        (``calibration.json``), or of weights-only ones (``weights_only``: ``calibration-weights.json``; a card
        that agrees makes an edge likelier right, so the same raw score is worth less without cards)."""
        if path is None:
            name = "calibration-weights.json" if weights_only else "calibration.json"
            text = resources.files("ancestree.graph").joinpath(name).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))


def reliability(probabilities: list[float], correct: list[bool], bins: int = 5) -> dict[str, Any]:
    """Expected calibration error and a reliability table (mean confidence vs accuracy per bin)."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    rows, ece = [], 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (p >= lo) & ((p < hi) | (hi == 1.0))
        if sel.any():
            rows.append({"bin": f"{lo:.1f}-{hi:.1f}", "n": int(sel.sum()), "confidence": float(p[sel].mean()), "accuracy": float(y[sel].mean())})
            ece += sel.sum() / len(p) * abs(p[sel].mean() - y[sel].mean())
    return {"ece": float(ece), "bins": rows, "brier": float(np.mean((p - y) ** 2)) if len(p) else 0.0}


__all__ = ["Calibration", "reliability"]
