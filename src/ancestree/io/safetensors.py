"""safetensors: an 8-byte header length, a JSON header, then raw little-endian tensor bytes.

The header is parsed and validated here (rather than trusting it) so a truncated file or a header that
lies about offsets is reported as such; tensor data is memory-mapped and never copied unless it must be
converted (bfloat16, float8 -> float32).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from ancestree.errors import BadInputError
from ancestree.io.base import FileInfo, Model, TensorInfo
from ancestree.io.quant import fold, pair_by_name, read_folded

#: safetensors dtype code -> (our dtype name, numpy dtype as stored)
DTYPES: dict[str, tuple[str, np.dtype]] = {
    "BOOL": ("bool", np.dtype(np.bool_)),
    "U8": ("uint8", np.dtype("<u1")),
    "I8": ("int8", np.dtype("<i1")),
    "U16": ("uint16", np.dtype("<u2")),
    "I16": ("int16", np.dtype("<i2")),
    "U32": ("uint32", np.dtype("<u4")),
    "I32": ("int32", np.dtype("<i4")),
    "U64": ("uint64", np.dtype("<u8")),
    "I64": ("int64", np.dtype("<i8")),
    "F16": ("float16", np.dtype("<f2")),
    "BF16": ("bfloat16", np.dtype(ml_dtypes.bfloat16)),
    "F32": ("float32", np.dtype("<f4")),
    "F64": ("float64", np.dtype("<f8")),
    "F8_E4M3": ("float8_e4m3fn", np.dtype(ml_dtypes.float8_e4m3fn)),
    "F8_E5M2": ("float8_e5m2", np.dtype(ml_dtypes.float8_e5m2)),
}

#: Refuse headers larger than this (the reference implementation uses the same bound).
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class Entry:
    info: TensorInfo
    begin: int  # offset into the data section
    end: int


def parse_header(head: bytes, file_size: int, path: str | Path = "<bytes>") -> tuple[dict[str, Entry], dict[str, str], int]:
    """Validate a safetensors header.

    ``head`` holds at least the first ``8 + N`` bytes of the file (``N`` from the length prefix).
    Returns the entries by name, the ``__metadata__`` and the offset where the data section starts.
    Raises :class:`BadInputError` naming ``path`` for every way a header can be wrong.
    """
    if file_size < 8 or len(head) < 8:
        raise BadInputError(path, f"not a safetensors file: {file_size} bytes is too short for a header")
    (n,) = struct.unpack("<Q", head[:8])
    if n > MAX_HEADER_BYTES:
        raise BadInputError(path, f"safetensors header claims {n} bytes, more than the {MAX_HEADER_BYTES} allowed")
    if 8 + n > file_size or len(head) < 8 + n:
        raise BadInputError(path, f"truncated safetensors file: header needs {8 + n} bytes, file has {file_size}")
    try:
        raw = json.loads(head[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(path, f"safetensors header is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise BadInputError(path, "safetensors header is not a JSON object")
    data_size = file_size - 8 - n
    metadata = raw.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise BadInputError(path, "safetensors __metadata__ is not an object")
    entries = {name: _entry(name, spec, data_size, path) for name, spec in raw.items()}
    _check_no_overlap(entries, path)
    return entries, {str(k): str(v) for k, v in metadata.items()}, 8 + n


def _entry(name: str, spec: Any, data_size: int, path: str | Path) -> Entry:
    if not isinstance(spec, dict):
        raise BadInputError(path, f"safetensors entry {name!r} is not an object")
    code, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if code not in DTYPES:
        raise BadInputError(path, f"tensor {name!r} has unknown dtype {code!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadInputError(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
    ):
        raise BadInputError(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    begin, end = offsets
    dtype_name, np_dtype = DTYPES[code]
    expected = int(math.prod(shape)) * np_dtype.itemsize
    if not 0 <= begin <= end:
        raise BadInputError(path, f"tensor {name!r} has data_offsets {offsets} out of order")
    if end > data_size:
        raise BadInputError(path, f"tensor {name!r} ends at byte {end} but the data section has {data_size} bytes (truncated?)")
    if end - begin != expected:
        raise BadInputError(path, f"tensor {name!r}: shape {shape} of {code} needs {expected} bytes, offsets give {end - begin}")
    return Entry(TensorInfo(name, tuple(shape), dtype_name), begin, end)


def _check_no_overlap(entries: dict[str, Entry], path: str | Path) -> None:
    spans = sorted((e.begin, e.end, name) for name, e in entries.items() if e.end > e.begin)
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise BadInputError(path, f"tensors {a!r} and {b!r} overlap in the data section")


def to_float(values: np.ndarray) -> np.ndarray:
    """Floating values for maths: float16/32/64 pass through, bfloat16/float8 become float32."""
    if values.dtype in (np.float16, np.float32, np.float64):
        return values
    if values.dtype.kind == "V" or values.dtype in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        return values.astype(np.float32)
    return values


#: Tensors of at least this many bytes are read through a map of their own (see ``_read_stored``).
OWN_MAP_BYTES = 8 << 20


class SafetensorsModel(Model):
    """One ``.safetensors`` file, memory-mapped."""

    format = "safetensors"

    def __init__(self, path: str | Path, model_id: str | None = None) -> None:
        super().__init__(path, model_id)
        size = self.path.stat().st_size
        with open(self.path, "rb") as fh:
            prefix = fh.read(8)
            n = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
            head = prefix + fh.read(min(n, MAX_HEADER_BYTES + 1))
        self._entries, self.header_metadata, self._data_start = parse_header(head, size, self.path)
        self._map: np.ndarray | None = None
        self.meta.files = [FileInfo.of(self.path)]
        # int8 weights stored beside their scales are shown (and read) as one dequantized tensor
        self._quant = pair_by_name({name: e.info for name, e in self._entries.items()})

    def _list(self) -> list[TensorInfo]:
        return fold([e.info for e in sorted(self._entries.values(), key=lambda e: e.begin)], self._quant)

    def _read(self, name: str) -> np.ndarray:
        return read_folded(name, self._quant, self._read_stored)

    def _read_stored(self, name: str) -> np.ndarray:
        entry = self._entries[name]
        start, size = self._data_start + entry.begin, entry.end - entry.begin
        if size >= OWN_MAP_BYTES:
            # a large tensor gets a map of its own, unmapped once its values are dropped: pages read through
            # the whole-file map stay resident until the model is closed (a 2 GB file showed 2.2 GB of RSS)
            raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=start, shape=(size,)).view(np.ndarray)
        else:
            if self._map is None:
                # a plain ndarray view of the map (it keeps the map alive): slicing an np.memmap costs ~10 µs
                # a tensor in subclass bookkeeping, as much as fingerprinting a small tensor
                self._map = np.memmap(self.path, dtype=np.uint8, mode="r").view(np.ndarray)
            raw = self._map[start : start + size]
        code_dtype = next(d for n, d in DTYPES.values() if n == entry.info.dtype)
        return to_float(raw.view(code_dtype).reshape(entry.info.shape))

    def close(self) -> None:
        self._map = None
