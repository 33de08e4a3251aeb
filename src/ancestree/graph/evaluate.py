"""Score a recovered Model Graph against ground truth (``ancestree eval``).

Duplicates are the same weights, so which copy carries the family's edges is arbitrary: both graphs are
first rewritten onto the truth's duplicate classes (each class represented by its truth parent), and a
``duplicate`` edge counts as found when the predicted graph links the two copies in either direction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import networkx as nx

from ancestree.errors import BadInputError
from ancestree.graph.model_graph import ModelGraph, read_graph_json


@dataclass
class Scores:
    """Edge, direction, tree and relation accuracy of a predicted graph against the truth."""

    models: int
    true_edges: int
    predicted_edges: int
    edge_precision: float  # directed edges (duplicates undirected) that are true
    edge_recall: float
    edge_f1: float
    undirected_f1: float  # the same, ignoring direction
    direction_accuracy: float  # of true edges found in either direction, the share with the right direction
    mother_accuracy: float  # correct directed edges / true edges (MoTHer's "accuracy")
    relation_accuracy: float  # of true edges found (either direction), the share with the right relation
    tree_ari: float  # adjusted Rand index of the partition into trees
    tree_exact: bool  # the partition into trees is exactly right
    tree_accuracy: float  # share of models whose predicted tree has exactly the same members as their true tree
    true_trees: int
    predicted_trees: int
    cross_tree_edges: int  # predicted edges joining models of different true trees (unrelated ones linked)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _duplicate_rep(truth: ModelGraph) -> dict[str, str]:
    """Model -> representative of its duplicate class in the truth (the copy that is not a duplicate child)."""
    dup = nx.Graph()
    dup.add_nodes_from(truth.models)
    children = set()
    for p, c, d in truth.edges():
        if d.get("relation") == "duplicate":
            dup.add_edge(p, c)
            children.add(c)
    rep = {}
    for comp in nx.connected_components(dup):
        originals = sorted(m for m in comp if m not in children) or sorted(comp)
        rep.update({m: originals[0] for m in comp})
    return rep


def _edge_sets(g: ModelGraph, rep: dict[str, str]) -> tuple[dict[tuple[str, str], str], set[frozenset[str]]]:
    """Directed non-duplicate edges (mapped to representatives) with relations, and undirected duplicate pairs."""
    directed: dict[tuple[str, str], str] = {}
    dups: set[frozenset[str]] = set()
    for p, c, d in g.edges():
        rel = d.get("relation", "unknown")
        rp, rc = rep.get(p, p), rep.get(c, c)
        if rel == "duplicate" or rp == rc:
            if rp == rc:
                dups.add(frozenset((p, c)))
            continue
        directed[(rp, rc)] = rel
    return directed, dups


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _ratio(a: float, b: float) -> float:
    return a / b if b else 1.0


def load_scored(path: str) -> ModelGraph:
    """A graph JSON file to score, every edge naming its relation; :class:`BadInputError` otherwise.

    The contract's tree JSON gives each edge a ``relation`` (``"unknown"`` when it is not known), but
    :meth:`ModelGraph.load` reads a missing one as ``"unknown"``: scoring such a file would report a relation
    accuracy of 0 that measures nothing, so it is refused instead."""
    data = read_graph_json(path)
    graph = ModelGraph.from_dict(data, path)  # checks the shape: edges is a list of objects
    edges = data["edges"]
    bare = [e for e in edges if "relation" not in e]
    if bare:
        first = f"{bare[0]['parent']} -> {bare[0]['child']}"
        raise BadInputError(path, f"{len(bare)} of {len(edges)} edges have no 'relation' (first: {first}); every edge "
                                  "of a tree JSON names one (\"unknown\" when it is not known)")
    return graph


def evaluate(pred: ModelGraph, truth: ModelGraph) -> Scores:
    """Compare ``pred`` with ``truth`` (models missing from ``pred`` count as isolated). A ``pred`` that
    shares no model id with ``truth`` is a ValueError: ids made relative to another folder (``demo/m0000``
    against ``m0000``) would otherwise score 0 edges found with a "perfect" direction and relation accuracy."""
    from sklearn.metrics import adjusted_rand_score  # here, not at import: every `tree` would pay ~0.6 s

    if truth.models and not set(pred.models) & set(truth.models):
        raise ValueError("the prediction shares no model id with the truth (were both made from the same folder, "
                         "with ids relative to it?)")

    rep = _duplicate_rep(truth)
    t_dir, t_dup = _edge_sets(truth, rep)
    p_dir, p_dup = _edge_sets(pred, rep)
    # A truth duplicate pair is found when the prediction puts both copies in one class via any duplicate chain.
    pred_dup_graph = nx.Graph(list(tuple(s) for s in p_dup))
    dup_found = sum(1 for s in t_dup if all(m in pred_dup_graph for m in s) and nx.has_path(pred_dup_graph, *tuple(s)))
    correct_dir = sum(1 for e in p_dir if e in t_dir)
    undirected_true = {frozenset(e): e for e in t_dir}
    found_either = [(e, undirected_true[frozenset(e)]) for e in p_dir if frozenset(e) in undirected_true]
    n_true, n_pred = len(t_dir) + len(t_dup), len(p_dir) + len(p_dup)
    precision = _ratio(correct_dir + dup_found, n_pred)
    recall = _ratio(correct_dir + dup_found, n_true)
    u_correct = len(found_either) + dup_found
    relation_ok = sum(1 for e, te in found_either if p_dir[e] == t_dir[te]) + dup_found
    t_tree, p_tree = truth.trees(), pred.trees()
    ids = truth.models
    p_labels = [p_tree.get(m, -1 - i) for i, m in enumerate(ids)]
    t_groups = {frozenset(g) for g in truth.tree_members()}
    p_members: dict[int, set[str]] = {}
    for m, lab in zip(ids, p_labels):
        p_members.setdefault(lab, set()).add(m)
    p_groups = {frozenset(g) for g in p_members.values()}
    return Scores(
        models=len(ids),
        true_edges=n_true,
        predicted_edges=n_pred,
        edge_precision=precision,
        edge_recall=recall,
        edge_f1=_f1(precision, recall),
        undirected_f1=_f1(_ratio(u_correct, n_pred), _ratio(u_correct, n_true)),
        direction_accuracy=_ratio(correct_dir, len(found_either)),
        mother_accuracy=_ratio(correct_dir + dup_found, n_true),
        relation_accuracy=_ratio(relation_ok, u_correct),
        tree_ari=float(adjusted_rand_score([t_tree[m] for m in ids], p_labels)) if len(ids) > 1 else 1.0,
        tree_exact=t_groups == p_groups,
        tree_accuracy=_ratio(sum(len(g) for g in t_groups & p_groups), len(ids)),
        true_trees=len(t_groups),
        predicted_trees=len(p_groups),
        cross_tree_edges=sum(1 for p, c, _ in pred.edges() if p in t_tree and c in t_tree and t_tree[p] != t_tree[c]),
    )


__all__ = ["Scores", "evaluate", "load_scored"]
