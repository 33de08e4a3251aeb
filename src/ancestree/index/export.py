"""Render the atlas's graph with the package's writers (:mod:`ancestree.present`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ancestree.graph.model_graph import ModelGraph


def render(graph: ModelGraph, fmt: str) -> str:
    """The text of ``graph`` in ``fmt`` (json, graphml, dot, mermaid, html)."""
    if fmt == "json":
        return graph.to_json()
    from ancestree.present import render as present_render

    return present_render(graph, fmt)


__all__ = ["render"]
