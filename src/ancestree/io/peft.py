"""PEFT adapter folders: ``adapter_config.json`` + ``adapter_model.safetensors`` (or ``.bin``).

A LoRA adapter is exposed as the updates it makes to its base model: for every target module the
low-rank delta ``ΔW = scale · B @ A`` (``scale = lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA;
``rank_pattern``/``alpha_pattern`` override per module) under the base model's tensor name
(``base_model.model.<module>.lora_A.weight`` -> ``<module>.weight``). Modules saved whole
(``modules_to_save``) are exposed as full tensors. ``meta.extra["adapter"]`` is True so downstream code knows
the LoRA tensors are deltas to add to a base, not weights; ``meta.extra["lora_rank"]`` gives each delta's rank
and ``meta.extra["deltas"]`` names them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ancestree.errors import BadInputError
from ancestree.io.base import Model, TensorInfo
from ancestree.io.folder import folder_metadata

#: Weight files of an adapter, in order of preference.
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt", "adapter_model.pth")

PREFIX = "base_model.model."

#: ``<module>.lora_A.weight`` (Linear, Conv) and ``<module>.lora_embedding_A`` (Embedding); an adapter
#: name may sit before ``.weight`` in files written by other tools.
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<kind>embedding_)?(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?(?:\.weight)?$")


@dataclass(frozen=True)
class LoraPair:
    module: str
    a: str
    b: str
    embedding: bool
    rank: int
    scale: float


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_rank(value: Any) -> bool:
    """A positive whole number (``8.0`` from a JSON writer that only knows floats counts as 8)."""
    return _is_number(value) and value > 0 and float(value).is_integer()


def _check_pattern(config: dict[str, Any], key: str, valid: Callable[[Any], bool], wanted: str) -> str | None:
    """Why ``config[key]`` (``rank_pattern``/``alpha_pattern``) is unusable, or None when it is fine."""
    patterns = config.get(key)
    if patterns is None:
        return None
    if not isinstance(patterns, dict):
        return f"{key} is a {type(patterns).__name__}, not a mapping of module patterns to values"
    for module, value in patterns.items():
        if not valid(value):
            return f"{key}[{module!r}] is {_shown(value)}, not {wanted}"
        try:
            re.compile(module)
        except re.error as exc:
            return f"{key} key {module!r} is not a valid pattern ({exc})"
    return None


#: Scalar fields read from ``adapter_config.json``: (test, what a valid value is). An absent ``r`` or
#: ``lora_alpha`` means the stored rank; null is refused for them, as PEFT itself fails on it.
_CONFIG_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "r": (_is_rank, "a positive integer"),
    "lora_alpha": (_is_number, "a number"),
    "use_rslora": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "fan_in_fan_out": (lambda v: v is None or isinstance(v, bool), "true or false"),
    "base_model_name_or_path": (lambda v: v is None or isinstance(v, str), "a model name or path"),
    "peft_type": (lambda v: v is None or isinstance(v, str), "a PEFT type name"),
}


def check_config(config: dict[str, Any], path: Path) -> None:
    """Refuse, naming ``path`` and the field, a config value PEFT could not use (``"r": "four"``,
    ``"lora_alpha": null``, a ``rank_pattern`` that is a list); checked before any arithmetic on them."""
    for key, (valid, wanted) in _CONFIG_FIELDS.items():
        if key in config and not valid(config[key]):
            raise BadInputError(path, f"{key} is {_shown(config[key])}, not {wanted}")
    for key, valid, wanted in (("rank_pattern", _is_rank, "a positive integer"), ("alpha_pattern", _is_number, "a number")):
        if problem := _check_pattern(config, key, valid, wanted):
            raise BadInputError(path, problem)


def _shown(value: Any) -> str:
    """A config value for a one-line message, cut short (it came from the user's file)."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rule: a pattern key applies to a module whose name ends with it (as a regex) at a dot."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def open_adapter_weights(folder: Path, model_id: str) -> Model:
    """The adapter's weight file as a model of its own (the stored ``lora_A``/``lora_B`` tensors)."""
    from ancestree.io.loader import load_model  # the loader imports this module lazily: no cycle at import

    for name in ADAPTER_FILES:
        if (folder / name).is_file():
            return load_model(folder / name, f"{model_id}/{name}")
    raise BadInputError(folder, f"PEFT adapter folder has adapter_config.json but no weights ({' or '.join(ADAPTER_FILES[:2])})")


class PeftAdapterModel(Model):
    """A PEFT adapter folder, seen as the changes it makes to its base model's tensors."""

    format = "peft"

    def __init__(self, path: str | Path, model_id: str | None = None) -> None:
        super().__init__(path, model_id)
        self.meta = folder_metadata(self.path, self.format)
        config = self.meta.adapter_config or {}
        check_config(config, self.path / "adapter_config.json")
        self._stored = open_adapter_weights(self.path, self.id)
        try:
            self._pairs, self._full = self._match(config)
        except BadInputError:
            self._stored.close()
            raise
        self.meta.files = list(self._stored.meta.files)
        self.meta.extra.update(
            adapter=True,
            peft_type=str(config.get("peft_type", "LORA")),
            lora_rank={name: p.rank for name, p in self._pairs.items()},
            deltas=sorted(self._pairs),
        )

    def _match(self, config: dict[str, Any]) -> tuple[dict[str, LoraPair], dict[str, str]]:
        """LoRA pairs by exposed name, and every other stored tensor by exposed name."""
        halves: dict[tuple[str, bool], dict[str, str]] = {}
        full: dict[str, str] = {}
        for stored in self._stored.tensors:
            key = stored.removeprefix(PREFIX)
            m = _LORA_KEY.match(key)
            if m is None:
                if "lora_magnitude_vector" in key:
                    self.meta.extra["use_dora"] = True  # DoRA's magnitudes rescale W; kept as a plain tensor
                full[key] = stored
                continue
            halves.setdefault((m["module"], bool(m["kind"])), {})[m["ab"]] = stored
        pairs = {}
        for (module, embedding), ab in halves.items():
            if set(ab) != {"A", "B"}:
                missing = ({"A", "B"} - set(ab)).pop()
                raise BadInputError(self._stored.path, f"LoRA module {module!r} has no lora_{missing} tensor")
            name = f"{module}.weight"
            pairs[name] = self._pair(config, module, ab["A"], ab["B"], embedding)
        clash = set(pairs) & set(full)
        if clash:
            raise BadInputError(self._stored.path, f"tensor {sorted(clash)[0]!r} is both a LoRA target and saved whole")
        return pairs, full

    def _pair(self, config: dict[str, Any], module: str, a: str, b: str, embedding: bool) -> LoraPair:
        a_shape, b_shape = self._stored.tensors[a].shape, self._stored.tensors[b].shape
        rank = a_shape[0] if a_shape else 0
        if len(b_shape) < 2 or b_shape[1] != rank:
            raise BadInputError(self._stored.path, f"LoRA module {module!r}: A {a_shape} and B {b_shape} do not multiply")
        # values checked by check_config: numbers where present; absent means the stored rank
        declared = int(pattern_value(config.get("rank_pattern") or {}, module, config.get("r", rank)))
        if declared != rank:
            raise BadInputError(self.path / "adapter_config.json", f"module {module!r} has rank {rank} but the config says {declared}")
        alpha = float(pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", rank)))
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        return LoraPair(module, a, b, embedding, rank, scale)

    def _delta_shape(self, pair: LoraPair) -> tuple[int, ...]:
        a_shape, b_shape = self._stored.tensors[pair.a].shape, self._stored.tensors[pair.b].shape
        if pair.embedding:
            return (a_shape[1], b_shape[0])
        shape = (b_shape[0], *a_shape[1:])
        return shape[::-1] if self._fan_in_fan_out and len(shape) == 2 else shape

    @property
    def _fan_in_fan_out(self) -> bool:
        return bool((self.meta.adapter_config or {}).get("fan_in_fan_out"))

    # -- the Model interface ------------------------------------------------------------------------
    @property
    def parameters(self) -> int:
        """Elements of the stored, learned tensors (``lora_A``, ``lora_B``, modules saved whole): what the
        adapter trained, not the size of the dense updates it is read as."""
        return self._stored.parameters

    @property
    def dtype_counts(self) -> dict[str, int]:
        return self._stored.dtype_counts

    def _list(self) -> list[TensorInfo]:
        infos = []
        for name, pair in self._pairs.items():
            infos.append(TensorInfo(name, self._delta_shape(pair), self._stored.tensors[pair.a].dtype))
        for name, stored in self._full.items():
            info = self._stored.tensors[stored]
            infos.append(TensorInfo(name, info.shape, info.dtype, info.quantized))
        return infos

    def _read(self, name: str) -> np.ndarray:
        if name in self._full:
            return self._stored.read(self._full[name])
        return self.delta(name)

    def delta(self, name: str) -> np.ndarray:
        """``ΔW = scale · B @ A`` of one target module, in the base weight's layout."""
        pair = self._pairs[name]
        a = np.asarray(self._stored.read(pair.a), dtype=np.float32)
        b = np.asarray(self._stored.read(pair.b), dtype=np.float32)
        # Linear and Conv alike: B is (out, r[, 1, 1]) and A is (r, in[, kh, kw]).
        delta = (b.reshape(b.shape[0], pair.rank) @ a.reshape(pair.rank, -1)).reshape((b.shape[0], *a.shape[1:]))
        if pair.embedding or (self._fan_in_fan_out and delta.ndim == 2):
            delta = delta.T
        delta *= np.float32(pair.scale)  # in place: the update can be as large as the base's matrix
        return delta

    def close(self) -> None:
        self._stored.close()
