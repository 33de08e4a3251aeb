"""Positions for pictures (html, png): each tree drawn top-down by generation, trees side by side."""

from __future__ import annotations

import math
from collections.abc import Iterator

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
        seen: set[str] = set()
        for r in [m for m in members if sub.in_degree(m) == 0]:
            for node, x in _place(sub, r, seen, slot, dx):
                pos[node] = (x, top - depth[node] * dy)
        for m in members:  # nodes reached only through a second parent
            if m not in pos:
                pos[m] = (slot[0], top - depth[m] * dy)
                slot[0] += dx
        x0 = slot[0] + dx
        row_bottom = min(row_bottom, top - max(depth.values(), default=0) * dy)
    return pos


def extent(pos: dict[str, tuple[float, float]]) -> tuple[float, float]:
    """Width and height of a layout in layout units (one unit a model)."""
    if not pos:
        return 1.0, 1.0
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    return max(xs) - min(xs) + 1.0, max(ys) - min(ys) + 1.0


def shaped_row_width(graph: ModelGraph, aspect: float = 1.0) -> float:
    """A row width that wraps the trees into a block about ``aspect`` times as wide as it is high: all trees in
    one row are ``w`` wide and ``h`` deep, so ``r`` units a row make ``w / r`` rows of about ``h + 1.5`` (the
    gap between rows)."""
    width, height = extent(layered_layout(graph))
    return max(1.0, math.sqrt(aspect * width * (height + 1.5)))


def _place(sub, root: str, seen: set[str], slot: list[float], dx: float) -> Iterator[tuple[str, float]]:
    """``(model, x)`` below ``root``, children before their parent: leaves take the next slot from the left, a
    parent the mean x of its children (depth first, without
    recursion: a chain of thousands of models is as deep). A child with several parents (a merge) is placed
    under the first of them only."""
    seen.add(root)
    stack: list[tuple[str, list[str], list[float]]] = [(root, _kids(sub, root, seen), [])]
    while stack:
        node, kids, xs = stack[-1]
        if kids:
            kid = kids.pop(0)
            if kid not in seen:
                seen.add(kid)
                stack.append((kid, _kids(sub, kid, seen), []))
            continue
        stack.pop()
        if xs:
            x = sum(xs) / len(xs)
        else:
            x = slot[0]
            slot[0] += dx
        yield node, x
        if stack:
            stack[-1][2].append(x)


def _kids(sub, node: str, seen: set[str]) -> list[str]:
    return [c for c in sorted(sub.successors(node)) if c not in seen and min(sub.predecessors(c)) == node]


def _topological(sub):
    import networkx as nx

    try:
        return nx.topological_sort(sub)
    except nx.NetworkXUnfeasible:  # pragma: no cover - recovered graphs are acyclic
        return iter(sub.nodes)


__all__ = ["extent", "layered_layout", "shaped_row_width"]
