"""Incremental placement: put new models into the atlas's graph without recovering the whole graph again.

Tree recovery decides each Model Tree from its own members (models of different trees share nothing), so
placing new models needs only the trees they join:

1. find each new model's candidate relatives by nearest-neighbour search on fingerprint embeddings
   (:mod:`ancestree.index.neighbours`), check the best candidate of each nearby tree with full pair
   evidence (:func:`ancestree.relate.relate`), and add the trees its declared base model and its exact
   duplicates (same content key) belong to;
2. run the graph recovery of :mod:`ancestree.graph` on those trees' members plus the new models, from
   stored fingerprints (no file is read);
3. replace the recovered edges and trees of exactly those models, in one transaction.

The cost of placing k new models is k nearest-neighbour queries plus one recovery over the trees they
touch, instead of a recovery over all N models.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ancestree.errors import IncomparableError
from ancestree.fingerprint import Fingerprint
from ancestree.index.neighbours import NeighbourIndex
from ancestree.index.store import Edge, IndexStore
from ancestree.relate import relate, verdict

if TYPE_CHECKING:  # the graph package is imported when a graph is recovered, not when the index is opened
    from ancestree.graph.model_graph import ModelGraph

#: How many nearest neighbours each new model looks at (grouped by tree, best of each tree checked).
NEIGHBOURS = 32


@dataclass
class Placement:
    """What one placement did: which models it placed, how many it re-examined, how long it took."""

    placed: list[str] = field(default_factory=list)
    members: int = 0  # models whose edges were recovered again (placed + the trees they joined)
    trees_touched: int = 0
    checked_pairs: int = 0
    seconds: float = 0.0


def recover(fingerprints: Sequence[Fingerprint]) -> ModelGraph:
    """The Model Graph of ``fingerprints`` by the package's tree recovery (:mod:`ancestree.graph`)."""
    from ancestree.graph import GraphRecovery

    return GraphRecovery().fit(list(fingerprints)).graph_


def related(a: Fingerprint, b: Fingerprint) -> bool:
    """True when pair evidence says the two models share weights (any verdict but ``unrelated``)."""
    try:
        return verdict(relate(a, b)).kind != "unrelated"
    except IncomparableError:
        return False


def declared_edges(store: IndexStore, names: Iterable[str]) -> list[Edge]:
    """Declared edges touching ``names``: their own declared bases and models declaring them as base."""
    from ancestree.graph.model_graph import RELATIONS

    edges = []
    wanted = set(names)
    for row in store.models("declared_base IS NOT NULL"):
        bases = row["declared_base"]
        bases = bases if isinstance(bases, list) else [bases]
        relation = row["declared_relation"] if row["declared_relation"] in RELATIONS else None
        if relation is None:
            relation = "merge" if len(bases) > 1 else "unknown"
        for base in bases:
            parent = resolve_name(store, str(base))
            if parent and parent != row["name"] and (row["name"] in wanted or parent in wanted):
                edges.append(Edge(parent, row["name"], relation, 1.0, "declared"))
    return edges


def resolve_name(store: IndexStore, declared: str) -> str | None:
    """The indexed model a declared base names: the same name, else the one name ending in ``/declared``."""
    if store.name_taken(declared):
        return declared
    tail = declared.rstrip("/").rsplit("/", 1)[-1]
    rows = store.conn.execute("SELECT name FROM models WHERE name = ? OR name LIKE ? ESCAPE '\\'",
                              (tail, "%/" + tail.replace("%", "\\%").replace("_", "\\_"))).fetchall()
    return rows[0][0] if len(rows) == 1 else None


def affected_trees(store: IndexStore, new: Sequence[Fingerprint], k: int = NEIGHBOURS) -> tuple[set[int], int]:
    """Trees the new models may join, and how many pairs were checked with full evidence."""
    names, trees, vectors = store.embeddings()
    tree_of = dict(zip(names, trees))
    index = NeighbourIndex().fit(names, vectors)
    found: set[int] = set()
    checked = 0
    position = {n: i for i, n in enumerate(names)}
    for fp in new:
        best: dict[int, str] = {}
        for name, _cos in index.query(vectors[position[fp.id]], k):
            tree = tree_of.get(name)
            if tree is not None and tree not in found and tree not in best:
                best[tree] = name
        for tree, name in best.items():
            checked += 1
            if related(fp, store.fingerprints([name])[0]):
                found.add(tree)
        for edge in declared_edges(store, [fp.id]):
            other = edge.parent if edge.child == fp.id else edge.child
            if tree_of.get(other) is not None:
                found.add(int(tree_of[other]))
        for row in store.models("content_key = ? AND tree IS NOT NULL", (fp.content_key,)):
            found.add(int(row["tree"]))
    return found, checked


def write_graph(store: IndexStore, members: Sequence[str], graph: ModelGraph) -> None:
    """Store the recovered edges and trees of ``members`` plus their declared edges, in one transaction."""
    edges = [Edge(p, c, d.get("relation", "unknown"), float(d.get("confidence", 0.0))) for p, c, d in graph.edges()]
    trees = []
    for comp in graph.tree_members():
        sub = graph.graph.subgraph(comp)
        roots = [n for n in comp if sub.in_degree(n) == 0]
        trees.append((roots[0] if len(roots) == 1 else None, comp))
    declared = declared_edges(store, members)
    with store.transaction() as cur:
        store.replace_recovered(members, edges, trees, cur)
        store.set_declared(declared, cur)


def place(store: IndexStore, names: Sequence[str] | None = None) -> Placement:
    """Place the unplaced models (or ``names``) into the graph, touching only the trees they join."""
    start = time.perf_counter()
    names = list(names) if names is not None else store.unplaced()
    if not names:
        return Placement(seconds=time.perf_counter() - start)
    new = store.fingerprints(names)
    trees, checked = affected_trees(store, new)
    members = sorted(set(names) | set(store.tree_members(trees)))
    graph = recover(store.fingerprints(members))
    write_graph(store, members, graph)
    return Placement(placed=sorted(names), members=len(members), trees_touched=len(trees), checked_pairs=checked,
                     seconds=time.perf_counter() - start)


def rebuild(store: IndexStore) -> Placement:
    """Recover the whole graph again from the stored fingerprints (no model file is read)."""
    start = time.perf_counter()
    fps = store.fingerprints()
    graph = recover(fps)
    members = [fp.id for fp in fps]
    with store.transaction() as cur:
        store.clear_recovered(cur)
    write_graph(store, members, graph)
    return Placement(placed=members, members=len(members), trees_touched=len(graph.tree_members()),
                     seconds=time.perf_counter() - start)


__all__ = ["NEIGHBOURS", "Placement", "affected_trees", "declared_edges", "place", "rebuild", "recover",
           "related", "resolve_name", "write_graph"]
