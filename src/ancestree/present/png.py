"""A static picture of the Model Graph (matplotlib, no display needed), written atomically.

Small graphs get a labelled box per model (its id and file format) and arrows. A picture has at most
:data:`MAX_SIDE` inches a side, so beyond a few dozen models a box each no longer fits (at 1 000 models the
boxes piled on each other and hid the edges): then each model is a dot, the trees are wrapped into a
roughly square block, edges are lines (parents above children) and only the roots are named.
"""

from __future__ import annotations

import warnings

from pathlib import Path
from typing import Any

from ancestree.atomic import atomic_path
from ancestree.fingerprint.types import short_name
from ancestree.graph.model_graph import ModelGraph
from ancestree.present.html import COLORS
from ancestree.present.layout import extent, layered_layout, shaped_row_width

#: Inches one labelled model needs across and down (an 18-character id and its format at 8 pt, with gaps).
LABEL_WIDTH, LABEL_HEIGHT = 1.15, 0.95

#: Largest side of a picture, in inches.
MAX_SIDE = 30.0

Positions = dict[str, tuple[float, float]]


def write_png(graph: ModelGraph, path: str | Path, dpi: int = 110, title: str | None = None,
              row_width: float = 16.0) -> None:
    """Draw ``graph`` (trees wrapped into rows ``row_width`` models wide when labelled) to ``path``."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # names in scripts the font lacks (CJK) are drawn as boxes, not warned of per glyph
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig = draw(graph, title, row_width)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


def draw(graph: ModelGraph, title: str | None = None, row_width: float = 16.0) -> Any:
    """The matplotlib figure of ``graph``: labelled boxes when they fit in :data:`MAX_SIDE` inches, else dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = layered_layout(graph, row_width=row_width)
    width, height = extent(pos)
    labelled = width * LABEL_WIDTH <= MAX_SIDE and height * LABEL_HEIGHT <= MAX_SIDE
    if labelled:
        size = (max(4.0, LABEL_WIDTH * width), max(3.0, LABEL_HEIGHT * height))
    else:
        pos = layered_layout(graph, row_width=shaped_row_width(graph))
        width, height = extent(pos)
        inch = MAX_SIDE / max(width, height)  # inches per layout unit
        size = (max(4.0, inch * width), max(3.0, inch * height))
    fig, ax = plt.subplots(figsize=size)
    if labelled:
        _draw_boxes(ax, graph, pos)
    else:
        _draw_dots(ax, graph, pos, inch)
    handles = [plt.Line2D([], [], color=c, label=r) for r, c in COLORS.items()
               if any(d.get("relation") == r for _, _, d in graph.edges())]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=False)
    xs, ys = [p[0] for p in pos.values()] or [0.0], [p[1] for p in pos.values()] or [0.0]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + (0.6 if labelled else 1.5))  # room for the top row's root names
    ax.axis("off")
    if not labelled:
        title = (f"{title}: " if title else "") + (f"{len(graph)} models in {len(graph.tree_members())} trees "
                                                   "(parents above children; roots named; `-f html` names every model)")
    if title:
        ax.set_title(title, fontsize=10, parse_math=False)
    fig.tight_layout()
    return fig


def _style(relation: str) -> dict[str, Any]:
    return {"color": COLORS.get(relation, "#555"), "linestyle": "-" if relation in ("finetune", "merge") else "--"}


def _draw_boxes(ax: Any, graph: ModelGraph, pos: Positions) -> None:
    for p, c, d in graph.edges():
        (x0, y0), (x1, y1) = pos[p], pos[c]
        rel = d.get("relation", "unknown")
        style = _style(rel)
        ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                    arrowprops={"arrowstyle": "-" if rel == "duplicate" else "->", "color": style["color"],
                                "linestyle": style["linestyle"], "lw": 1.4})
    for m, (x, y) in pos.items():
        label = short_name(m, 18) + "\n" + str(graph.graph.nodes[m].get("format", ""))
        ax.text(x, y, label, ha="center", va="center", fontsize=8, parse_math=False,  # a `$` in a name is no TeX
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#444"})


def _draw_dots(ax: Any, graph: ModelGraph, pos: Positions, inch: float) -> None:
    """Models as dots, edges as lines (one collection per relation: thousands of arrows took seconds each),
    roots larger and named where their tree is wide enough for the name."""
    from matplotlib.collections import LineCollection

    points = 72.0 * inch  # points per layout unit
    by_relation: dict[str, list[tuple[tuple[float, float], tuple[float, float]]]] = {}
    for p, c, d in graph.edges():
        by_relation.setdefault(d.get("relation", "unknown"), []).append((pos[p], pos[c]))
    for rel, segments in by_relation.items():
        ax.add_collection(LineCollection(segments, linewidths=min(1.4, max(0.3, 0.04 * points)), **_style(rel)))
    dot = min(6.0, max(1.0, 0.3 * points))
    xs, ys = zip(*pos.values()) if pos else ((), ())
    ax.scatter(xs, ys, s=dot ** 2, c="#333", zorder=3, linewidths=0)
    font = min(8.0, max(4.0, 0.35 * points))
    for members in graph.tree_members():
        span = extent({m: pos[m] for m in members})[0] * inch  # inches the tree is wide
        for root in (m for m in members if graph.graph.in_degree(m) == 0):
            x, y = pos[root]
            ax.scatter([x], [y], s=(2 * dot) ** 2, c="#c0392b", zorder=4, linewidths=0)
            name = short_name(root, 24)
            if len(name) * font * 0.6 / 72.0 <= max(span, 1.0):  # about 0.6 em a character
                ax.text(x, y + 0.45, name, ha="center", va="bottom", fontsize=font, zorder=5, parse_math=False)


__all__ = ["draw", "write_png"]
