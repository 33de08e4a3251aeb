"""A faithful re-implementation of MoTHer (Horwitz, Shul, Hoshen 2024), the baseline ancestree is measured against.

What the paper's method does (METHODS.md §1), and what this code does too:

* distance of two models = mean over the square 2-D matrices they share **by name** of the RMS of the
  element-wise difference (LoRA variant: sum over the value matrices of ``rank(W_i − W_j)``);
* direction = kurtosis (Fisher, ``scipy.stats.kurtosis``) summed over one kind of square layer (the attention
  output projection when names reveal it); an edge p→c whose parent has the *lower* kurtosis pays
  ``λ · mean(distance)`` with ``λ = 0.3`` (``kurtosis_order="parent-higher"``, the paper's default; the
  paper flips the rule by hand for continued pre-training, ``kurtosis_order="parent-lower"`` is that flip);
* models are clustered into ``K`` trees by Ward linkage on the distances (``K`` must be given: the paper does
  not estimate it); each cluster's tree is the minimum directed spanning arborescence of the cost matrix.

Like the paper's code (which loads every model of a tree with ``AutoModel.from_pretrained`` and then compares
pairs in memory), it reads each model once, keeps its square matrices (as float32: views of the memory-mapped
file where they are stored so, copies otherwise) and compares every pair there: O(N·P) reading and memory, O(N²·P) arithmetic. Models that share no square
matrix by name cannot be compared: they are kept in clusters of their own (pairs get a distance far above
every real one). Every edge is a ``finetune`` with confidence 0.5: MoTHer has neither relation kinds nor
confidences.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from scipy.stats import kurtosis

from ancestree.graph.model_graph import ModelGraph
from ancestree.io import load_model

#: Names of the attention output projection in common architectures (the layer kind MoTHer sums kurtosis over).
ATTN_OUTPUT = re.compile(r"(out_proj|o_proj|attention\.output\.dense|attn\.proj|attn\.c_proj|self_attn\.out)\.weight$")
#: Value projections (the LoRA variant's rank distance runs over these).
VALUE = re.compile(r"(v_proj|\.value|attn\.v|to_v)\.weight$")

Source = tuple[str, str | os.PathLike[str]]

#: The two orientations of the kurtosis rule: the paper's default and its hand flip.
KURTOSIS_ORDERS = ("parent-higher", "parent-lower")


def square_names(model) -> list[str]:
    """Names of the square 2-D float matrices of a model (what MoTHer compares)."""
    return [t.name for t in model.tensors.values() if t.learned and len(t.shape) == 2 and t.shape[0] == t.shape[1] > 1]


def _kind(names: list[str], pattern: re.Pattern[str]) -> list[str]:
    picked = [n for n in names if pattern.search(n)]
    return picked or names


def _rank(diff: np.ndarray, dtype: str) -> int:
    """``rank(W_i − W_j)`` with the tolerance of the stored precision (the paper's code runs in float32).

    NumPy's default tolerance is that of float64: the float32 rounding of a merged LoRA checkpoint would make
    every difference look full-rank.
    """
    s = np.linalg.svd(diff, compute_uv=False)
    try:
        eps = np.finfo(np.dtype(dtype)).eps
    except (TypeError, ValueError):  # integer or non-NumPy dtypes (bfloat16, quantized): float32's
        eps = np.finfo(np.float32).eps
    return int((s > s.max(initial=0.0) * max(diff.shape) * eps).sum()) if s.size else 0


@dataclass
class Held:
    """A model as MoTHer keeps it in memory."""

    format: str
    parameters: int
    matrices: dict[str, np.ndarray]  # square matrices by name, float32 (views of a memory-mapped file or copies)
    dtypes: dict[str, str]  # their stored dtypes (the rank tolerance of the LoRA distance)
    kurtosis: float


class MoTHer:
    """MoTHer: ``MoTHer(n_trees=K).fit([(id, path), ...]).graph_``.

    ``distance="rms"`` (full fine-tunes) or ``"lora"`` (sum of ranks of value-matrix differences).
    ``kurtosis_order``: ``"parent-higher"`` (the paper's rule for fine-tunes of a pre-trained model) or
    ``"parent-lower"`` (the paper's hand flip, for models trained further from a young parent).
    """

    def __init__(self, n_trees: int | None = None, lam: float = 0.3, distance: str = "rms",
                 kurtosis_order: str = "parent-higher") -> None:
        if distance not in ("rms", "lora"):
            raise ValueError("distance must be 'rms' or 'lora'")
        if kurtosis_order not in KURTOSIS_ORDERS:
            raise ValueError(f"kurtosis_order must be one of {', '.join(KURTOSIS_ORDERS)}")
        self.n_trees = n_trees
        self.lam = lam
        self.distance = distance
        self.kurtosis_order = kurtosis_order

    # -- the paper's pieces -----------------------------------------------------------------------
    def _pair_distance(self, a: Held, b: Held) -> float:
        """Compare two held models' shared square matrices (NaN: none shared)."""
        names = sorted(n for n in set(a.matrices) & set(b.matrices) if a.matrices[n].shape == b.matrices[n].shape)
        if self.distance == "lora":
            names = _kind(names, VALUE)
        if not names:
            return float("nan")
        values = []
        for n in names:
            diff = np.subtract(a.matrices[n], b.matrices[n], dtype=np.float64)
            if self.distance == "lora":
                values.append(float(_rank(diff, a.dtypes[n])))
            else:
                values.append(float(np.sqrt(np.mean(diff * diff))))
        return float(np.sum(values)) if self.distance == "lora" else float(np.mean(values))

    @staticmethod
    def read(source: Source) -> Held:
        """One model as MoTHer holds it: its square matrices, their stored dtypes and its kurtosis."""
        with load_model(source[1], source[0]) as m:
            names = square_names(m)
            matrices = {n: np.asarray(m.read(n), dtype=np.float32) for n in names}
            kurt = float(sum(kurtosis(matrices[n].astype(np.float64).ravel()) for n in _kind(names, ATTN_OUTPUT)))
            return Held(m.format, m.parameters, matrices, {n: m.tensors[n].dtype for n in names}, kurt)

    def distances(self, held: Sequence[Held]) -> np.ndarray:
        """The N×N distance matrix of held models (NaN where two share no square matrix)."""
        n = len(held)
        dist = np.zeros((n, n))
        for i, j in itertools.combinations(range(n), 2):
            dist[i, j] = dist[j, i] = self._pair_distance(held[i], held[j])
        return dist

    def cluster(self, dist: np.ndarray) -> np.ndarray:
        """Ward clustering into ``n_trees`` clusters; incomparable models never share a cluster."""
        n = len(dist)
        finite = dist[np.isfinite(dist)]
        big = 10.0 * (float(finite.max()) if finite.size and finite.max() > 0 else 1.0)
        filled = np.where(np.isfinite(dist), dist, big)
        comparable = nx.Graph()
        comparable.add_nodes_from(range(n))
        comparable.add_edges_from((i, j) for i, j in itertools.combinations(range(n), 2) if np.isfinite(dist[i, j]))
        k = max(self.n_trees or 1, nx.number_connected_components(comparable))
        if n == 1:
            return np.zeros(1, dtype=int)
        labels = fcluster(linkage(squareform(filled, checks=False), method="ward"), t=min(k, n), criterion="maxclust")
        return labels

    def arborescence(self, members: list[int], dist: np.ndarray, kurt: np.ndarray) -> list[tuple[int, int]]:
        """The minimum directed spanning arborescence of one cluster under MoTHer's cost."""
        if len(members) < 2:
            return []
        sub = dist[np.ix_(members, members)]
        finite = sub[np.isfinite(sub) & ~np.eye(len(members), dtype=bool)]
        penalty = self.lam * (float(finite.mean()) if finite.size else 0.0)
        g = nx.DiGraph()
        for a, b in itertools.permutations(range(len(members)), 2):
            if not np.isfinite(sub[a, b]):
                continue
            pa, pc = members[a], members[b]
            wrong = kurt[pa] < kurt[pc] if self.kurtosis_order == "parent-higher" else kurt[pa] > kurt[pc]
            cost = sub[a, b] + (penalty if wrong else 0.0)  # the penalised orientation breaks the kurtosis rule
            g.add_edge(pa, pc, weight=cost)
        try:
            tree = nx.minimum_spanning_arborescence(g, attr="weight")
        except nx.NetworkXException:
            return []
        return list(tree.edges())

    # -- estimator ----------------------------------------------------------------------------------
    def fit(self, sources: Sequence[Source | str]) -> MoTHer:
        """Recover the graph of ``sources`` (paths or ``(id, path)`` pairs); the result is ``self.graph_``."""
        items: list[Source] = [s if isinstance(s, tuple) else (str(s), s) for s in sources]
        held = [self.read(s) for s in items]
        self.distances_ = self.distances(held)
        self.kurtosis_ = np.array([h.kurtosis for h in held])
        self.labels_ = self.cluster(self.distances_)
        graph = ModelGraph()
        for (mid, _), h in zip(items, held):
            graph.add_model(mid, h.format, h.parameters)
        for label in sorted(set(self.labels_.tolist())):
            members = [i for i in range(len(items)) if self.labels_[i] == label]
            for p, c in self.arborescence(members, self.distances_, self.kurtosis_):
                graph.add_edge(items[p][0], items[c][0], "finetune", 0.5)
        self.graph_ = graph
        return self


__all__ = ["MoTHer", "square_names"]
