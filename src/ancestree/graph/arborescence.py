"""Minimum spanning arborescence (Chu-Liu/Edmonds) of a sparse weighted digraph, any root.

``networkx.minimum_spanning_arborescence`` copies the whole graph at every contraction step, which made it
the bottleneck of recovery on thousands of models. This is the textbook contraction algorithm on plain
edge lists: O(E) per level, a few levels in practice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _edmonds(n: int, root: int, edges: list[tuple[int, int, float, int]]) -> set[int]:
    """Ids of the edges of a minimum arborescence rooted at ``root`` (every node must be reachable)."""
    best_w = [float("inf")] * n
    best: list[tuple[int, int, float, int] | None] = [None] * n
    for e in edges:
        u, v, w, _ = e
        if u != v and v != root and w < best_w[v]:
            best_w[v], best[v] = w, e
    comp, seen, count = [-1] * n, [-1] * n, 0
    for start in range(n):
        x = start
        while x != root and seen[x] == -1 and comp[x] == -1:  # nodes of earlier walks are settled
            seen[x] = start
            x = best[x][0]  # type: ignore[index]
        if x != root and comp[x] == -1 and seen[x] == start:  # walked into a new cycle through x
            y = best[x][0]  # type: ignore[index]
            while y != x:
                comp[y] = count
                y = best[y][0]  # type: ignore[index]
            comp[x] = count
            count += 1
    if count == 0:
        return {best[v][3] for v in range(n) if v != root}  # type: ignore[index]
    in_cycle = [c != -1 for c in comp]
    for v in range(n):
        if comp[v] == -1:
            comp[v] = count
            count += 1
    target = {e[3]: e[1] for e in edges}
    contracted = [(comp[u], comp[v], w - (best_w[v] if in_cycle[v] else 0.0), i)
                  for u, v, w, i in edges if comp[u] != comp[v]]
    chosen = _edmonds(count, comp[root], contracted)
    entered = {target[i] for i in chosen}
    for v in range(n):  # each cycle keeps all its edges but the one into the node the tree enters it by
        if in_cycle[v] and v not in entered:
            chosen.add(best[v][3])  # type: ignore[index]
    return chosen


def minimum_arborescence(nodes: Sequence[int], edges: Sequence[tuple[int, int, float]],
                         root_cost: Mapping[int, float] | None = None) -> list[tuple[int, int]]:
    """Edges ``(parent, child)`` of a minimum spanning arborescence of the weakly connected digraph ``edges``
    over ``nodes`` (the root is chosen by the algorithm: a virtual root with one costly edge to every node).

    ``root_cost`` (≥ 0, default 0) is what it costs to make a node the root, weighed against the edge costs:
    a prior on which model is the oldest. Every weakly connected component still gets exactly one root."""
    index = {m: i for i, m in enumerate(nodes)}
    n = len(nodes)
    if n < 2:
        return []
    root_cost = root_cost or {}
    big = 1.0 + (sum(abs(w) for _, _, w in edges) + sum(root_cost.values())) * 2
    listed = [(index[u], index[v], float(w), k) for k, (u, v, w) in enumerate(edges)]
    listed += [(n, i, big + float(root_cost.get(m, 0.0)), len(edges) + i) for i, m in enumerate(nodes)]
    chosen = _edmonds(n + 1, n, listed)
    return [(edges[k][0], edges[k][1]) for k in sorted(chosen) if k < len(edges)]


__all__ = ["minimum_arborescence"]
