"""Text formats of a Model Graph: JSON (the contract), Graphviz DOT, GraphML, Mermaid and a terminal tree."""

from __future__ import annotations

import io
import re
from collections.abc import Callable

import networkx as nx

from ancestree.graph.metadata import is_conflict
from ancestree.graph.model_graph import ModelGraph

#: Line styles per relation, shared by DOT and Mermaid so pictures read alike.
STYLE = {
    "finetune": ("solid", "-->"),
    "adapter": ("dashed", "-.->"),
    "quantized": ("dotted", "-.->"),
    "pruned": ("dotted", "-.->"),
    "merge": ("bold", "==>"),
    "duplicate": ("dashed", "---"),
    "unknown": ("solid", "-->"),
}


def to_json(graph: ModelGraph) -> str:
    return graph.to_json()


def _dot_quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dot_label(lines: list[str]) -> str:
    """A DOT string of several lines (``\\n`` is DOT's line break)."""
    return '"' + "\\n".join(str(x).replace("\\", "\\\\").replace('"', '\\"') for x in lines) + '"'


def to_dot(graph: ModelGraph) -> str:
    """Graphviz DOT: one cluster per tree, edges labelled with relation and confidence."""
    lines = ["digraph model_graph {", "  rankdir=TB;", '  node [shape=box, style="rounded"];']
    for t, members in graph.tree_groups():
        lines.append(f"  subgraph cluster_{t} {{")
        lines.append(f'    label="tree {t}";')
        for m in members:
            attrs = graph.graph.nodes[m]
            label = _dot_label([m, f"{attrs.get('format', '?')}, {int(attrs.get('parameters', 0)):,} params"])
            lines.append(f"    {_dot_quote(m)} [label={label}];")
        lines.append("  }")
    for p, c, d in graph.edges():
        rel = d.get("relation", "unknown")
        style = STYLE.get(rel, STYLE["unknown"])[0]
        label = f"{rel} {float(d.get('confidence', 0)):.2f}"
        extra = ", dir=none" if rel == "duplicate" else ""
        lines.append(f"  {_dot_quote(p)} -> {_dot_quote(c)} [label={_dot_quote(label)}, style={style}{extra}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_graphml(graph: ModelGraph) -> str:
    """GraphML (readable by ``networkx.read_graphml``, Gephi, yEd), with the tree id on every node."""
    g = nx.DiGraph()
    trees = graph.trees()
    for m in graph.models:
        attrs = graph.graph.nodes[m]
        g.add_node(_xml_text(m), format=_xml_text(str(attrs.get("format", "unknown"))), parameters=int(attrs.get("parameters", 0)),
                   tree=int(trees[m]))
    for p, c, d in graph.edges():
        g.add_edge(_xml_text(p), _xml_text(c), relation=str(d.get("relation", "unknown")), confidence=float(d.get("confidence", 0.0)))
    buf = io.BytesIO()
    nx.write_graphml(g, buf)
    return buf.getvalue().decode("utf-8")


def _xml_text(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold (controls but tab and newlines) written as ``\\xNN``: a
    name holding one made a GraphML file no XML reader accepts."""
    # lone surrogates too: a file name that is not UTF-8 carries them (os.fsdecode), written as \\udcNN
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]",
                  lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)


def _mermaid_id(index: int) -> str:
    return f"m{index}"


def _mermaid_label(text: str) -> str:
    return re.sub(r'["<>]', "_", str(text))


def to_mermaid(graph: ModelGraph) -> str:
    """A Mermaid flowchart (renders in GitHub Markdown), one subgraph per tree."""
    ids = {m: _mermaid_id(i) for i, m in enumerate(graph.models)}
    lines = ["flowchart TD"]
    for t, members in graph.tree_groups():
        lines.append(f'  subgraph tree{t}["tree {t}"]')
        for m in members:
            lines.append(f'    {ids[m]}["{_mermaid_label(m)}"]')
        lines.append("  end")
    for p, c, d in graph.edges():
        rel = d.get("relation", "unknown")
        arrow = STYLE.get(rel, STYLE["unknown"])[1]
        lines.append(f'  {ids[p]} {arrow}|"{rel} {float(d.get("confidence", 0)):.2f}"| {ids[c]}')
    return "\n".join(lines) + "\n"


#: Width the text tree is laid out in: wide enough that no line is wrapped (a wrapped line split a model's
#: id or its relation from its line in logs and pipes; a terminal wraps long lines itself).
TEXT_WIDTH = 100_000


def to_text(graph: ModelGraph, width: int = TEXT_WIDTH) -> str:
    """A terminal tree per Model Tree (rich), merges shown under each parent and marked; one line per model."""
    from rich.console import Console
    from rich.tree import Tree

    # no markup: model ids are folder names, and "sweep[lr=1e-4]" or "runs[/b]" are names, not styles
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None, markup=False)
    for t, members in graph.tree_groups():
        sub = graph.graph.subgraph(members)
        roots = [m for m in members if sub.in_degree(m) == 0]
        top = Tree(f"tree {t} ({len(members)} model{'s' if len(members) != 1 else ''})")
        for r in roots:
            _grow(graph, r, top.add(_node_label(graph, r, None)), set())
        console.print(top)
    conflicts = [n for n in graph.notes if is_conflict(n)]
    if conflicts:
        console.print(f"{len(conflicts)} conflict(s) between declared and recovered lineage:")
        for n in conflicts:
            console.print(f"  {n['model']}: {n['problem']} (declared {n.get('declared_base_model', n.get('declared_relation'))}, recovered {n.get('recovered_parents', n.get('recovered_relation'))})")
    for n in graph.notes:
        if not is_conflict(n):
            console.print(f"warning: {n['model']}: {n['problem']}")
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def _node_label(graph: ModelGraph, m: str, parent: str | None) -> str:
    attrs = graph.graph.nodes[m]
    base = f"{m}  [{attrs.get('format', '?')}, {int(attrs.get('parameters', 0)):,} params]"
    if parent is None:
        return base
    d = graph.graph.edges[parent, m]
    others = [p for p in graph.parents(m) if p != parent]
    merge = f" with {', '.join(others)}" if others else ""
    return f"{base}  ← {d.get('relation')}{merge} ({float(d.get('confidence', 0)):.2f})"


def _grow(graph: ModelGraph, node: str, branch, seen: set[str]) -> None:
    seen.add(node)
    for child in sorted(graph.graph.successors(node)):
        if child in seen:
            branch.add(f"{child} (see above)")
            continue
        _grow(graph, child, branch.add(_node_label(graph, child, node)), seen)


WRITERS: dict[str, Callable[[ModelGraph], str]] = {
    "json": to_json,
    "dot": to_dot,
    "graphml": to_graphml,
    "mermaid": to_mermaid,
    "text": to_text,
}

__all__ = ["STYLE", "WRITERS", "to_dot", "to_graphml", "to_json", "to_mermaid", "to_text"]
