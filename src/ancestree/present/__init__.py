"""Writers of a recovered Model Graph: json, dot, graphml, mermaid, html, text, png, and model cards.

Every writer is a pure function ``graph -> str`` (``png`` writes to a path); :data:`WRITERS` maps the CLI's
``--format`` names to them and :func:`render` picks one by name.
"""

from ancestree.present.formats import WRITERS, to_dot, to_graphml, to_json, to_mermaid, to_text
from ancestree.present.html import to_html

WRITERS["html"] = to_html


def render(graph, fmt: str) -> str:
    """The text of ``graph`` in format ``fmt`` (a key of :data:`WRITERS`)."""
    if fmt not in WRITERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(WRITERS)}")
    return WRITERS[fmt](graph)


__all__ = ["WRITERS", "render", "to_dot", "to_graphml", "to_html", "to_json", "to_mermaid", "to_text"]
