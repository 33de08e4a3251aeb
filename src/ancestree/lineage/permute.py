"""Undo a permutation of hidden units before comparing a child with a candidate.

Permuting the hidden units of a network (rows of one layer, with its bias, and the matching columns of
the next layer) changes no output, so a child can carry its parent's weights in another unit order. For
layers that form a chain (the next layer's input size equals this layer's output size: MLPs, CNNs and
their heads), the child's units are matched to the candidate's by the Hungarian algorithm on the cosine
similarity of their incoming weights, layer by layer, and each permutation is carried to the next
layer's columns. A permutation is kept only when it matches the units better than the identity, so an
unpermuted child (the common case) is left exactly as it is, and a layer whose units already line up
(mean cosine above :data:`ALIGNED`) is not matched at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

#: Mean cosine of corresponding units above which a layer is taken as already aligned.
ALIGNED = 0.5

#: Largest layer (units) matched; the Hungarian algorithm is cubic in it.
MAX_UNITS = 2048


@dataclass(frozen=True)
class Layer:
    """A weight tensor (first axis = output units) and its bias, by name."""

    weight: str
    bias: str | None


def _prefix(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def chain_layers(shapes: dict[str, tuple[int, ...]]) -> list[Layer]:
    """The weights (ndim >= 2) in network order, each with the 1-D bias of the same module and size."""
    layers = []
    for name, shape in shapes.items():  # callers pass names in network order
        if len(shape) < 2:
            continue
        bias = f"{_prefix(name)}.bias" if _prefix(name) else "bias"
        layers.append(Layer(name, bias if shapes.get(bias) == (shape[0],) else None))
    return layers


def _rows(values: dict[str, np.ndarray], layer: Layer) -> np.ndarray:
    w = values[layer.weight].reshape(values[layer.weight].shape[0], -1)
    return np.concatenate([w, values[layer.bias][:, None]], axis=1) if layer.bias else w


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def match_units(child_rows: np.ndarray, cand_rows: np.ndarray) -> np.ndarray | None:
    """``perm`` with ``child_rows[perm]`` best matching ``cand_rows`` row by row, or None for the identity."""
    if not (np.isfinite(child_rows).all() and np.isfinite(cand_rows).all()):
        return None  # NaN/inf weights (a diverged run) have no units to match
    a, b = _unit(child_rows.astype(np.float64)), _unit(cand_rows.astype(np.float64))
    identity = float(np.einsum("ij,ij->i", a, b).mean())
    if identity > ALIGNED or len(a) > MAX_UNITS or len(a) < 2 or _degenerate(a) or _degenerate(b):
        return None
    sim = b @ a.T  # sim[j, i]: candidate unit j vs child unit i
    rows, cols = linear_sum_assignment(-sim)
    perm = cols[np.argsort(rows)]
    if float(sim[np.arange(len(perm)), perm].mean()) <= identity:
        return None
    return perm


def _degenerate(units: np.ndarray) -> bool:
    """Rows all along one direction (a layer pruned to zeros leaves only its bias): no unit tells itself apart,
    and any order matches as well as any other (a zeroed first layer permuted the five after it)."""
    lead = units[np.argmax(np.einsum("ij,ij->i", units, units))]  # rows are unit vectors (or zero)
    return bool(np.all((np.abs(units @ lead) > 1 - 1e-6) | ~units.any(1)))


def align_units(child: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """``child`` with its hidden units reordered to match ``candidate``; also the number of layers permuted.

    Both dicts map the same names (in network order) to arrays of equal shape. Inputs are not modified.
    """
    out = dict(child)
    layers = chain_layers({k: v.shape for k, v in child.items()})
    permuted = 0
    for layer, nxt in zip(layers, layers[1:]):
        units = out[layer.weight].shape[0]
        if out[nxt.weight].shape[1] != units:
            continue  # not a chain link: these units are observable (or reshaped), leave them
        perm = match_units(_rows(out, layer), _rows(candidate, layer))
        if perm is None:
            continue
        permuted += 1
        out[layer.weight] = out[layer.weight][perm]
        if layer.bias:
            out[layer.bias] = out[layer.bias][perm]
        out[nxt.weight] = out[nxt.weight][:, perm]
    return out, permuted


def permute_units(state: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """A function-preserving random permutation of every chained hidden layer (to make permuted children).

    ``state`` must be in network order; layers whose successor does not take their units as input are kept.
    """
    rng = np.random.default_rng(seed)
    out = dict(state)
    layers = chain_layers({k: v.shape for k, v in state.items()})
    for layer, nxt in zip(layers, layers[1:]):
        units = out[layer.weight].shape[0]
        if out[nxt.weight].shape[1] != units:
            continue
        perm = rng.permutation(units)
        out[layer.weight] = out[layer.weight][perm]
        if layer.bias:
            out[layer.bias] = out[layer.bias][perm]
        out[nxt.weight] = out[nxt.weight][:, perm]
    return out
