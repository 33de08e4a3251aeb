"""Zero-shot by naming output neurons: which row of a layer stands for which class, seen or not.

Models of one tree share the root's neuron order. A classifier fine-tuned on a subset of classes moves the
rows of its output layer that belong to those classes, so for a *seen* class the expert can find, on the
training models, the row whose movement follows the class label. A class never seen in training also
owns a row (the root was trained on it), but nothing says which. :class:`RowNamer` names it from the
root's weights and the text encoder alone: the rows of classes that look alike (share a colour, a shape)
point alike in the root, and their names are alike in text. So a row's *profile* (its similarity to the
rows of the seen classes) is matched against a prompt's profile (its text similarity to the seen class
names); prompts asked together are assigned distinct rows (Hungarian matching).

The layer is chosen where the row-to-label correspondence holds best on validation models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment


def row_responses(x: np.ndarray, ref: np.ndarray, b: np.ndarray | None = None, ref_b: np.ndarray | None = None) -> np.ndarray:
    """``(N, h)``: how much each row of each model moved towards its class, relative to the model's other rows.

    Training on a class grows its output row along the direction it already had (the class's feature
    prototype), lengthens it and raises its bias; training without it does the opposite. Three readings
    of that, each standardised over the model's rows (so how far a model drifted overall, its learning rate
    and steps, cancels and only which rows moved most remains), are summed: the change along the row's own
    direction (ignores sideways drift), the change of its norm, and the change of its bias. On the dev zoos
    the sum named held-out classes better than any one reading alone.
    """
    norm = np.linalg.norm(ref, axis=1)
    unit = ref / np.maximum(norm, 1e-12)[:, None]
    out = _per_model(np.einsum("nhw,hw->nh", x - ref[None], unit, optimize=True))
    out = out + _per_model(np.linalg.norm(x, axis=2) - norm[None])
    if b is not None and ref_b is not None:
        out = out + _per_model(b - ref_b[None])
    return out


def _per_model(a: np.ndarray) -> np.ndarray:
    return (a - np.median(a, 1, keepdims=True)) / (a.std(1, keepdims=True) + 1e-12)


def _zscore(a: np.ndarray, axis: int) -> np.ndarray:
    return (a - a.mean(axis, keepdims=True)) / (a.std(axis, keepdims=True) + 1e-8)


def _centred_unit(a: np.ndarray, centre: np.ndarray) -> np.ndarray:
    a = a - centre
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def assign_rows(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows matched one-to-one to classes by the correlation of row response and label: ``(rows, corr)``."""
    corr = _zscore(s, 0).T @ _zscore(y, 0) / len(s)  # (h, C)
    rows, cols = linear_sum_assignment(-corr)
    order = np.argsort(cols)
    return rows[order], corr[rows[order], cols[order]]


#: One layer of many models: ``(N, h, w)`` weights and their ``(N, h)`` biases (``None`` when it has none).
Stack = tuple[np.ndarray, "np.ndarray | None"]


def logistic_1d(r: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Per column ``c``: ``(a_c, b_c)`` of ``P(y_c) = sigmoid(a_c·r_c + b_c)`` by Newton steps (all columns at once)."""
    a, b = np.ones(r.shape[1]), np.zeros(r.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(np.clip(-(a * r + b), -50, 50)))
        w = p * (1 - p) + 1e-9
        g_a, g_b = ((p - y) * r).sum(0) + l2 * a, (p - y).sum(0)
        h_aa, h_ab, h_bb = (w * r * r).sum(0) + l2, (w * r).sum(0), w.sum(0) + 1e-9
        det = h_aa * h_bb - h_ab**2
        a, b = a - (h_bb * g_a - h_ab * g_b) / det, b - (h_aa * g_b - h_ab * g_a) / det
    return a.astype(np.float32), b.astype(np.float32)


@dataclass
class RowNamer:
    """Fit on one tree's training models; score models against any prompt (seen class or not).

    ``sharpness`` turns profile agreement into row weights when a prompt is scored alone.
    """

    sharpness: float = 10.0
    layer: str | None = None
    ref: np.ndarray | None = None
    ref_b: np.ndarray | None = None
    rows: np.ndarray | None = None  # row of each seen class
    text_seen: np.ndarray | None = None
    quality: float = float("nan")
    coef: np.ndarray | None = None  # per seen class: logistic readout of its row's response
    intercept: np.ndarray | None = None

    def fit(
        self,
        train: Mapping[str, Stack],
        y: np.ndarray,
        text: np.ndarray,
        val: Mapping[str, Stack] | None = None,
        y_val: np.ndarray | None = None,
    ) -> RowNamer:
        """``train``/``val``: ``{layer: (weights, biases)}``; ``y``: ``(N, C)`` multi-hot; ``text``: ``(C, d)``
        unit embeddings of the seen class names. Keeps the layer whose rows follow the labels best."""
        best = None
        for layer, (x, b) in train.items():
            if x.shape[1] < y.shape[1]:
                continue  # fewer rows than classes: not a class-indexed layer
            ref, ref_b = x.mean(0), None if b is None else b.mean(0)
            rows, corr = assign_rows(row_responses(x, ref, b, ref_b), y)
            if val is not None and y_val is not None and len(y_val) > 2:
                xv, bv = val[layer]
                sv = row_responses(xv, ref, bv, ref_b)[:, rows]
                corr = np.nan_to_num(np.diag(_zscore(sv, 0).T @ _zscore(y_val, 0)) / len(y_val))
            quality = float(np.mean(corr))
            if best is None or quality > best[0]:
                best = (quality, layer, ref, ref_b, rows)
        if best is not None:
            self.quality, self.layer, self.ref, self.ref_b, self.rows = best
            self.text_seen = np.asarray(text, dtype=np.float32)
            x, b = train[self.layer]
            self.coef, self.intercept = logistic_1d(self.responses(x, b)[:, self.rows], y)
        return self

    def predict_proba(self, x: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        """``(N, C)`` probability of each seen class, read from its own row's response alone."""
        assert self.coef is not None and self.intercept is not None, "RowNamer has no readout"
        z = self.responses(x, b)[:, self.rows] * self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(np.clip(-z, -50, 50)))

    @property
    def fitted(self) -> bool:
        return self.layer is not None

    def responses(self, x: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        """``(N, h)`` row responses of models (``x``, ``b``: their ``layer`` and its bias)."""
        assert self.ref is not None, "RowNamer is not fitted"
        return row_responses(x, self.ref, b if self.ref_b is not None else None, self.ref_b)

    def affinity(self, text: np.ndarray) -> np.ndarray:
        """``(h, K)``: how well each row's profile over the seen classes matches each prompt's profile."""
        ref, rows, text_seen = self._fitted()
        keys = _centred_unit(ref, ref.mean(0))
        row_profile = _zscore(keys @ keys[rows].T, 1)  # (h, C)
        centre = text_seen.mean(0)
        t_seen, t = _centred_unit(text_seen, centre), _centred_unit(np.asarray(text, dtype=np.float32), centre)
        text_profile = _zscore(t @ t_seen.T, 1)  # (K, C)
        return row_profile @ text_profile.T / row_profile.shape[1]

    def prompt_rows(self, text: np.ndarray) -> np.ndarray:
        """``(h, K)`` weights of rows for each prompt: a seen class's own row; otherwise the free rows
        (no seen class holds them), distinct rows for prompts asked together, soft weights for one alone."""
        ref, rows, text_seen = self._fitted()
        text = np.asarray(text, dtype=np.float32)
        h, k = ref.shape[0], len(text)
        weights = np.zeros((h, k), dtype=np.float32)
        same = text @ text_seen.T  # unit rows: cosine
        seen = same.max(1) > 0.999
        weights[rows[same.argmax(1)[seen]], np.flatnonzero(seen)] = 1.0
        free = np.setdiff1d(np.arange(h), rows) if h > len(rows) else np.arange(h)
        ask = np.flatnonzero(~seen)
        if len(ask) == 0:
            return weights
        aff = self.affinity(text[ask])[free]  # (free rows, asked prompts)
        if 1 < len(ask) <= len(free):
            r, c = linear_sum_assignment(-aff)
            weights[free[r], ask[c]] = 1.0
        else:
            soft = np.exp(self.sharpness * (aff - aff.max(0)))
            weights[np.ix_(free, ask)] = soft / soft.sum(0)
        return weights

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ref, rows, text_seen)`` of a fitted namer."""
        assert self.ref is not None and self.rows is not None and self.text_seen is not None, "RowNamer is not fitted"
        return self.ref, self.rows, self.text_seen

    def scores(self, x: np.ndarray, b: np.ndarray | None, text: np.ndarray) -> np.ndarray:
        """``(N, K)``: response of each model's row(s) for each prompt; higher = better match."""
        return self.responses(x, b) @ self.prompt_rows(text)

    # -- persistence --------------------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Arrays to save (``coef``/``intercept`` left out for a namer restored from before the readout)."""
        if not self.fitted:
            return {}
        # an expert saved before the logistic readout has no coef/intercept: left out, read back as None
        out: dict[str, np.ndarray | None] = {"ref": self.ref, "rows": self.rows, "text_seen": self.text_seen,
                                             "coef": self.coef, "intercept": self.intercept, "ref_b": self.ref_b}
        return {k: v for k, v in out.items() if v is not None}

    def describe(self) -> dict:
        return {"layer": self.layer, "sharpness": self.sharpness, "quality": self.quality}

    @classmethod
    def restore(cls, meta: dict | None, state: Mapping[str, np.ndarray]) -> RowNamer:
        if not meta or meta.get("layer") is None:
            return cls()
        get = lambda k: None if k not in state else np.asarray(state[k])  # noqa: E731
        return cls(meta["sharpness"], meta["layer"], get("ref"), get("ref_b"), get("rows"), get("text_seen"), meta["quality"],
                   get("coef"), get("intercept"))
