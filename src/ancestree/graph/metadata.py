"""Declared lineage (model cards' ``base_model``, PEFT ``base_model_name_or_path``) as a prior, and conflicts.

A declaration is a claim, not evidence: recovery uses it as a bonus on the declared edge, and every place
where the recovered graph disagrees with a declaration is reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ancestree.fingerprint import Fingerprint
from ancestree.fingerprint.types import resolve_name as resolve


def declared_parents(fps: Sequence[Fingerprint], ids: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Model id -> the input ids it declares as its base model(s) (declarations naming no input are dropped)."""
    ids = list(ids) if ids is not None else [f.id for f in fps]
    out: dict[str, list[str]] = {}
    for f in fps:
        found = [r for r in (resolve(n, ids, near=f.id) for n in f.declared.base_names) if r is not None and r != f.id]
        if found:
            out[f.id] = found
    return out


def report_conflicts(graph, declared: dict[str, list[str]], fps: dict[str, Fingerprint]) -> list[dict[str, Any]]:
    """One note per model whose recovered parents differ from its declared base model(s) or relation."""
    notes = []
    for model, bases in sorted(declared.items()):
        if model not in graph:
            continue
        recovered = graph.parents(model)
        if sorted(bases) != recovered:
            notes.append({"model": model, "declared_base_model": bases, "recovered_parents": recovered,
                          "problem": "declared base model differs from the lineage recovered from the weights"})
            continue
        rel = fps[model].declared.relation if model in fps else None
        got = {graph.graph.edges[p, model]["relation"] for p in recovered}
        if rel and rel not in got and not (rel == "adapter" and got <= {"adapter"}):
            notes.append({"model": model, "declared_relation": rel, "recovered_relation": sorted(got),
                          "problem": "declared relation differs from the recovered one"})
    return notes


def is_conflict(note: dict[str, Any]) -> bool:
    """Whether a graph note is a conflict with declared lineage (:func:`report_conflicts`), not a remark."""
    return any(key.startswith("declared") for key in note)


__all__ = ["declared_parents", "is_conflict", "report_conflicts", "resolve"]
