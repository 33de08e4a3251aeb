"""Positions for pictures (html, png): each tree drawn top-down by generation, trees side by side."""

from __future__ import annotations

from ancestree.graph.model_graph import ModelGraph


def layered_layout(graph: ModelGraph, dx: float = 1.0, dy: float = 1.0, row_width: float | None = None
                   ) -> dict[str, tuple[float, float]]:
    """Model id -> (x, y): y = generation (longest path from a root), x = leaf order of a depth-first walk.

    Trees are placed side by side; with ``row_width``, a tree that would start beyond it starts a new row
    below the deepest tree of the row above (so a picture of many trees keeps a readable aspect ratio).
    """
    pos: dict[str, tuple[float, float]] = {}
    x0, top, row_bottom = 0.0, 0.0, 0.0
    for members in graph.tree_members():
        if row_width is not None and x0 > 0 and x0 + len(members) * dx > row_width:
            x0, top = 0.0, row_bottom - 1.5 * dy
        sub = graph.graph.subgraph(members)
        depth = {m: 0 for m in members}
        order = list(_topological(sub))
        for m in order:
            for c in sub.successors(m):
                depth[c] = max(depth[c], depth[m] + 1)
        slot = [x0]

        def place(node: str, seen: set[str]) -> float:
            seen.add(node)
            # a child with several parents (a merge) is placed under the first of them only
            kids = [c for c in sorted(sub.successors(node)) if c not in seen and min(sub.predecessors(c)) == node]
            xs = [place(c, seen) for c in kids if c not in seen]
            if xs:
                x = sum(xs) / len(xs)
            else:
                x = slot[0]
                slot[0] += dx
            pos[node] = (x, top - depth[node] * dy)
            return x

        seen: set[str] = set()
        for r in [m for m in members if sub.in_degree(m) == 0]:
            place(r, seen)
        for m in members:  # nodes reached only through a second parent
            if m not in pos:
                pos[m] = (slot[0], top - depth[m] * dy)
                slot[0] += dx
        x0 = slot[0] + dx
        row_bottom = min(row_bottom, top - max(depth.values(), default=0) * dy)
    return pos


def _topological(sub):
    import networkx as nx

    try:
        return nx.topological_sort(sub)
    except nx.NetworkXUnfeasible:  # pragma: no cover - recovered graphs are acyclic
        return iter(sub.nodes)


__all__ = ["layered_layout"]
