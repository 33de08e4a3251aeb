"""The Model Graph: models (nodes) and lineage edges, as a thin wrapper over a ``networkx.DiGraph``.

Node attributes: ``format``, ``parameters`` and anything else a writer may show (``declared_base_model``,
``extra``). Edge attributes: ``relation`` (one of :data:`RELATIONS`) and ``confidence``. Tree ids are the
weakly connected components, numbered stably by their smallest model id, so the same graph always prints the
same tree numbers; a graph read from a store that keeps its own tree ids (the atlas) gives every node a
``tree`` attribute, and those are printed instead, so that every view of the store names a tree alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import networkx as nx

from ancestree.errors import BadInputError

#: Edge relations of the contract.
RELATIONS = ("finetune", "adapter", "quantized", "merge", "pruned", "duplicate", "unknown")


class ModelGraph:
    """A directed graph of models; ``graph`` is the underlying :class:`networkx.DiGraph`."""

    def __init__(self, graph: nx.DiGraph | None = None) -> None:
        self.graph = graph if graph is not None else nx.DiGraph()
        self.notes: list[dict[str, Any]] = []  # conflicts and remarks found while building the graph

    # -- building ---------------------------------------------------------------------------------
    def add_model(self, model_id: str, format: str = "unknown", parameters: int = 0, **attrs: Any) -> None:
        self.graph.add_node(model_id, format=format, parameters=int(parameters), **attrs)

    def add_edge(self, parent: str, child: str, relation: str = "finetune", confidence: float = 1.0, **attrs: Any) -> None:
        if relation not in RELATIONS:
            raise ValueError(f"unknown relation {relation!r}; expected one of {', '.join(RELATIONS)}")
        for node in (parent, child):
            if node not in self.graph:
                raise KeyError(f"no model {node!r} in the graph")
        self.graph.add_edge(parent, child, relation=relation, confidence=float(confidence), **attrs)

    # -- reading ----------------------------------------------------------------------------------
    @property
    def models(self) -> list[str]:
        return sorted(self.graph.nodes)

    def edges(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Edges sorted by (child, parent) so output is stable."""
        return sorted(self.graph.edges(data=True), key=lambda e: (e[1], e[0]))

    def parents(self, model_id: str) -> list[str]:
        return sorted(self.graph.predecessors(model_id))

    def roots(self) -> list[str]:
        return [n for n in self.models if self.graph.in_degree(n) == 0]

    def trees(self) -> dict[str, int]:
        """Model id -> tree id: the nodes' own ``tree`` attributes when every node has one, else the weakly
        connected components numbered by their smallest id."""
        stored = nx.get_node_attributes(self.graph, "tree")
        if stored and len(stored) == len(self.graph):
            return {m: int(t) for m, t in stored.items()}
        comps = sorted((sorted(c) for c in nx.weakly_connected_components(self.graph)), key=lambda c: c[0])
        return {m: i for i, comp in enumerate(comps) for m in comp}

    def tree_groups(self) -> list[tuple[int, list[str]]]:
        """``(tree id, sorted members)`` per tree, by tree id."""
        out: dict[int, list[str]] = {}
        for m, t in self.trees().items():
            out.setdefault(t, []).append(m)
        return [(t, sorted(out[t])) for t in sorted(out)]

    def tree_members(self) -> list[list[str]]:
        return [members for _, members in self.tree_groups()]

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __contains__(self, model_id: object) -> bool:
        return model_id in self.graph

    # -- the contract's JSON ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``tree --format json`` record (plus ``notes`` when there are conflicts to report)."""
        trees = self.trees()
        models = []
        for m in self.models:
            attrs = self.graph.nodes[m]
            record = {"id": m, "format": attrs.get("format", "unknown"), "parameters": int(attrs.get("parameters", 0)),
                      "tree": trees[m]}
            declared = attrs.get("declared_base_model")
            if declared:
                record["declared_base_model"] = declared
            models.append(record)
        edges = [{"parent": p, "child": c, "relation": d.get("relation", "unknown"),
                  "confidence": round(float(d.get("confidence", 0.0)), 4), **({"source": d["source"]} if "source" in d else {})}
                 for p, c, d in self.edges()]
        out: dict[str, Any] = {"models": models, "edges": edges}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> ModelGraph:
        """Build from a ``tree --format json`` record (or a zoo's ``truth.json``)."""
        if not isinstance(data, dict) or not isinstance(data.get("models"), list) or not isinstance(data.get("edges"), list):
            raise BadInputError(source, "not a model graph: expected a JSON object with 'models' and 'edges' lists")
        g = cls()
        for m in data["models"]:
            if not isinstance(m, dict) or "id" not in m:
                raise BadInputError(source, "every entry of 'models' needs an 'id'")
            if str(m["id"]) in g.graph:
                raise BadInputError(source, f"model {m['id']!r} is listed twice")
            g.add_model(str(m["id"]), str(m.get("format", "unknown")), int(m.get("parameters", 0) or 0),
                        **({"declared_base_model": m["declared_base_model"]} if m.get("declared_base_model") else {}))
        for e in data.get("edges", []):
            try:
                if str(e["parent"]) == str(e["child"]):
                    raise ValueError("a model cannot be its own parent")
                confidence = float(e.get("confidence", 1.0))
                if not 0.0 <= confidence <= 1.0:
                    raise ValueError(f"confidence {confidence} is not a probability")
                g.add_edge(str(e["parent"]), str(e["child"]), str(e.get("relation", "unknown")), confidence,
                           **({"source": str(e["source"])} if "source" in e else {}))  # declared / recovered (an index export)
            except (KeyError, TypeError, ValueError) as exc:
                raise BadInputError(source, f"bad edge {e!r}: {exc}") from None
        if not nx.is_directed_acyclic_graph(g.graph):
            loop = " -> ".join(str(u) for u, _ in nx.find_cycle(g.graph))
            raise BadInputError(source, f"lineage has a cycle ({loop}): a Model Graph is acyclic")
        g.notes = list(data.get("notes", []))
        return g

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> ModelGraph:
        """Read a graph JSON file; :class:`BadInputError` when it is missing or malformed."""
        return cls.from_dict(read_graph_json(path), str(path))


def read_graph_json(path: str | Path) -> Any:
    """The parsed content of a graph JSON file (:meth:`ModelGraph.from_dict` checks its shape);
    :class:`BadInputError` when it is missing or not JSON."""
    p = Path(path)
    if not p.is_file():
        raise BadInputError(path, "is a folder, not a graph JSON file" if p.is_dir() else "no such file")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"not valid JSON: {exc}") from None
    except RecursionError:  # json's decoder recurses per nesting level
        raise BadInputError(path, "JSON nested too deeply to be a model graph") from None


def load_zoo_truth(folder: str | Path) -> dict[str, Any]:
    """A zoo's ``truth.json`` as a dict, checked: the folder and file exist, ``models`` (each with an ``id``)
    and ``edges`` are lists, and every listed model has its folder. :class:`BadInputError` otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(folder, "no such folder" if not folder.exists() else "not a folder (a zoo is a folder)")
    path = folder / "truth.json"
    if not path.is_file():
        raise BadInputError(folder, "not a zoo: no truth.json (make one with `ancestree zoo make`)")
    try:
        truth = json.loads(path.read_text(encoding="utf-8"))
        ids = [str(m["id"]) for m in truth["models"]]
        if not isinstance(truth["edges"], list) or not all(isinstance(e, dict) for e in truth["edges"]):
            raise TypeError("'edges' is not a list of objects")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BadInputError(path, f"malformed truth.json ({exc.__class__.__name__}: {str(exc)[:200]})") from None
    missing = [m for m in ids if not (folder / m).exists()]
    if missing:
        raise BadInputError(path, f"lists {len(missing)} model(s) missing from the zoo folder (first: {missing[0]})")
    return truth


def graph_from_edges(models: Iterable[str], edges: Iterable[tuple[str, str, str, float]]) -> ModelGraph:
    """A graph from bare ids and ``(parent, child, relation, confidence)`` tuples (tests, benchmarks)."""
    g = ModelGraph()
    for m in models:
        g.add_model(m)
    for p, c, r, conf in edges:
        g.add_edge(p, c, r, conf)
    return g


__all__ = ["RELATIONS", "ModelGraph", "graph_from_edges", "load_zoo_truth", "read_graph_json"]
