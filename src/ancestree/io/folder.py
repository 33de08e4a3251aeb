"""Hugging Face model folders: ``config.json``, a model card, and one or several weight files.

Sharded checkpoints (``*.index.json`` with a ``weight_map``) and plain multi-file folders are presented
as one :class:`Model`; every tensor is still read from its own shard, one at a time.
"""

from __future__ import annotations

import json
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


def read_card(path: Path) -> dict[str, Any]:
    """The YAML front matter of a model card ``README.md`` (empty when there is none or it is broken)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    try:
        data = yaml.load(text[3:end], Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


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
