"""The one model abstraction every format reader implements.

A :class:`Model` lists its tensors (name, shape, stored dtype) without loading them and reads them one
at a time, memory-mapped where the format allows, so a model of any size streams through in the memory
of its largest tensor. Metadata (format, files, ``config.json``, model card, PEFT config) travels with it.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

#: Stored dtypes that hold learned values directly (as opposed to integer buffers such as position ids).
FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"})

#: Relations the Hugging Face Hub knows for a card's ``base_model_relation``.
HUB_RELATIONS = ("adapter", "merge", "quantized", "finetune")


def relation_fields(relation: str) -> dict[str, str]:
    """Card front matter for a relation: the Hub's ``base_model_relation`` when it has the value (it has none
    for ``pruned`` or ``duplicate``, and infers its own), and the exact one in ``ancestree_relation``."""
    fields = {"base_model_relation": relation} if relation in HUB_RELATIONS else {}
    return {**fields, "ancestree_relation": relation}


def card_relation(card: Mapping[str, Any]) -> str | None:
    """The relation a card's front matter declares: ours (``ancestree_relation``, exact for ``pruned`` and
    ``duplicate``) when it has one, else the Hub's ``base_model_relation``."""
    rel = card.get("ancestree_relation") or card.get("base_model_relation")
    return str(rel) if rel else None


@dataclass(frozen=True)
class TensorInfo:
    """What a model says about one tensor before it is read.

    ``dtype`` is the dtype as stored (``"int8"`` for a quantized weight, ``"q4_0"`` for a GGUF block type);
    :meth:`Model.read` always returns the dequantized floating values.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantized: bool = False

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))

    @property
    def learned(self) -> bool:
        """True for weights and biases; False for integer buffers (position ids, step counters)."""
        return self.quantized or self.dtype in FLOAT_DTYPES


@dataclass
class FileInfo:
    """One file a model is made of; the content hash is computed on first use only."""

    path: Path
    size: int
    mtime: float

    @classmethod
    def of(cls, path: Path) -> FileInfo:
        st = path.stat()
        return cls(path=path, size=st.st_size, mtime=st.st_mtime)

    @cached_property
    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        return digest.hexdigest()


@dataclass
class ModelMeta:
    """Metadata that travels with a model: where it came from and what it declares about itself."""

    format: str
    files: list[FileInfo] = field(default_factory=list)
    config: dict[str, Any] | None = None
    card: dict[str, Any] = field(default_factory=dict)
    adapter_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def declared_base_model(self) -> str | list[str] | None:
        """``base_model`` from the model card, else the PEFT ``base_model_name_or_path``."""
        base = self.card.get("base_model")
        if not base and self.adapter_config:
            base = self.adapter_config.get("base_model_name_or_path")
        if isinstance(base, list):
            return [str(b) for b in base] if len(base) > 1 else (str(base[0]) if base else None)
        return str(base) if base else None

    @property
    def declared_relation(self) -> str | None:
        return card_relation(self.card) or ("adapter" if self.adapter_config else None)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def mtime(self) -> float:
        return max((f.mtime for f in self.files), default=0.0)


def inspect_record(model_id: str, fmt: str, parameters: int, tensors: int, dtypes: dict[str, int],
                   declared_base_model: str | list[str] | None) -> dict[str, Any]:
    """The contract's ``inspect`` JSON record (shared by models and their fingerprints).

    ``declared_base_model`` is a string or null as the contract has it: a merge's card lists several bases,
    which are joined with ", " here (the list itself is in ``Model.meta.declared_base_model``)."""
    if isinstance(declared_base_model, list):
        declared_base_model = ", ".join(map(str, declared_base_model)) or None
    return {"id": model_id, "format": fmt, "parameters": parameters, "tensors": tensors, "dtypes": dict(dtypes),
            "declared_base_model": declared_base_model}


class Model(ABC):
    """A model as a lazily read collection of named tensors.

    Subclasses implement :meth:`_list` and :meth:`_read`; everything else is shared. Use as a context
    manager (or call :meth:`close`) to release memory maps and temporary files.
    """

    format: str = "unknown"

    def __init__(self, path: str | Path, model_id: str | None = None) -> None:
        self.path = Path(path)
        self.id = model_id if model_id is not None else str(path)
        self.meta = ModelMeta(format=self.format)

    # -- to implement -------------------------------------------------------------------------------
    @abstractmethod
    def _list(self) -> list[TensorInfo]:
        """List the tensors, reading headers only."""

    @abstractmethod
    def _read(self, name: str) -> np.ndarray:
        """Return the floating (dequantized) values of one tensor."""

    # -- shared -------------------------------------------------------------------------------------
    @cached_property
    def tensors(self) -> dict[str, TensorInfo]:
        """Every tensor by name, in the order the file stores them."""
        return {info.name: info for info in self._list()}

    def read(self, name: str) -> np.ndarray:
        """The values of tensor ``name`` (memory-mapped where possible; do not write to it)."""
        if name not in self.tensors:
            raise KeyError(f"{self.id}: no tensor named {name!r}")
        return self._read(name)

    def iter_tensors(self, learned_only: bool = True) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        """Yield ``(info, values)`` one tensor at a time, so memory stays at one tensor."""
        for info in self.tensors.values():
            if learned_only and not info.learned:
                continue
            yield info, self.read(info.name)

    @property
    def entries(self) -> int:
        """Entries of the learned tensors as they are read (a quantized tensor counts once, not with its
        scales; a PEFT adapter counts its dense updates)."""
        return sum(t.numel for t in self.tensors.values() if t.learned)

    @property
    def parameters(self) -> int:
        """Elements of the learned tensors as stored: :attr:`entries`, except where a format stores fewer
        (a PEFT adapter's low-rank factors)."""
        return self.entries

    @property
    def dtype_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            if t.learned:
                counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        return counts

    def summary(self) -> dict[str, Any]:
        """The ``inspect`` record of the contract."""
        return inspect_record(self.id, self.format, self.parameters, len(self.tensors), self.dtype_counts,
                              self.meta.declared_base_model)

    def close(self) -> None:
        """Release resources; the default holds none."""

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"
