"""Write recovered lineage into model cards (``README.md`` front matter), as the Hugging Face Hub reads it.

``base_model`` is the parent's id (a list for merges) and ``base_model_relation`` the relation when the Hub
knows it (adapter, merge, quantized, finetune); ``pruned`` and ``duplicate`` have no Hub value, so they go to
``ancestree_relation`` and the Hub infers its own. A value a card already declares is kept unless ``force``;
every disagreement is reported either way.

Writing is all or nothing as far as it can be foreseen: :func:`plan_cards` reads and checks every card that
would change (a README.md that cannot be parsed is a :class:`BadInputError` naming it) before
:meth:`CardPlan.apply` writes any, each atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ancestree.atomic import check_writable, write_all, write_text
from ancestree.errors import BadInputError
from ancestree.fingerprint.types import base_names, resolve_name
from ancestree.graph.model_graph import ModelGraph
from ancestree.io.base import HUB_RELATIONS, card_relation, relation_fields
from ancestree.io.loader import in_cache


@dataclass
class CardChange:
    model: str
    path: str
    action: str  # "written", "unchanged", "kept" (declared value kept), "overwritten", "skipped"
    base_model: str | list[str] | None
    relation: str | None
    declared: object = None  # the card's base_model as found (whatever its YAML holds)
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


def _same(declared, recovered, ids: Sequence[str] = (), model: str | None = None) -> bool:
    """Whether ``model``'s card, declaring ``declared``, names the recovered base(s): the same strings, or names
    that resolve to them among ``ids`` as ``tree`` resolves a card (``hub/org/base`` for the model scanned as
    ``org/base``)."""
    names, wanted = sorted(base_names(declared)), sorted(base_names(recovered))
    if names == wanted:
        return True
    resolved = [resolve_name(name, ids, near=model) for name in names] if ids else []
    return bool(resolved) and None not in resolved and sorted(resolved) == wanted  # type: ignore[type-var]


def load_card(readme: Path):
    """The :class:`~huggingface_hub.ModelCard` in ``readme``, or :class:`BadInputError` naming it and the problem
    (front matter that is not valid YAML, not a mapping, or tagged to build Python objects)."""
    import yaml
    from huggingface_hub import ModelCard

    from ancestree.io.folder import CardProblem, check_expansion, compose, front_matter, yaml_problem

    try:
        # checked as the readers check cards (size, nesting), and whole: the card is written back in full,
        # so a "billion laughs" of aliases would be expanded there
        text = front_matter(readme)
        root = compose(text) if text is not None else None
        if root is not None:
            check_expansion(root)
        return ModelCard.load(readme)
    except CardProblem as exc:
        raise BadInputError(readme, str(exc)) from None
    except yaml.YAMLError as exc:  # ParserError, ScannerError, ConstructorError (e.g. !!python/name tags)
        raise BadInputError(readme, f"front matter is not valid YAML: {yaml_problem(exc)}") from None
    except UnicodeDecodeError:
        raise BadInputError(readme, "is not UTF-8 text") from None
    except ValueError as exc:  # huggingface_hub: the block parsed to a list or a string
        raise BadInputError(readme, f"front matter is not a YAML mapping of keys to values ({exc})") from None
    except OSError as exc:
        raise BadInputError(readme, f"cannot read it ({exc.strerror or exc.__class__.__name__})") from None


def plan_card(folder: Path, base_model: str | list[str], relation: str, force: bool = False,
              ids: Sequence[str] = (), model: str | None = None) -> tuple[str, object, str | None]:
    """What updating ``folder/README.md`` would do, writing nothing: (action, the declared value found, the new
    text, or None when nothing is to be written). A declared base naming ``base_model`` otherwise (resolved among
    ``ids``, the graph's models, as the card of ``model``, the folder's id among them) agrees with it and keeps
    its spelling. Raises :class:`BadInputError` for a card
    that cannot be read."""
    from huggingface_hub import ModelCard, ModelCardData

    readme = folder / "README.md"
    card = load_card(readme) if readme.is_file() else ModelCard(f"---\n{ModelCardData().to_yaml()}\n---\n# {folder.name}\n")
    data = card.data.to_dict()
    declared = data.get("base_model")
    if declared and _same(declared, base_model, ids, model) and card_relation(data) in (None, relation):
        wanted = {"base_model_relation": None, **relation_fields(relation)}
        if all(data.get(key) == value for key, value in wanted.items()):
            return "unchanged", declared, None
        _set_relation(card, relation)
        return "written", declared, str(card)
    if declared and not force:
        return "kept", declared, None
    card.data.base_model = base_model  # type: ignore[union-attr]  # huggingface_hub types a ModelCard's data as CardData
    _set_relation(card, relation)
    return ("overwritten" if declared else "written"), declared, str(card)


def write_card(folder: Path, base_model: str | list[str], relation: str, force: bool = False) -> tuple[str, object]:
    """Update ``folder/README.md``; returns (action, the declared value found)."""
    action, declared, text = plan_card(folder, base_model, relation, force)
    if text is not None:
        write_text(folder / "README.md", text)
    return action, declared


def _set_relation(card, relation: str) -> None:
    """The Hub's ``base_model_relation`` when it has one for ``relation``; ours in ``ancestree_relation``."""
    card.data.base_model_relation = None
    for key, value in relation_fields(relation).items():
        setattr(card.data, key, value)


@dataclass
class CardPlan:
    """The cards :func:`plan_cards` found to change, checked and not yet written."""

    changes: list[CardChange]
    writes: dict[Path, str] = field(default_factory=dict)  # README.md -> its new text

    def apply(self) -> list[CardChange]:
        """Write every planned card, all or none, and return the changes."""
        write_all(self.writes)
        return self.changes


def plan_cards(graph: ModelGraph, paths: dict[str, Path], force: bool = False) -> CardPlan:
    """Read and check every card the recovered lineage would change, writing nothing (files have no card:
    skipped). Raises :class:`BadInputError` for the first card that cannot be parsed or written."""
    plan = CardPlan([])
    for model in graph.models:
        base, relation = recovered_lineage(graph, model)
        path = paths.get(model)
        if base is None or relation is None:
            continue
        if path is None or not Path(path).is_dir():
            plan.changes.append(CardChange(model, str(path), "skipped", base, relation, reason="not a model folder"))
            continue
        if in_cache(Path(path)):  # a card there is a link into the cache's blobs, or one nobody reads
            plan.changes.append(CardChange(model, str(path), "skipped", base, relation,
                                           reason="a Hugging Face cache folder: its files belong to the cache"))
            continue
        action, declared, text = plan_card(Path(path), base, relation, force, graph.models, model)
        if text is not None:
            readme = Path(path) / "README.md"
            check_writable(readme)  # a README.md that is a folder, a read-only model folder: before any card
            plan.writes[readme] = text
        reason = "declared base_model differs from the recovered one" if action in ("kept", "overwritten") else ""
        plan.changes.append(CardChange(model, str(path), action, base, relation, declared, reason))
    return plan


def write_cards(graph: ModelGraph, paths: dict[str, Path], force: bool = False) -> list[CardChange]:
    """Write every non-root model's recovered lineage into its folder's card: all cards are checked first."""
    return plan_cards(graph, paths, force).apply()


__all__ = ["CardChange", "CardPlan", "HUB_RELATIONS", "load_card", "plan_card", "plan_cards", "recovered_lineage",
           "write_card", "write_cards"]
