"""Write recovered lineage into model cards (``README.md`` front matter), as the Hugging Face Hub reads it.

``base_model`` is the parent's id (a list for merges) and ``base_model_relation`` the relation when the Hub
knows it (adapter, merge, quantized, finetune); ``pruned`` and ``duplicate`` have no Hub value, so they go to
``ancestree_relation`` and the Hub infers its own. A value a card already declares is kept unless ``force``;
every disagreement is reported either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ancestree.atomic import write_text
from ancestree.graph.model_graph import ModelGraph
from ancestree.io.base import HUB_RELATIONS, card_relation, relation_fields


@dataclass
class CardChange:
    model: str
    path: str
    action: str  # "written", "unchanged", "kept" (declared value kept), "overwritten", "skipped"
    base_model: str | list[str] | None
    relation: str | None
    declared: str | list[str] | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def recovered_lineage(graph: ModelGraph, model: str) -> tuple[str | list[str] | None, str | None]:
    """(base_model, relation) of ``model`` in ``graph``: a list of parents for a merge, None for a root."""
    parents = graph.parents(model)
    if not parents:
        return None, None
    relations = {graph.graph.edges[p, model]["relation"] for p in parents}
    relation = "merge" if "merge" in relations or len(parents) > 1 else relations.pop()
    return (parents if len(parents) > 1 else parents[0]), relation


def _same(a, b) -> bool:
    norm = lambda v: sorted(v) if isinstance(v, list) else ([v] if v else [])  # noqa: E731
    return norm(a) == norm(b)


def write_card(folder: Path, base_model: str | list[str], relation: str, force: bool = False) -> tuple[str, object]:
    """Update ``folder/README.md``; returns (action, the declared value found)."""
    from huggingface_hub import ModelCard, ModelCardData

    readme = folder / "README.md"
    card = ModelCard.load(readme) if readme.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n# {folder.name}\n")
    data = card.data.to_dict()
    declared = data.get("base_model")
    if declared and _same(declared, base_model) and card_relation(data) in (None, relation):
        wanted = {"base_model_relation": None, **relation_fields(relation)}
        if all(data.get(key) == value for key, value in wanted.items()):
            return "unchanged", declared
        _set_relation(card, relation)
        write_text(readme, str(card))
        return "written", declared
    if declared and not force:
        return "kept", declared
    card.data.base_model = base_model
    _set_relation(card, relation)
    write_text(readme, str(card))
    return ("overwritten" if declared else "written"), declared


def _set_relation(card, relation: str) -> None:
    """The Hub's ``base_model_relation`` when it has one for ``relation``; ours in ``ancestree_relation``."""
    card.data.base_model_relation = None
    for key, value in relation_fields(relation).items():
        setattr(card.data, key, value)


def write_cards(graph: ModelGraph, paths: dict[str, Path], force: bool = False) -> list[CardChange]:
    """Write every non-root model's recovered lineage into its folder's card (files have no card: skipped)."""
    changes = []
    for model in graph.models:
        base, relation = recovered_lineage(graph, model)
        path = paths.get(model)
        if base is None or relation is None:
            continue
        if path is None or not Path(path).is_dir():
            changes.append(CardChange(model, str(path), "skipped", base, relation, reason="not a model folder"))
            continue
        action, declared = write_card(Path(path), base, relation, force)
        reason = "declared base_model differs from the recovered one" if action in ("kept", "overwritten") else ""
        changes.append(CardChange(model, str(path), action, base, relation, declared, reason))
    return changes


__all__ = ["CardChange", "HUB_RELATIONS", "recovered_lineage", "write_card", "write_cards"]
