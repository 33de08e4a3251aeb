"""The router: which Model Tree (and so which expert) a model belongs to, found from weights alone.

Models of one tree share an architecture and stay close to their common root; independent trainings of one
architecture (different seeds) are as far apart as random matrices. So the router

1. groups models by architecture (same tensor names and shapes),
2. within a group, clusters a fixed sketch of their candidate layers by average linkage on the *relative*
   distance ``‖a − b‖ / sqrt(‖a‖·‖b‖)``, cut at ``threshold`` = 1 (for weights of similar norm ``d² ≈ 2 − 2·cos``: unrelated
   models, uncorrelated, sit at ≈ 1.41; fine-tunes of one root well below 1),
3. keeps each tree's members' sketches; a new model goes to the tree of its nearest member of its
   architecture when that member lies within ``threshold``, else to no tree (a model of an unknown tree gets
   "no expert", not a guess). Routers saved before keep a centroid and radius per tree (:meth:`Router.limit`).

:func:`graph_clusters` gets the trees from ancestree's Model Graph recovery (:mod:`ancestree.graph`, on
fingerprints) instead; :meth:`Router.fit` takes either.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

#: Entries sampled per candidate layer for the sketch (fixed positions, so every model is sampled alike).
SKETCH_PER_LAYER = 512


def sketch(layers: Mapping[str, np.ndarray], per_layer: int = SKETCH_PER_LAYER) -> np.ndarray:
    """A fixed sample of each matrix's entries, concatenated: same positions for every model of an architecture.

    Vectors (the biases that travel with the layers) are left out: the sketch is of the matrices only.
    """
    parts = []
    for name in sorted(layers):
        if np.ndim(layers[name]) < 2:
            continue
        flat = np.asarray(layers[name], dtype=np.float32).ravel()
        seed = int.from_bytes(hashlib.sha1(f"{name}{flat.size}".encode()).digest()[:4], "little")
        idx = np.random.default_rng(seed).choice(flat.size, size=min(per_layer, flat.size), replace=False)
        parts.append(flat[np.sort(idx)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def graph_clusters(paths: Mapping[str, Any], cache: Any = None, progress: bool = False) -> dict[str, int]:
    """Model id -> tree number, from :class:`ancestree.graph.GraphRecovery` on the models' fingerprints."""
    from ancestree.fingerprint import fingerprint_many
    from ancestree.graph import GraphRecovery

    fps = fingerprint_many(list(paths.items()), cache, progress=progress)
    return GraphRecovery(classify=False).fit(fps).graph_.trees()


def relative_distances(x: np.ndarray) -> np.ndarray:
    """Condensed matrix of ``‖a − b‖ / sqrt(‖a‖·‖b‖)`` between the rows of ``x``."""
    norms = np.linalg.norm(x, axis=1)
    scale = np.sqrt(np.outer(norms, norms))[np.triu_indices(len(x), 1)]
    return pdist(x) / np.maximum(scale, 1e-12)


#: Key suffix of a tree's member sketches beside its centroid in ``router.pt``.
MEMBERS_KEY = "\0members"


@dataclass
class Tree:
    """One recovered Model Tree: its name, architecture, members, centroid sketch and radius."""

    name: str
    arch: str
    members: list[str]
    centroid: np.ndarray
    radius: float
    #: the members' sketches (rows in ``members`` order); None in routers saved before they were kept
    sketches: np.ndarray | None = field(default=None, repr=False)

    def distance(self, x: np.ndarray) -> float:
        scale = cast("float | np.floating", max(np.linalg.norm(self.centroid), 1e-12))  # max() loses numpy's type
        return float(np.linalg.norm(x - self.centroid) / scale)

    def nearest(self, x: np.ndarray) -> float:
        """The relative distance ``‖x − m‖ / sqrt(‖x‖·‖m‖)`` to the nearest member (the centroid distance when
        the members' sketches are not kept)."""
        if self.sketches is None:
            return self.distance(x)
        scale = np.sqrt(np.linalg.norm(self.sketches, axis=1) * np.linalg.norm(x))
        return float(np.min(np.linalg.norm(self.sketches - x, axis=1) / np.maximum(scale, 1e-12)))


@dataclass
class Router:
    """Cluster models into trees, then route new models (``None`` when no tree fits)."""

    threshold: float = 1.0
    margin: float = 1.5
    min_radius: float = 0.05
    trees: list[Tree] = field(default_factory=list)

    def fit(self, sketches: Mapping[str, np.ndarray], archs: Mapping[str, str], clusters: Mapping[str, Any] | None = None) -> Router:
        """``sketches``/``archs`` by model id; ``clusters`` (id -> label) overrides the built-in clustering.

        A tree of the graph can hold the same weights under other names (an ONNX export, a PEFT adapter's
        update, a GGUF copy): one expert reads one layout, so given clusters are split by architecture.
        """
        if clusters is not None:
            labels: Mapping[str, Any] = {m: (clusters[m], archs[m]) for m in sketches}
        else:
            labels = self._cluster(sketches, archs)
        groups: dict[Any, list[str]] = {}
        for model_id in sketches:
            groups.setdefault(labels[model_id], []).append(model_id)
        self.trees = [self._tree(members, sketches, archs) for members in groups.values()]
        self.trees.sort(key=lambda t: t.name)
        return self

    def _cluster(self, sketches: Mapping[str, np.ndarray], archs: Mapping[str, str]) -> dict[str, tuple[str, int]]:
        labels: dict[str, tuple[str, int]] = {}
        by_arch: dict[str, list[str]] = {}
        for model_id in sketches:
            by_arch.setdefault(archs[model_id], []).append(model_id)
        for arch, ids in by_arch.items():
            if len(ids) == 1:
                labels[ids[0]] = (arch, 1)
                continue
            x = np.stack([sketches[i] for i in ids])
            cut = fcluster(linkage(relative_distances(x), "average"), self.threshold, criterion="distance")
            labels.update({i: (arch, int(c)) for i, c in zip(ids, cut)})
        return labels

    def _tree(self, members: list[str], sketches: Mapping[str, np.ndarray], archs: Mapping[str, str]) -> Tree:
        x = np.stack([sketches[m] for m in members])
        centroid = x.mean(0)
        ordered = sorted(members)
        tree = Tree(name="", arch=archs[members[0]], members=ordered, centroid=centroid, radius=0.0,
                    sketches=np.stack([sketches[m] for m in ordered]))
        dists = [tree.distance(s) for s in x]
        tree.radius = max(max(dists), self.min_radius)
        tree.name = members[int(np.argmin(dists))]  # named after its most central model (the root, in a fan)
        return tree

    def route(self, sketch_vec: np.ndarray, arch: str) -> Tree | None:
        """The tree a model belongs to, or ``None`` if it is of an unknown architecture or too far from all.

        A model belongs to the tree of its nearest member when that member lies within ``threshold``: a
        relative is one or a few fine-tunes from some member (its parent, a sibling), an unrelated model of the
        architecture ≈ 1.41 from all. The centroid of a wide tree (171 models down long chains) says little:
        its members lay up to 1.53 from it, beyond unrelated weights, and random noise was routed there.
        Routers saved without their members' sketches fall back to the centroid and :meth:`limit`."""
        fits = [t for t in self.trees if t.arch == arch and t.centroid.shape == sketch_vec.shape]
        if fits and all(t.sketches is not None for t in fits):
            d, nearest = min((t.nearest(sketch_vec), k) for k, t in enumerate(fits))
            return fits[nearest] if d <= self.threshold else None
        best: Tree | None = None
        best_d = np.inf
        for tree in self.trees:
            if tree.arch != arch or tree.centroid.shape != sketch_vec.shape:
                continue
            d = tree.distance(sketch_vec)
            if d < best_d:
                best, best_d = tree, d
        if best is None or best_d > self.limit(best):
            return None
        return best

    def limit(self, tree: Tree) -> float:
        """How far from its centroid a model may lie and still belong to ``tree``.

        ``margin × radius``, but never beyond the clustering threshold (a model that far would not have
        been clustered with the tree), and never below the radius (every member is accepted).
        """
        return max(tree.radius, min(self.margin * tree.radius, self.threshold))

    # -- persistence --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "margin": self.margin,
            "min_radius": self.min_radius,
            "trees": [{"name": t.name, "arch": t.arch, "members": t.members, "radius": t.radius} for t in self.trees],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], centroids: Mapping[str, np.ndarray]) -> Router:
        # numbers checked here: a damaged experts.json fails on load, named, not on the first comparison
        router = cls(threshold=float(data["threshold"]), margin=float(data["margin"]), min_radius=float(data["min_radius"]))
        router.trees = [
            Tree(str(t["name"]), str(t["arch"]), [str(m) for m in t["members"]], np.asarray(centroids[t["name"]]), float(t["radius"]),
                 np.asarray(centroids[t["name"] + MEMBERS_KEY]) if t["name"] + MEMBERS_KEY in centroids else None)
            for t in data["trees"]
        ]
        for t in router.trees:  # a damaged router.pt is named on load, not at the first model routed
            if t.sketches is not None and t.sketches.shape != (len(t.members), *t.centroid.shape):
                raise ValueError(f"tree {t.name}: member sketches of shape {t.sketches.shape} for {len(t.members)} members")
        return router
