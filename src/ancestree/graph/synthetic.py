"""Synthetic fingerprints of random-walk model trees, for scaling runs and tests (no weights written).

Each tree starts from an independent random root (heavy-tailed entries); every child is its parent plus a
Gaussian step (fans: several children of one parent; snakes: chains of small steps). Fingerprints are built
directly from sketch-sized matrices, so 10,000 models fit in a few hundred MB.
"""

from __future__ import annotations

import numpy as np

from ancestree.fingerprint import Declared, Fingerprint, SketchSpec, TensorPrint
from ancestree.fingerprint.compute import tensor_print
from ancestree.io.base import TensorInfo


def synthetic_fingerprints(n_models: int, tree_size: int = 50, tensors: int = 6, side: int = 32, seed: int = 0
                           ) -> tuple[list[Fingerprint], list[tuple[str, str]]]:
    """``n_models`` fingerprints in trees of about ``tree_size`` models, and the true (parent, child) edges."""
    rng = np.random.default_rng(seed)
    spec = SketchSpec()
    fps: list[Fingerprint] = []
    edges: list[tuple[str, str]] = []
    names = [f"layers.{i}.weight" for i in range(tensors)]
    t = 0
    while len(fps) < n_models:
        size = min(tree_size, n_models - len(fps))
        values = [rng.standard_t(5, size=(tensors, side, side)).astype(np.float32)]
        ids = [f"t{t}/m0"]
        for k in range(1, size):
            parent = int(rng.integers(0, k)) if rng.random() < 0.7 else k - 1  # fans and snakes
            step = 0.15 if parent != k - 1 else 0.08
            values.append((values[parent] + step * rng.standard_normal(values[parent].shape)).astype(np.float32))
            ids.append(f"t{t}/m{k}")
            edges.append((ids[parent], ids[k]))
        for mid, v in zip(ids, values):
            prints = [_print(name, w, spec) for name, w in zip(names, v)]
            fps.append(Fingerprint(mid, "synthetic", int(v.size), {"float32": int(v.size)}, Declared(), prints,
                                   content_key=f"{mid}", spec=spec))
        t += 1
    return fps, edges


def _print(name: str, w: np.ndarray, spec: SketchSpec) -> TensorPrint:
    return tensor_print(TensorInfo(name, tuple(w.shape), "float32"), w, spec)


__all__ = ["synthetic_fingerprints"]
