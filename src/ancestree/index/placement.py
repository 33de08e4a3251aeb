"""Incremental placement: put new models into the atlas's graph without recovering the whole graph again.

Tree recovery decides each Model Tree from its own members (models of different trees share nothing), and
a new model changes the edges of its own neighbourhood, so placing new models needs only that:

1. find each new model's candidate relatives by nearest-neighbour search on fingerprint embeddings
   (:mod:`ancestree.index.neighbours`): the best candidate of each nearby tree joins it when its cosine is
   high, else when full pair evidence (:func:`ancestree.relate.relate`) says so; its declared relatives
   and exact duplicates (same content key) add their trees. New models related to each other are placed
   together;
2. re-decide the neighbourhood (:func:`place_locally`): the graph recovery of :mod:`ancestree.graph` runs
   on the new models, their 8 nearest members of the tree and those members' current parents and
   children (at most 22 models), from stored fingerprints; the edges into the new models, into members
   it puts below a new model, and into members whose stored parents all lie in the neighbourhood replace
   the stored ones, in one transaction; every other stored edge stays;
3. recover the whole tree(s) instead (a fallback, said in :attr:`Placement.fallbacks`) when the
   neighbourhood shows the new model changes the tree beyond it: it is a new root, it has parents in two
   trees, it would split a tree, the spliced edges would close a loop, or the tree is no larger than a
   neighbourhood. New models related to no indexed tree are recovered among themselves.

Placing k new models costs k nearest-neighbour queries plus k recoveries of ≤ 22 models, whatever the
size of the index and of the trees; the price is that a model outside every neighbourhood keeps its
stored parent even where a full recovery would now choose another (measured in ``docs/atlas.md``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ancestree.fingerprint import NOTHING_KEY, Fingerprint
from ancestree.fingerprint.types import base_names, hub_name, resolve_name
from ancestree.index.neighbours import NeighbourIndex
from ancestree.index.store import Edge, IndexStore
from ancestree.relate import shares_weights

if TYPE_CHECKING:  # the graph package is imported when a graph is recovered, not when the index is opened
    import sqlite3

    from ancestree.graph import GraphRecovery
    from ancestree.graph.model_graph import ModelGraph

#: How many nearest neighbours each new model looks at (grouped by tree, best of each tree checked).
NEIGHBOURS = 32

#: Further neighbours looked at, taken only when their cosine is at least :data:`SURE_COSINE` (no check):
#: one large tree fills the first :data:`NEIGHBOURS` and would hide a second tree a merge descends from.
FAR_NEIGHBOURS = 128

#: Embedding cosine above which a neighbour is taken as related without checking pair evidence: unrelated
#: models score below ~0.27 (see :data:`ancestree.index.neighbours.RELATED_COSINE`), relatives 0.7-1.0.
SURE_COSINE = 0.5

#: Nearest members of its tree whose edges a new model's placement re-decides (with their parents and children).
LOCAL_NEIGHBOURS = 8

#: Most models (indexed and new) one local recovery looks at: 22 = 2·k + 2 for the recovery's k = 10
#: neighbours, the size below which it compares every pair instead of projecting vectors for a k-d tree
#: search (exact, and ~5 times cheaper at this size). A tree no larger than this is recovered whole.
LOCAL_LIMIT = 22

#: How much cheaper a second local recovery makes the stored edges (angle-distance units, as the recovery's
#: costs), when the first one turned a chain of stored edges round (a new root, a loop): a subset alone
#: decides direction from the weak direction term (0.02 · log-probability), the whole tree had more to go
#: on. Not used at first: on the wild zoo it keeps 2 more stored edges against a new model's nearer weights.
SETTLED_BONUS = 0.1

#: Names, trees and embedding matrix of the indexed models (:meth:`IndexStore.embeddings`).
Embeddings = tuple[list[str], list["int | None"], np.ndarray]


@dataclass
class Placement:
    """What one placement did: which models it placed, how many it re-examined, how long it took."""

    placed: list[str] = field(default_factory=list)
    members: int = 0  # models the recoveries looked at (new models, their neighbourhoods, trees recovered whole)
    trees_touched: int = 0
    checked_pairs: int = 0
    seconds: float = 0.0
    local: int = 0  # new models placed by a local recovery of their neighbourhood
    fallbacks: list[str] = field(default_factory=list)  # why a tree was recovered whole instead of locally
    kept_old: list[str] = field(default_factory=list)  # models kept with an older version's fingerprint, and why


def recovery(settled_bonus: float = 0.0, like: GraphRecovery | None = None) -> GraphRecovery:
    """The package's tree recovery (:mod:`ancestree.graph`), its shipped direction and calibration models
    loaded once (or taken from ``like``): a placement runs it once per tree it touches."""
    from ancestree.graph import GraphRecovery
    from ancestree.graph.calibration import Calibration
    from ancestree.graph.direction import DirectionModel

    direction = like.direction if like is not None else DirectionModel.load()
    calibration = like.calibration if like is not None else Calibration.load()
    return GraphRecovery(direction=direction, calibration=calibration, settled_bonus=settled_bonus)


def recover(fingerprints: Sequence[Fingerprint]) -> ModelGraph:
    """The Model Graph of ``fingerprints`` by the package's tree recovery (:mod:`ancestree.graph`)."""
    return recovery().fit(list(fingerprints)).graph_


def declared_edges(store: IndexStore, names: Iterable[str] | None = None) -> list[Edge]:
    """Declared edges touching ``names`` (default: all): their own declared bases and models declaring them
    as base, resolved against the names indexed now."""
    from ancestree.graph.model_graph import RELATIONS

    edges = []
    wanted = None if names is None else set(names)
    rows = store.models("declared_base IS NOT NULL")
    resolve = DeclaredNames(store) if rows else None
    for row in rows:
        bases = base_names(row["declared_base"])
        relation = row["declared_relation"] if row["declared_relation"] in RELATIONS else None
        if relation is None:
            relation = "merge" if len(bases) > 1 else "unknown"
        for base in bases:
            parent = resolve(base, row["name"]) if resolve else None
            if parent and parent != row["name"] and (wanted is None or row["name"] in wanted or parent in wanted):
                edges.append(Edge(parent, row["name"], relation, 1.0, "declared"))
    return edges


def sync_declared(store: IndexStore, cur: sqlite3.Cursor | None = None) -> list[Edge]:
    """Resolve every card's declared base against the names indexed now and store exactly those edges (in
    its own transaction, or in the caller's ``cur``); returns them. A name can come to stand for other files
    (a re-upload, an alias handed its old files): an edge resolved through its old holder would otherwise
    stay beside the new one, and a card declaring one base would show two."""
    edges = declared_edges(store)
    if cur is not None:
        store.replace_declared(edges, cur)
        return edges
    with store.transaction() as own:
        store.replace_declared(edges, own)
    return edges


def _last_part(name: str) -> str:
    """A name's last path component, trimmed: every name :func:`resolve_name` matches shares it."""
    return name.strip().rstrip("/").rsplit("/", 1)[-1].strip()


class DeclaredNames:
    """The indexed model a declared base name refers to, resolved as ``tree`` resolves it
    (:func:`~ancestree.fingerprint.types.resolve_name`) among the indexed names and their aliases (another
    name found holding the very same files stands for the model indexed with them).

    The names are grouped by last path component, so each look-up compares the few names sharing it.
    """

    def __init__(self, store: IndexStore) -> None:
        self.model: dict[str, str] = {}
        for name, model in store.names():
            self.model.setdefault(name, model)
        self.by_last: dict[str, list[str]] = {}
        for name in self.model:
            for last in {_last_part(name), _last_part(hub_name(name))}:  # a cache folder by both its names
                self.by_last.setdefault(last, []).append(name)

    def __call__(self, declared: str, near: str | None = None) -> str | None:
        """The model ``declared`` stands for, read as the card of ``near`` (the declaring model's name)."""
        found = resolve_name(declared, self.by_last.get(_last_part(declared), []), near)
        return self.model[found] if found is not None else None


class Prints:
    """Stored fingerprints by name, each read from the index once per placement."""

    def __init__(self, store: IndexStore) -> None:
        self.store = store
        self.cache: dict[str, Fingerprint] = {}

    def __call__(self, names: Iterable[str]) -> list[Fingerprint]:
        names = list(names)
        missing = [n for n in names if n not in self.cache]
        self.cache.update((fp.id, fp) for fp in self.store.fingerprints(missing) if missing)
        return [self.cache[n] for n in names]


def candidate_trees(store: IndexStore, new: Sequence[str], space: Embeddings, declared: Sequence[Edge],
                    prints: Prints | None = None, k: int = NEIGHBOURS) -> tuple[dict[str, set[int]], dict[str, set[str]], int]:
    """For each new model: the indexed trees it joins, the other new models it is related to, pairs checked.

    Its ``k`` nearest neighbours by embedding are the candidates; the best one of each nearby tree (and each
    nearby new model) is related when its cosine is at least :data:`SURE_COSINE`, else when full pair
    evidence says so. The trees of its declared relatives and of its exact duplicates (same content key)
    are joined without a check.
    """
    prints = prints or Prints(store)
    names, trees, vectors = space
    tree_of = dict(zip(names, trees))
    new_names = set(new)
    index = NeighbourIndex().fit(names, vectors)
    position = {n: i for i, n in enumerate(names)}
    joins: dict[str, set[int]] = {n: set() for n in new}
    links: dict[str, set[str]] = {n: set() for n in new}
    checked = 0
    found = index.query_many(vectors[[position[n] for n in new]], max(k, FAR_NEIGHBOURS))
    for fp, hits in zip(prints(new), found):
        best: dict[int | str, tuple[str, float]] = {}  # tree id, or an unplaced new model -> best candidate
        for rank, (name, cos) in enumerate(hits):
            if rank >= k and cos < SURE_COSINE:
                continue
            key = tree_of.get(name) if name not in new_names else name
            if name != fp.id and key is not None and key not in best:
                best[key] = (name, cos)
        for key, (name, cos) in best.items():
            if cos < SURE_COSINE:
                checked += 1
                if not shares_weights(fp, prints([name])[0]):
                    continue
            if name in new_names:
                links[fp.id].add(name)
            else:
                joins[fp.id].add(int(key))
        for edge in declared:
            if fp.id in (edge.parent, edge.child):
                other = edge.parent if edge.child == fp.id else edge.child
                if other in new_names:
                    links[fp.id].add(other)
                elif (other_tree := tree_of.get(other)) is not None:
                    joins[fp.id].add(int(other_tree))
        if fp.content_key != NOTHING_KEY:  # the same values already indexed: join their tree
            for row in store.models("content_key = ? AND tree IS NOT NULL", (fp.content_key,)):
                joins[fp.id].add(int(row["tree"]))
    return joins, links, checked


def affected_trees(store: IndexStore, new: Sequence[Fingerprint], k: int = NEIGHBOURS) -> tuple[set[int], int]:
    """Trees the new models may join, and how many pairs were checked with full evidence."""
    names = [fp.id for fp in new]
    joins, _, checked = candidate_trees(store, names, store.embeddings(), declared_edges(store, names), k=k)
    return set().union(*joins.values()) if joins else set(), checked


def groups(joins: dict[str, set[int]], links: dict[str, set[str]]) -> list[tuple[list[str], set[int]]]:
    """New models that must be placed together (related to each other), with the indexed trees they join."""
    parent = {n: n for n in joins}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    owner: dict[int, str] = {}
    for n, trees in joins.items():
        for other in links[n]:
            parent[find(other)] = find(n)
        for tree in trees:
            if tree in owner:
                parent[find(n)] = find(owner[tree])
            else:
                owner[tree] = n
    out: dict[str, tuple[list[str], set[int]]] = {}
    for n in sorted(joins):
        names, trees = out.setdefault(find(n), ([], set()))
        names.append(n)
        trees |= joins[n]
    return list(out.values())


def write_graph(store: IndexStore, members: Sequence[str], graph: ModelGraph, declared: Sequence[Edge] | None = None) -> None:
    """Store the recovered edges and trees of ``members`` plus their declared edges, in one transaction."""
    edges = [Edge(p, c, d.get("relation", "unknown"), float(d.get("confidence", 0.0))) for p, c, d in graph.edges()]
    trees = []
    for comp in graph.tree_members():
        sub = graph.graph.subgraph(comp)
        roots = [n for n in comp if sub.in_degree(n) == 0]
        trees.append((roots[0] if len(roots) == 1 else None, comp))
    wanted = set(members)
    declared = declared_edges(store, members) if declared is None else declared
    with store.transaction() as cur:
        store.replace_recovered(members, edges, trees, cur)
        store.set_declared([e for e in declared if e.parent in wanted or e.child in wanted], cur)


def neighbourhood(store: IndexStore, trees: set[int], new: Sequence[str], space: Embeddings, declared: Sequence[Edge],
                  k: int = LOCAL_NEIGHBOURS, limit: int = LOCAL_LIMIT) -> list[str]:
    """The indexed models whose edges a placement of ``new`` may change: each new model's ``k`` nearest
    members of ``trees`` (by embedding cosine) and its declared relatives, then the current parents and
    children of those; at most ``limit`` models with the new ones, nearest first."""
    names, tree_ids, vectors = space
    rows = [i for i, t in enumerate(tree_ids) if t in trees]
    position = {n: i for i, n in enumerate(names)}
    scored: list[tuple[float, str]] = []
    for x in new:
        scores = vectors[rows] @ vectors[position[x]]
        scored += [(-float(scores[j]), names[rows[j]]) for j in np.argsort(-scores, kind="stable")[:k]]
    members = {names[i] for i in rows}
    core = [e.parent if e.child in new else e.child for e in declared if e.parent in new or e.child in new]
    core = list(dict.fromkeys(n for n in core + [n for _, n in sorted(scored)] if n in members))
    around = [n for e in store.edges("recovered", core) for n in (e.parent, e.child) if n in members]
    return list(dict.fromkeys(core + around))[: max(limit - len(new), 0)]


def local_edges(graph: ModelGraph, new: set[str], stored: Sequence[Edge]) -> tuple[list[Edge], set[str]] | str:
    """The edges of a local recovery, and the indexed models whose parents change; or why the local result
    cannot be spliced in (then the tree is recovered whole).

    Decided again are the parents of the new models, of the models the recovery puts below a new model,
    and of the models whose stored parents all lie in the neighbourhood (the recovery saw the old choice
    and its alternatives). A model whose stored parent lies outside keeps it: the recovery could not see it.
    """
    edges = [Edge(p, c, d.get("relation", "unknown"), float(d.get("confidence", 0.0))) for p, c, d in graph.edges()]
    inside = set(graph.graph.nodes)
    before: dict[str, set[str]] = {}
    for e in stored:
        before.setdefault(e.child, set()).add(e.parent)
    after: dict[str, set[str]] = {}
    for e in edges:
        after.setdefault(e.child, set()).add(e.parent)
    for x in sorted(new):
        if x not in after:
            return f"{x} has no parent in its neighbourhood (a new root of its tree)"
    moved = {c for c, ps in after.items() if c not in new and ps & new}
    if any(e.parent in new and e.child in moved and e.relation == "duplicate" for e in edges):
        return "a new model is the original of an indexed duplicate"
    moved |= {c for c, ps in after.items() if c not in new and before.get(c) and before[c] <= inside and ps != before[c]}
    kept = {(e.parent, e.child): e for e in stored}
    return [_settled(e, kept.get((e.parent, e.child))) for e in edges], moved


#: Relations that pair evidence refines a tree edge into (:class:`ancestree.graph.GraphRecovery`, last step).
REFINED = {"adapter", "pruned", "quantized"}


def _settled(local: Edge, stored: Edge | None) -> Edge:
    """A stored edge the local recovery chose again is kept as stored (its relation was refined by pair
    evidence then, and the recovery does not refine settled edges again), unless its kind changed."""
    if stored is None or not (local.relation == stored.relation or (local.relation == "finetune" and stored.relation in REFINED)):
        return local
    return stored


def find_loop(store: IndexStore, edges: Sequence[Edge], children: set[str]) -> list[str]:
    """A loop the spliced edges would close (a changed model that becomes its own ancestor), as the models
    on it; empty when there is none. Climbs stored parents, one indexed query per model."""
    incoming: dict[str, list[str]] = {c: [] for c in children}
    for e in edges:
        incoming[e.child].append(e.parent)

    def parents(n: str) -> list[str]:
        return incoming[n] if n in incoming else store.parents(n)

    for start in sorted(children):
        seen: set[str] = set()
        stack = [(p, [start, p]) for p in parents(start)]
        while stack:
            n, path = stack.pop()
            if n == start:
                return path
            if n not in seen:
                seen.add(n)
                stack.extend((p, [*path, p]) for p in parents(n))
    return []


#: How many times a loop is repaired by taking the local parents of the models on it.
LOOP_REPAIRS = 3


def splice(store: IndexStore, local: Sequence[Edge], new: set[str], moved: set[str]) -> tuple[list[Edge], set[str]] | None:
    """The local edges to splice in (into the new and moved models), or None when they would close a loop.

    A loop means the local recovery reversed stored edges beyond the models it moved (a model whose stored
    parent lay outside the neighbourhood kept it): the models on the loop take their local parents too.
    """
    has_local = {e.child for e in local}
    for _ in range(LOOP_REPAIRS + 1):
        edges = [e for e in local if e.child in new | moved]
        loop = find_loop(store, edges, new | moved)
        if not loop:
            return edges, moved
        extra = {n for n in loop if n in has_local} - new - moved
        if not extra:
            return None
        moved = moved | extra
    return None


def place_locally(store: IndexStore, trees: set[int], new: list[str], space: Embeddings, declared: Sequence[Edge],
                  engines: Sequence[GraphRecovery], prints: Prints) -> int | str:
    """Place ``new`` into one of ``trees`` by re-deciding their neighbourhood only, and splice the result
    into the stored graph in one transaction: every other stored edge stays as it is.

    A tree that a new model takes whole below it (the tree's root becomes its child) is merged into the
    new model's tree. Returns how many models were re-examined, or why the tree(s) must be recovered whole
    instead: a neighbourhood as large as the trees, a new model without a parent in it (a new root), or
    with parents in two trees, a tree split by the splice, or spliced edges that would close a loop.
    """
    tree_of = dict(zip(space[0], space[1]))
    members = neighbourhood(store, trees, new, space, declared)
    if len(members) >= sum(t in trees for t in space[1]):
        return "the neighbourhood is the whole tree"
    stored = store.edges("recovered", members)
    for engine in engines:  # without, then with a bonus for stored edges (see SETTLED_BONUS)
        # edges kept as stored keep the relation refined then: the recovery refines only the new ones
        graph = engine.fit(prints(members + new), settled=[(e.parent, e.child) for e in stored]).graph_
        decided = local_edges(graph, set(new), stored)
        if isinstance(decided, str):
            if "duplicate" in decided:
                return decided
            continue
        spliced = splice(store, decided[0], set(new), decided[1])
        if spliced is None:
            decided = "the neighbourhood's edges would close a loop with the rest of the tree"
            continue
        break
    else:
        assert isinstance(decided, str)  # each pass that did not break left the reason
        return decided
    edges, moved = spliced
    target = {tree_of[e.parent] for e in edges if e.child in new and e.parent not in new}
    if len(target) != 1:
        return f"{', '.join(new)} would have parents in {len(target)} trees"
    tree = int(target.pop())  # type: ignore[arg-type]
    merged = {int(tree_of[c]) for c in moved if tree_of[c] != tree}  # type: ignore[arg-type]
    touched = {tree_of[n] for e in edges for n in (e.parent, e.child) if n not in new}
    # another tree may join only whole: its root moves below a new model
    if touched - {tree} - merged or any(store.tree_root(t) not in moved for t in merged):
        return f"{', '.join(new)} would link trees other than whole"
    wanted = set(new)
    with store.transaction() as cur:
        store.splice_recovered(wanted | moved, edges, tree, new, cur, merged)
        store.set_declared([e for e in declared if e.parent in wanted or e.child in wanted], cur)
    return len(members) + len(new)


def place(store: IndexStore, names: Sequence[str] | None = None) -> Placement:
    """Place the unplaced models (or ``names``) into the graph.

    New models related to indexed trees are placed locally (:func:`place_locally`); new models related to
    no indexed tree are recovered among themselves; the tree(s) they join are recovered whole when the
    local result would change them beyond the neighbourhood.
    """
    start = time.perf_counter()
    names = list(names) if names is not None else store.unplaced()
    if not names:
        return Placement(seconds=time.perf_counter() - start)
    space = store.embeddings()
    prints = Prints(store)
    wanted = set(names)
    declared = [e for e in sync_declared(store) if e.parent in wanted or e.child in wanted]
    joins, links, checked = candidate_trees(store, names, space, declared, prints)
    engine = recovery()
    engines = (engine, recovery(SETTLED_BONUS, engine))
    result = Placement(placed=sorted(names), checked_pairs=checked)
    touched: set[int] = set()  # groups of unlinked new models can join the same tree: count it once
    for new, trees in groups(joins, links):
        touched |= set(trees)
        if trees:
            outcome = place_locally(store, trees, new, space, declared, engines, prints)
            if isinstance(outcome, int):
                result.members += outcome
                result.local += len(new)
                continue
            result.fallbacks.append(outcome)
        members = sorted(set(new) | set(store.tree_members(trees)))
        write_graph(store, members, engine.fit(prints(members)).graph_, declared)
        result.members += len(members)
    result.trees_touched = len(touched)
    result.seconds = time.perf_counter() - start
    return result


def rebuild(store: IndexStore) -> Placement:
    """Recover the whole graph again from the stored fingerprints (no model file is read)."""
    start = time.perf_counter()
    fps = store.fingerprints()
    graph = recover(fps)
    members = [fp.id for fp in fps]
    with store.transaction() as cur:
        store.clear_recovered(cur)
    write_graph(store, members, graph, sync_declared(store))
    return Placement(placed=members, members=len(members), trees_touched=len(graph.tree_members()),
                     seconds=time.perf_counter() - start)


__all__ = ["FAR_NEIGHBOURS", "LOCAL_LIMIT", "LOCAL_NEIGHBOURS", "NEIGHBOURS", "Placement", "affected_trees", "candidate_trees",
           "declared_edges", "groups", "local_edges", "neighbourhood", "place", "place_locally", "rebuild", "recover",
           "recovery", "DeclaredNames", "sync_declared", "write_graph", "Prints", "SURE_COSINE", "find_loop", "splice", "LOOP_REPAIRS"]
