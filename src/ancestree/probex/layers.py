"""Candidate layers of a model, read once and cached by content, so training never re-reads model files.

A *candidate layer* is a learned weight matrix (a conv kernel is flattened to ``out × in·k·k``) that ProbeX
may learn from. Which tensors are candidates depends only on the model's architecture (names and shapes),
so all models of one tree offer the same candidates. :class:`LayerCache` makes one pass over a zoo, stores
each model's candidates in ``<cache>/<content-key>.npz`` and answers ``stack(keys, layer)`` from memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ancestree.atomic import atomic_path, write_text
from ancestree.errors import DAMAGED_FILE
from ancestree.io import Model, TensorInfo, load_model
from ancestree.io.npz import read_npz

#: Largest matrix kept as a candidate (elements); bigger ones would dominate memory for little gain.
MAX_NUMEL = 1 << 20


def as_matrix(values: np.ndarray) -> np.ndarray:
    """A weight tensor as a float32 matrix ``(out, rest)``: conv kernels flattened, linear layers unchanged."""
    values = np.asarray(values, dtype=np.float32)
    return values.reshape(values.shape[0], -1)


def _matrix_shape(info: TensorInfo) -> tuple[int, int]:
    return int(info.shape[0]), int(np.prod(info.shape[1:]))


def candidate_layers(tensors: Mapping[str, TensorInfo], max_layers: int = 8, max_numel: int = MAX_NUMEL) -> list[str]:
    """Names of the weight matrices ProbeX may use, spread evenly over depth (the last one always kept).

    Only learned tensors with at least two dimensions of size >= 2 qualify: biases and norms are vectors,
    and a layer with a single row or column carries too little to learn from.
    """
    names = [
        t.name
        for t in tensors.values()
        if t.learned and len(t.shape) >= 2 and min(_matrix_shape(t)) >= 2 and t.numel <= max_numel
    ]
    if len(names) <= max_layers:
        return names
    picks = np.linspace(0, len(names) - 1, max_layers).round().astype(int)
    return [names[i] for i in sorted(set(picks.tolist()))]


def bias_of(tensors: Mapping[str, TensorInfo], layer: str) -> str | None:
    """The bias vector that goes with a weight matrix (``x.weight`` -> ``x.bias``, one entry per row), if any."""
    if not layer.endswith("weight"):
        return None
    info = tensors.get(layer[: -len("weight")] + "bias")
    rows = tensors[layer].shape[0]
    return info.name if info is not None and info.learned and tuple(info.shape) == (rows,) else None


#: Version of :func:`architecture_key` in cache entries and experts folders (2: tensors taken in name order).
KEY_VERSION = 2


def architecture_key(tensors: Mapping[str, TensorInfo]) -> str:
    """Same names and shapes -> same key: models that can share an expert. In name order, not the file's:
    an int8 copy written with its tensors in another order is the same layout."""
    spec = sorted((t.name, list(t.shape)) for t in tensors.values() if t.learned)
    return hashlib.sha1(json.dumps(spec).encode()).hexdigest()[:16]


def content_key(model: Model) -> str:
    """A hash of the model's weight files (identical weights in identical files share one cache entry)."""
    digest = hashlib.sha256()
    for info in sorted(model.meta.files, key=lambda f: f.path.name):
        digest.update(info.sha256.encode())
    return digest.hexdigest()[:32]


def read_candidates(model: Model, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The named candidate matrices of an open model, with their bias vectors (under the biases' names)."""
    out = {}
    for name in names:
        out[name] = as_matrix(model.read(name))
        bias = bias_of(model.tensors, name)
        if bias is not None:
            out[bias] = np.asarray(model.read(bias), dtype=np.float32).ravel()
    return out


class LayerCache:
    """Candidate layers of many models on disk, keyed by content; stacks of one layer served from memory.

    ``index.json`` maps a file's ``path|size|mtime`` to its content key, so a second pass over an unchanged
    zoo neither hashes nor reads any model file.
    """

    def __init__(self, root: str | Path, max_layers: int = 8, max_numel: int = MAX_NUMEL) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_layers = max_layers
        self.max_numel = max_numel
        self._index_path = self.root / "index.json"
        self._index: dict[str, dict] = self._read_index()
        self._stacks: dict[tuple[tuple[str, ...], str], np.ndarray] = {}

    # -- filling ------------------------------------------------------------------------------------
    def add(self, path: str | Path, model_id: str | None = None) -> dict:
        """Cache one model's candidates (if not cached yet); return its entry ``{key, arch, layers, shapes}``."""
        stat_id = self._stat_id(Path(path))
        entry = self._index.get(stat_id)
        current = entry and entry.get("key_version") == KEY_VERSION  # else written by an older version (its biases too)
        if entry is not None and current and self._holds(self.root / f"{entry['key']}.npz", entry["layers"]):
            return entry
        with load_model(path, model_id) as model:
            names = candidate_layers(model.tensors, self.max_layers, self.max_numel)
            entry = {
                "key": content_key(model),
                "arch": architecture_key(model.tensors),
                "key_version": KEY_VERSION,
                "layers": names,
                "shapes": {n: list(_matrix_shape(model.tensors[n])) for n in names},
                "biases": {n: b for n in names if (b := bias_of(model.tensors, n)) is not None},
            }
            target = self.root / f"{entry['key']}.npz"
            if not target.is_file() or not self._holds(target, entry["biases"].values()):
                with atomic_path(target) as tmp, open(tmp, "wb") as fh:
                    # Any: typed as arrays, savez's stubs would match a name to its allow_pickle flag
                    arrays: dict[str, Any] = read_candidates(model, names)
                    np.savez(fh, **arrays)
        self._index[stat_id] = entry
        return entry

    def add_all(self, paths: Mapping[str, str | Path], progress: bool = True) -> dict[str, dict]:
        """One pass over ``{model id: path}``; returns ``{model id: entry}`` and saves the index."""
        entries = {}
        for model_id, path in tqdm(paths.items(), desc="caching layers", disable=not progress, leave=False):
            entries[model_id] = self.add(path, model_id)
        self.save()
        return entries

    def _read_index(self) -> dict[str, dict]:
        try:
            index = json.loads(self._index_path.read_text())
        except DAMAGED_FILE:  # missing or damaged: only a cache, filled again
            return {}
        return index if isinstance(index, dict) else {}

    @staticmethod
    def _holds(target: Path, names: Iterable[str]) -> bool:
        """Whether a cached file is readable and has these arrays (files written before biases were cached
        lack them; a damaged one is only a cache, written again)."""
        try:
            with read_npz(target) as data:
                return set(names) <= set(data.files)
        except DAMAGED_FILE:
            return False

    def save(self) -> None:
        write_text(self._index_path, json.dumps(self._index))

    @staticmethod
    def _stat_id(path: Path) -> str:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stats = [(p, p.stat()) for p in files]  # inode and change time too: see FingerprintCache.stat_key
        parts = [f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}|{st.st_ctime_ns}" for p, st in stats]
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()

    # -- reading ------------------------------------------------------------------------------------
    def matrix(self, key: str, layer: str) -> np.ndarray:
        with read_npz(self.root / f"{key}.npz") as data:
            return data[layer]

    def stack(self, keys: Iterable[str], layer: str) -> np.ndarray:
        """``(len(keys), h, w)`` float32 (``(len(keys), h)`` for a bias): one tensor of many models, memoised."""
        keys = tuple(keys)
        memo_key = (keys, layer)
        if memo_key not in self._stacks:
            self._stacks[memo_key] = np.stack([self.matrix(k, layer) for k in keys]).astype(np.float32)
        return self._stacks[memo_key]

    def clear_memory(self) -> None:
        self._stacks.clear()
