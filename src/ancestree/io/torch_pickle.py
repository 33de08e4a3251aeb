"""PyTorch checkpoints (``.bin``, ``.pt``, ``.pth``, Lightning ``.ckpt``): the zip format and the legacy pickle format.

Loaded only with ``torch.load(weights_only=True)``: the restricted unpickler rebuilds tensors and plain
containers and refuses every other global, so a pickle that would run code is reported, never run.
Zip checkpoints are memory-mapped (``mmap=True``), so tensors stay on disk until read and are never
copied into a second full state dict; legacy checkpoints cannot be mapped and are read into memory once.

A checkpoint may wrap its state dict (``{"state_dict": ...}``, ``{"model": ...}``) and nest dicts; tensor
names are the dotted paths, and non-tensor entries (epochs, optimizer hyper-parameters) are ignored.
"""

from __future__ import annotations

import pickle
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ancestree.errors import BadInputError
from ancestree.io.base import FileInfo, Model, TensorInfo
from ancestree.io.quant import fold, pair_by_name, read_folded

#: Keys under which training scripts store the state dict, most specific first.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "ema", "params")

#: Top-level entries of training checkpoints that hold optimizer or run state, not the model.
TRAINING_STATE = frozenset({"optimizer", "optimizer_state_dict", "optim", "scheduler", "lr_scheduler", "scaler", "rng_state"})

ZIP_MAGIC = b"PK\x03\x04"

#: Lines of torch's weights-only error that explain nothing about the file.
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "Re-running")


def load_checkpoint(path: Path) -> Any:
    """``torch.load`` the file safely, memory-mapped when it is a zip checkpoint."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    is_zip = head == ZIP_MAGIC
    if not is_zip and not (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5):
        raise BadInputError(path, "not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # protocol and storage warnings say nothing about the file
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        raise BadInputError(path, f"refuses to unpickle: {unpickle_reason(exc)}") from None
    except Exception as exc:  # RuntimeError from the zip reader, struct.error/EOFError from a cut pickle, ...
        raise BadInputError(path, f"corrupt or truncated PyTorch checkpoint ({exc.__class__.__name__}: {_first_line(exc)})") from None


def unpickle_reason(exc: BaseException) -> str:
    """One line on why torch's weights-only unpickler refused the file (e.g. the global it blocked)."""
    text = str(exc)
    if m := re.search(r"GLOBAL ([\w.]+)", text):
        return f"it needs the Python object {m[1]} (only tensors and plain containers are allowed)"
    if m := re.search(r"Unsupported operand (\d+)", text):
        return f"pickle opcode {m[1]} is not allowed in a weights-only checkpoint"
    if m := re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text):
        return m[1].strip()[:200]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(_BOILERPLATE)]
    return (lines[0] if lines else exc.__class__.__name__)[:200]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].split(". ")[0][:200] if text else ""


def state_dict_of(obj: Any) -> Any:
    """The part of a checkpoint that holds the weights: descend through ``{"state_dict": ...}``-style
    wrappers that contain tensors; otherwise the whole object (its tensors are found wherever they are)."""
    while isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in WRAPPER_KEYS if has_tensors(obj.get(k))), None)
        if inner is None:
            return {k: v for k, v in obj.items() if k not in TRAINING_STATE}
        obj = inner
    return obj


def has_tensors(obj: Any) -> bool:
    if isinstance(obj, torch.Tensor):
        return True
    if isinstance(obj, Mapping):
        return any(has_tensors(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(has_tensors(v) for v in obj)
    return False


def flatten(obj: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """``(dotted name, tensor)`` for every tensor in nested dicts and lists; other values are skipped."""
    if isinstance(obj, torch.Tensor):
        yield prefix.rstrip(".") or "tensor", obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from flatten(value, f"{prefix}{key}.")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from flatten(value, f"{prefix}{i}.")


def dtype_name(t: torch.Tensor) -> str:
    """Our dtype name: ``"float32"``, ``"bfloat16"``; PyTorch quantized tensors by their integer type."""
    name = str(t.dtype).removeprefix("torch.")
    return {"qint8": "int8", "quint8": "uint8", "qint32": "int32", "quint4x2": "uint4"}.get(name, name)


def readable(name: str, t: torch.Tensor, path: Path) -> torch.Tensor:
    """``t`` when :func:`to_numpy` can read it; a meta tensor (no storage, e.g. left by accelerate's
    ``init_empty_weights``) or a sparse tensor whose indices fall outside its shape is refused by name."""
    if t.is_meta:
        raise BadInputError(path, f"tensor {name!r} holds no data (a meta tensor)")
    if t.layout != torch.strided:
        try:
            check_sparse(t)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise BadInputError(path, f"sparse tensor {name!r} is malformed ({_first_line(exc)})") from None
    return t


def check_sparse(t: torch.Tensor) -> None:
    """Raise unless a sparse tensor's indices fit its shape: ``torch.load`` does not check them, and
    densifying an unchecked one writes outside the dense buffer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta": nothing about the file
        if t.layout == torch.sparse_coo:
            torch.sparse_coo_tensor(t._indices(), t._values(), t.shape, check_invariants=True)
            return
        by_row = t.layout in (torch.sparse_csr, torch.sparse_bsr)
        compressed, plain = (t.crow_indices(), t.col_indices()) if by_row else (t.ccol_indices(), t.row_indices())
        torch.sparse_compressed_tensor(compressed, plain, t.values(), t.shape, layout=t.layout, check_invariants=True)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Floating values without a copy where numpy has the dtype (a view into the mapped file).

    A sparse tensor (a pruned layer saved with ``to_sparse()``) is read dense: it is the same weight."""
    if t.layout != torch.strided:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = t.to_dense()
    if t.is_quantized:
        return t.dequantize().numpy()
    if t.dtype in (torch.float32, torch.float64, torch.float16) or not t.is_floating_point():
        return t.detach().numpy() if t.dtype != torch.bool else t.numpy()
    return t.detach().to(torch.float32).numpy()  # bfloat16, float8: numpy has no native dtype


def tied_names(tensors: dict[str, torch.Tensor]) -> set[str]:
    """Names whose tensor is the same memory as an earlier name's (tied weights: one storage, two keys)."""
    seen: set[tuple] = set()
    tied: set[str] = set()
    for name, t in tensors.items():
        if t.layout != torch.strided or t.device.type == "meta":
            continue
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)
        if key in seen:
            tied.add(name)
        seen.add(key)
    return tied


class TorchModel(Model):
    """One PyTorch checkpoint file."""

    format = "pytorch"

    def __init__(self, path: str | Path, model_id: str | None = None) -> None:
        super().__init__(path, model_id)
        tensors = {n: readable(n, t, self.path) for n, t in flatten(state_dict_of(load_checkpoint(self.path)))}
        if not tensors:
            raise BadInputError(self.path, "PyTorch checkpoint holds no tensors")
        self._tensors: dict[str, torch.Tensor] | None = tensors
        self._tied = tied_names(tensors)
        infos = {n: TensorInfo(n, tuple(t.shape), dtype_name(t), quantized=t.is_quantized) for n, t in tensors.items()}
        self._infos = list(infos.values())
        self._quant = pair_by_name(infos)  # int8 + scale pairs (e.g. bitsandbytes .SCB) read as one tensor
        self.meta.files = [FileInfo.of(self.path)]

    def _list(self) -> list[TensorInfo]:
        return fold(self._infos, self._quant)

    @property
    def parameters(self) -> int:
        """As stored, a tied tensor (an output head sharing the embedding's memory) counted once, as
        ``transformers`` counts it; both names stay listed, so the file still aligns with a copy that
        saved the head under its own name."""
        tied = sum(self.tensors[n].numel for n in self._tied if n in self.tensors and self.tensors[n].learned)
        return super().parameters - tied

    def _read(self, name: str) -> np.ndarray:
        return read_folded(name, self._quant, self._read_stored)

    def _read_stored(self, name: str) -> np.ndarray:
        if self._tensors is None:
            raise ValueError(f"{self.id}: model is closed")
        return to_numpy(self._tensors[name])

    def close(self) -> None:
        self._tensors = None  # drops the last reference to the mapped storages
