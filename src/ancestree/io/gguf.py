"""GGUF files (llama.cpp): memory-mapped with the ``gguf`` package's reader.

GGUF lists a tensor's dimensions fastest-first (``ne[0]`` is the row length); shapes here are given in
PyTorch order (reversed), which is also the shape of the values :meth:`GGUFModel.read` returns. Block
quantized tensors (``q8_0``, ``q4_0``, ``q4_k``, ...) keep their GGML type name as dtype, are marked
``quantized`` and are dequantized on read with ``gguf.quants.dequantize``; plain float and integer
tensors use numpy's dtype names (``float16``, ``float32``) so they count as learned like in every other
format. ``general.*`` metadata goes into ``meta.extra``; a declared base model into ``meta.card``.

llama.cpp's converter reorders the rows of every query and key projection of the architectures whose
rotary embedding pairs neighbouring dimensions (Llama, Mistral, Granite, ...: ``LlamaModel.permute``,
within each head); those rows are put back in the Hugging Face order on read (:func:`unpermute`), else a
GGUF of a model compared with its safetensors release looked like another model in its attention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from ancestree.errors import BadInputError
from ancestree.io.base import FileInfo, Model, TensorInfo

Q = GGMLQuantizationType

#: GGML types stored element by element, with the numpy dtype name they are reported under.
PLAIN_TYPES: dict[GGMLQuantizationType, str] = {
    Q.F32: "float32",
    Q.F16: "float16",
    Q.BF16: "bfloat16",
    Q.F64: "float64",
    Q.I8: "int8",
    Q.I16: "int16",
    Q.I32: "int32",
    Q.I64: "int64",
}


#: ``general.architecture`` values whose query/key rows llama.cpp's ``convert_hf_to_gguf.py`` permutes.
PERMUTED_QK = frozenset({"llama", "granite", "granitemoe", "minicpm", "deci", "baichuan", "olmo", "arcee", "smollm3"})


def unpermute(values: np.ndarray, heads: int) -> np.ndarray:
    """Undo ``LlamaModel.permute`` of llama.cpp's converter: rows ``(head, half, i)`` were stored as
    ``(head, i, half)``. ``values`` in PyTorch layout (rows first); a row count that does not split into
    ``heads`` pairs is returned as it is."""
    rows = values.shape[0]
    if heads <= 0 or rows % (2 * heads):
        return values
    return values.reshape(heads, rows // heads // 2, 2, *values.shape[1:]).swapaxes(1, 2).reshape(values.shape)


#: Rows dequantized at a time: ``dequantize`` builds temporaries as large as its output, so a whole tensor
#: at once needed about 3× its float size; in slices of this many bytes of blocks, about 1× plus a slice.
DEQUANTIZE_SLICE_BYTES = 4 << 20


def _dequantize_rows(blocks: np.ndarray, qtype: Any) -> np.ndarray:
    """``dequantize`` of a tensor's blocks (rows of bytes, as the file holds them), a slice of rows at a time
    into one float32 array."""
    rows = blocks.reshape(-1, blocks.shape[-1])
    step = max(1, DEQUANTIZE_SLICE_BYTES // max(rows.shape[1], 1))
    if rows.shape[0] <= step:
        return dequantize(blocks, qtype)
    first = dequantize(rows[:step], qtype)
    out = np.empty((rows.shape[0], first.shape[1]), dtype=np.float32)
    out[:step] = first
    for start in range(step, rows.shape[0], step):
        out[start:start + step] = dequantize(rows[start:start + step], qtype)
    return out.reshape(*blocks.shape[:-1], first.shape[1])


def field_value(field: Any) -> Any:
    """The Python value of a GGUF metadata field (string, number or list)."""
    if hasattr(field, "contents"):
        return field.contents()
    parts = [field.parts[i] for i in field.data]  # gguf < 0.11: decode by hand
    values = [bytes(p).decode("utf-8", "replace") if p.dtype == np.uint8 else p.tolist()[0] for p in parts]
    return values[0] if len(values) == 1 else values


def declared_base(extra: dict[str, Any]) -> str | None:
    """``org/name`` of ``general.base_model.0`` (from its Hugging Face URL, else organization + name)."""
    url = str(extra.get("general.base_model.0.repo_url", ""))
    if "huggingface.co/" in url:
        return url.split("huggingface.co/", 1)[1].strip("/") or None
    org, name = extra.get("general.base_model.0.organization"), extra.get("general.base_model.0.name")
    if name:
        return f"{org}/{name}" if org else str(name)
    return None


class GGUFModel(Model):
    """One ``.gguf`` file."""

    format = "gguf"

    def __init__(self, path: str | Path, model_id: str | None = None) -> None:
        super().__init__(path, model_id)
        try:
            self._reader: GGUFReader | None = GGUFReader(self.path, "r")
            tensors = {t.name: t for t in self._reader.tensors}
        except Exception as exc:  # the reader raises ValueError, IndexError, struct errors... on a damaged file
            what = "not a GGUF file" if "magic" in str(exc) else "corrupt or truncated GGUF file"
            raise BadInputError(self.path, f"{what} ({exc.__class__.__name__}: {exc})") from None
        self._tensors = tensors
        self.meta.files = [FileInfo.of(self.path)]
        self.meta.extra.update(self._general_metadata())
        base = declared_base(self.meta.extra)
        if base:
            self.meta.card.setdefault("base_model", base)
        self._heads = self._permuted_heads()

    def _permuted_heads(self) -> dict[str, int | list[int]]:
        """Heads of the query and key projections whose rows the converter permuted (none for other
        architectures): one count, or one per layer (DeciLM stores arrays)."""
        assert self._reader is not None
        arch = str(self.meta.extra.get("general.architecture", ""))
        if arch not in PERMUTED_QK:
            return {}
        counts: dict[str, int | list[int]] = {}
        for key, part in ((f"{arch}.attention.head_count", "attn_q"), (f"{arch}.attention.head_count_kv", "attn_k")):
            field = self._reader.fields.get(key)
            try:
                value = field_value(field) if field is not None else 0
                counts[part] = [int(v) for v in value] if isinstance(value, list) else int(value)
            except (TypeError, ValueError, IndexError):
                counts[part] = 0
        counts["attn_k"] = counts["attn_k"] or counts["attn_q"]  # no grouped-query count: as many heads as queries
        return counts

    def _heads_of(self, name: str) -> int:
        """Heads to un-permute tensor ``name`` by (0: not a permuted query or key projection)."""
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "blk" or not parts[1].isdigit():
            return 0
        count = self._heads.get(parts[2], 0)
        if isinstance(count, list):
            layer = int(parts[1])
            return count[layer] if layer < len(count) else 0
        return count

    def _general_metadata(self) -> dict[str, Any]:
        assert self._reader is not None
        out: dict[str, Any] = {}
        for key, field in self._reader.fields.items():
            if key.startswith("general."):
                try:
                    out[key] = field_value(field)
                except (ValueError, IndexError, UnicodeDecodeError):
                    continue  # an unreadable metadata value does not make the weights unreadable
        return out

    def _list(self) -> list[TensorInfo]:
        infos = []
        for name, t in self._tensors.items():
            qtype = Q(t.tensor_type)
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            plain = PLAIN_TYPES.get(qtype)
            infos.append(TensorInfo(name, shape, plain or qtype.name.lower(), quantized=plain is None))
        return infos

    def _read(self, name: str) -> np.ndarray:
        if self._reader is None:
            raise ValueError(f"{self.id}: model is closed")
        values = self._values(name)
        heads = self._heads_of(name)
        return unpermute(values, heads) if heads else values

    def _values(self, name: str) -> np.ndarray:
        t = self._tensors[name]
        qtype = Q(t.tensor_type)
        if qtype in (Q.F32, Q.F16, Q.F64) or PLAIN_TYPES.get(qtype, "").startswith("int"):
            return np.asarray(t.data)  # a view into the file map
        try:
            with np.errstate(all="ignore"):  # damaged block scales decode to inf/NaN: reported as such, not warned
                return _dequantize_rows(t.data, qtype)
        except NotImplementedError:
            raise BadInputError(self.path, f"tensor {name!r}: GGML type {qtype.name} cannot be dequantized by this gguf version") from None

    def close(self) -> None:
        self._reader = None
        self._tensors = {}
