"""A static picture of the Model Graph (matplotlib, no display needed), written atomically."""

from __future__ import annotations

from pathlib import Path

from ancestree.atomic import atomic_path
from ancestree.fingerprint.types import short_name
from ancestree.graph.model_graph import ModelGraph
from ancestree.present.html import COLORS
from ancestree.present.layout import layered_layout


def write_png(graph: ModelGraph, path: str | Path, dpi: int = 110, title: str | None = None,
              row_width: float = 16.0) -> None:
    """Draw ``graph`` (trees wrapped into rows ``row_width`` models wide; labels: id and file format)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = layered_layout(graph, row_width=row_width)
    xs = [p[0] for p in pos.values()] or [0]
    ys = [p[1] for p in pos.values()] or [0]
    width = min(max(4.0, 1.15 * (max(xs) - min(xs) + 1)), 30.0)
    height = min(max(3.0, 0.95 * (max(ys) - min(ys) + 1)), 30.0)
    fig, ax = plt.subplots(figsize=(width, height))
    for p, c, d in graph.edges():
        (x0, y0), (x1, y1) = pos[p], pos[c]
        rel = d.get("relation", "unknown")
        ax.annotate("", xy=(x1, y1 + 0.18), xytext=(x0, y0 - 0.18),
                    arrowprops={"arrowstyle": "-" if rel == "duplicate" else "->", "color": COLORS.get(rel, "#555"),
                                "linestyle": "-" if rel in ("finetune", "merge") else "--", "lw": 1.4})
    for m, (x, y) in pos.items():
        label = short_name(m, 18) + "\n" + str(graph.graph.nodes[m].get("format", ""))
        ax.text(x, y, label, ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "#444"})
    handles = [plt.Line2D([], [], color=c, label=r) for r, c in COLORS.items()
               if any(d.get("relation") == r for _, _, d in graph.edges())]
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7, frameon=False)
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(min(ys) - 0.6, max(ys) + 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)


__all__ = ["write_png"]
