"""Hugging Face model folders: ``config.json``, a model card, and one or several weight files.

Sharded checkpoints (``*.index.json`` with a ``weight_map``) and plain multi-file folders are presented
as one :class:`Model`; every tensor is still read from its own shard, one at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ancestree.errors import BadInputError
from ancestree.io.base import Model, ModelMeta, TensorInfo


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``, or a :class:`BadInputError` naming it."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(path, f"cannot read JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(value, dict):
        raise BadInputError(path, "expected a JSON object")
    return value


#: libyaml's safe loader when PyYAML was built with it (a card parses ~10× faster), else the pure-Python one.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: Front matter longer than this is not read: real cards hold a few hundred bytes of metadata.
MAX_FRONT_MATTER = 64 * 1024

#: Deepest nesting of lists and mappings read; libyaml's composer recurses in C and crashes the process
#: (segmentation fault) on some 30,000 levels, which fit in 64 KiB.
MAX_DEPTH = 32

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"

log = logging.getLogger(__name__)


class CardProblem(ValueError):
    """Why (part of) a model card's front matter is ignored."""


def card_warning(path: Path, problem: str) -> None:
    """Report an ignored card or card field; with no logging set up, the one line goes to stderr."""
    log.warning("warning: %s: %s; ignored", path, problem)


def _kind(node: yaml.Node) -> str:
    """What a YAML node holds, in words for a warning (never its value: it may be huge)."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    kind = node.tag.rsplit(":", 1)[-1]
    return {"bool": "a boolean", "int": "a number", "float": "a number", "null": "null"}.get(kind, f"a {kind}")


def _name(node: yaml.Node) -> str:
    """A string scalar's value; anything else (number, boolean, list, mapping) is a :class:`CardProblem`."""
    if isinstance(node, yaml.ScalarNode) and node.tag == _STR_TAG:
        return str(node.value)
    raise CardProblem(f"is {_kind(node)}, not a string")


def _names(node: yaml.Node) -> str | list[str]:
    """A string or a flat list of strings, as the Hub allows for ``base_model`` and ``datasets``."""
    if not isinstance(node, yaml.SequenceNode):
        try:
            return _name(node)
        except CardProblem:
            raise CardProblem(f"is {_kind(node)}, not a name or a list of names") from None
    bad = next((item for item in node.value if not (isinstance(item, yaml.ScalarNode) and item.tag == _STR_TAG)), None)
    if bad is not None:
        raise CardProblem(f"is a list holding {_kind(bad)}, not only names")
    return [str(item.value) for item in node.value]


def _name_list(node: yaml.Node) -> list[str]:
    """``_names`` always as a list (a lone ``datasets: name`` is one dataset, not its characters)."""
    names = _names(node)
    return [names] if isinstance(names, str) else names


#: The front-matter fields ancestree uses, each with the reader that checks its type; nothing else is kept.
CARD_FIELDS: dict[str, Callable[[yaml.Node], Any]] = {
    "base_model": _names,
    "base_model_relation": _name,
    "ancestree_relation": _name,
    "datasets": _name_list,
}


def front_matter(path: Path) -> str | None:
    """The YAML between the leading ``---`` lines of ``path``, or None when it has none; at most
    :data:`MAX_FRONT_MATTER` bytes are read, so a huge README costs nothing."""
    with open(path, "rb") as fh:
        head = fh.read(MAX_FRONT_MATTER + 8).decode("utf-8", errors="replace")
    if not head.startswith("---"):
        return None
    end = head.find("\n---", 3)
    if end < 0:
        if len(head) > MAX_FRONT_MATTER:
            raise CardProblem(f"front matter is longer than {MAX_FRONT_MATTER // 1024} KiB")
        if _looks_like_fields(head[3:]):  # meant as front matter: the Hub would ignore it and a write bury it
            raise CardProblem("front matter has no closing '---' line")
        return None  # a horizontal rule opening the text, not front matter
    return head[3:end]


#: Keys of the Hub's model card metadata: a block holding one is front matter, while ``Disclaimer: use at
#: your own risk`` after a horizontal rule is prose that happens to parse as YAML.
CARD_KEYS = frozenset({"base_model", "base_model_relation", "license", "license_name", "license_link", "tags",
                       "library_name", "pipeline_tag", "language", "datasets", "metrics", "model-index",
                       "model_name", "inference", "widget", "thumbnail"})


def _looks_like_fields(text: str) -> bool:
    """Whether the lines up to the first blank one parse as a YAML mapping with a card key (``base_model:``)."""
    block = text.lstrip("\r\n").split("\n\n", 1)[0]
    try:
        fields = yaml.load(block, Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        return False
    return isinstance(fields, dict) and any(str(k) in CARD_KEYS for k in fields)


def compose(text: str) -> yaml.Node | None:
    """The YAML node graph of ``text`` without expanding aliases (an alias is the anchored node itself, so a
    "billion laughs" stays as small as its text), after checking its nesting on the event stream."""
    depth, too_deep = 0, CardProblem(f"front matter nests deeper than {MAX_DEPTH} levels")
    try:
        for event in yaml.parse(text, Loader=_SAFE_LOADER):
            if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise too_deep
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:  # libyaml >= 6.0.4 stops deep nesting itself, while scanning
        if "nesting depth" in str(exc):
            raise too_deep from None
        raise
    root = yaml.compose(text, Loader=_SAFE_LOADER)
    _check_tags(root)
    return root


def _check_tags(root: yaml.Node | None) -> None:
    """Refuse nodes tagged with anything but YAML's own types (``!!python/object/apply:os.system``): a safe
    loader refuses to build them, so reading their text as a value would take a card the Hub rejects."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias is the anchored node itself: visit it once
            continue
        seen.add(id(node))
        if not node.tag.startswith("tag:yaml.org,2002:") or node.tag.startswith("tag:yaml.org,2002:python/"):
            raise CardProblem(f"front matter is tagged to build objects ({node.tag.replace('tag:yaml.org,2002:', '!!')[:80]})")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)


def check_expansion(root: yaml.Node, budget: int = MAX_FRONT_MATTER) -> None:
    """Raise :class:`CardProblem` when the front matter's scalars, aliases expanded, exceed ``budget``
    characters (a card rewritten in full, as ``--write-cards`` does, would expand them). Counting walks the
    node graph with aliases as the shared nodes they are, and stops as soon as the budget is spent."""
    stack, left = [root], budget
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            left -= len(node.value) + 1
            if left < 0:
                raise CardProblem(f"front matter expands beyond {budget // 1024} KiB through YAML aliases")
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)


def card_fields(path: Path, root: yaml.Node) -> dict[str, Any]:
    """The :data:`CARD_FIELDS` of a composed front matter; a field of the wrong type is left out with a warning."""
    if not isinstance(root, yaml.MappingNode):
        raise CardProblem(f"front matter is {_kind(root)}, not a mapping")
    card: dict[str, Any] = {}
    budget = MAX_FRONT_MATTER  # characters of kept values: aliases must not multiply them
    for key, value in root.value:
        field = key.value if isinstance(key, yaml.ScalarNode) else None
        if field not in CARD_FIELDS:
            continue
        if isinstance(value, yaml.ScalarNode) and value.tag == _NULL_TAG:
            card.pop(field, None)  # ``base_model:`` with no value declares nothing (a later key wins, as in YAML)
            continue
        try:
            parsed = CARD_FIELDS[field](value)
        except CardProblem as exc:
            card_warning(path, f"{field} {exc}")
            continue
        budget -= sum(map(len, [parsed] if isinstance(parsed, str) else parsed))
        if budget < 0:
            raise CardProblem(f"{field} expands beyond {MAX_FRONT_MATTER // 1024} KiB through YAML aliases")
        card[field] = parsed
    return card


def yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's problem and the line of the card it is on, in one short line."""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [exc.__class__.__name__])[0]
    mark = getattr(exc, "problem_mark", None)
    # the YAML starts right after the opening "---", on the card's first line
    return f"{problem[:200]} on line {mark.line + 1}" if mark is not None else problem[:200]


def read_card(path: Path) -> dict[str, Any]:
    """The fields of :data:`CARD_FIELDS` from a model card ``README.md``'s YAML front matter.

    Empty when there is no card or no front matter. A broken or oversized card does not make the model
    unreadable: it is ignored with a warning, as is a field of the wrong type (``base_model: {a: 1}``).
    """
    if not path.is_file():
        return {}
    try:
        text = front_matter(path)
        root = compose(text) if text is not None else None
        return card_fields(path, root) if root is not None else {}
    except CardProblem as exc:
        card_warning(path, str(exc))
    except yaml.YAMLError as exc:
        card_warning(path, f"front matter is not valid YAML ({yaml_problem(exc)})")
    return {}


def folder_metadata(folder: Path, fmt: str) -> ModelMeta:
    """Metadata read from the side files of a model folder."""
    meta = ModelMeta(format=fmt)
    if (folder / "config.json").is_file():
        meta.config = read_json(folder / "config.json")
    if (folder / "adapter_config.json").is_file():
        meta.adapter_config = read_json(folder / "adapter_config.json")
    meta.card = read_card(folder / "README.md")
    return meta


def shard_files(folder: Path, index_file: Path) -> list[Path]:
    """The shard files a ``*.index.json`` names, each checked to exist."""
    index = read_json(index_file)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise BadInputError(index_file, "sharded index has no weight_map")
    shards = sorted({str(v) for v in weight_map.values()})
    # shards live in the model's folder (names only; the files may be links, as in the Hugging Face cache)
    outside = [s for s in shards if Path(s).is_absolute() or ".." in Path(s).parts]
    if outside:
        raise BadInputError(index_file, f"names shard {outside[0]!r} outside the model's folder")
    missing = [s for s in shards if not (folder / s).is_file()]
    if missing:
        raise BadInputError(index_file, f"names shard {missing[0]!r} which does not exist")
    return [folder / s for s in shards]


class CompositeModel(Model):
    """Several weight files (shards) that together form one model, with the folder's metadata."""

    def __init__(self, path: Path, model_id: str | None, parts: list[Model], meta: ModelMeta) -> None:
        super().__init__(path, model_id)
        self.format = meta.format
        self.parts = parts
        self.meta = meta
        for part in parts:
            meta.files.extend(part.meta.files)
            meta.extra.update(part.meta.extra)
        self._owner: dict[str, Model] = {}

    def _list(self) -> list[TensorInfo]:
        infos: list[TensorInfo] = []
        for part in self.parts:
            for name, info in part.tensors.items():
                if name in self._owner:
                    raise BadInputError(part.path, f"tensor {name!r} also appears in {self._owner[name].path.name}")
                self._owner[name] = part
                infos.append(info)
        return infos

    def _read(self, name: str) -> np.ndarray:
        return self._owner[name].read(name)

    @property
    def parameters(self) -> int:
        """The parts' own counts: a ``.bin`` counts a tied head once in a folder as it does alone."""
        self.tensors  # noqa: B018 - lists the parts, which refuses a tensor found in two shards
        return sum(part.parameters for part in self.parts)

    def close(self) -> None:
        for part in self.parts:
            part.close()


def open_folder(folder: Path, model_id: str | None, open_file: Callable[[Path], Model], weight_files: list[Path]) -> Model:
    """One model from the weight files of a Hugging Face style folder."""
    fmt = ""
    parts: list[Model] = []
    try:
        for f in weight_files:
            part = open_file(f)
            parts.append(part)
            fmt = fmt or part.format
    except BaseException:
        for part in parts:
            part.close()
        raise
    meta = folder_metadata(folder, fmt)
    return CompositeModel(folder, model_id, parts, meta)
