"""Integer weights stored beside their scales: find the pairs, fold them into one tensor, dequantize.

Every reader shares this logic. A quantized weight is exposed once, under the weight's name, with its
stored dtype (``"int8"``) and ``quantized=True``; its scale and zero point are not listed separately, so
parameter counts and tensor alignment see the model as it was before quantization.

Two ways to find the pairs:

* by name (:func:`pair_by_name`), for flat tensor stores (safetensors, npz, PyTorch): ``<w>_scale`` /
  ``<w>.scale``, bitsandbytes' ``<module>.SCB`` beside ``<module>.weight`` (an absmax, so the divisor is 127;
  its ``<module>.weight_format`` flag hidden with it; also spelled ``<w>.SCB``), and onnxruntime's quantizer
  naming ``X_quantized`` + ``X_scale`` + ``X_zero_point`` (exposed as ``X``);
* by graph (the ONNX reader builds :class:`QuantSpec` from ``DequantizeLinear`` nodes itself).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from ancestree.io.base import TensorInfo

#: Stored dtypes that can hold quantized values.
INT_DTYPES = frozenset({"int8", "uint8", "int16", "uint16", "int32", "int4", "uint4"})
#: ... and, by name only, FP8 weights with a ``weight_scale`` sibling (FP8 checkpoints store ``w8 * scale``).
QUANT_DTYPES = INT_DTYPES | {"float8_e4m3fn", "float8_e5m2"}

#: Suffixes that mark the integer half of a pair in exporters' naming, stripped for the exposed name.
VALUE_SUFFIXES = ("_quantized", "_q")


@dataclass(frozen=True)
class QuantSpec:
    """How to rebuild one floating tensor: ``(values - zero_point) * scale / divisor``.

    ``axis`` is None for a per-tensor scale, else the axis a 1-D scale runs along (or, with
    ``block_size``, the axis split into blocks of that many elements, each with its own scale).
    """

    values: str
    scale: str
    zero_point: str | None = None
    axis: int | None = None
    divisor: float = 1.0
    block_size: int = 0
    companions: tuple[str, ...] = ()  # stored beside the pair, hidden with its scale (bitsandbytes' format flag)


def dequantize(
    values: np.ndarray,
    scale: np.ndarray,
    zero_point: np.ndarray | None = None,
    axis: int | None = None,
    divisor: float = 1.0,
    block_size: int = 0,
) -> np.ndarray:
    """Float32 values of a quantized tensor (per-tensor, per-axis or blocked scale and zero point)."""
    q = np.asarray(values).astype(np.float32)
    s = np.asarray(scale, dtype=np.float32)
    z = None if zero_point is None else np.asarray(zero_point).astype(np.float32)
    if axis is not None and s.size > 1:
        s = _along(s, q, axis, block_size)
        z = _along(z, q, axis, block_size) if z is not None and z.size > 1 else z
    out = q - z if z is not None else q
    out = out * s
    return out / np.float32(divisor) if divisor != 1.0 else out


def _along(param: np.ndarray, values: np.ndarray, axis: int, block_size: int) -> np.ndarray:
    """Reshape a per-axis (1-D) or blocked parameter so it broadcasts against ``values``."""
    axis = axis % values.ndim
    if block_size:
        param = np.repeat(param, block_size, axis=axis)
        return np.take(param, np.arange(values.shape[axis]), axis=axis)
    if param.ndim == values.ndim:
        return _tile_blocks(param, values.shape)
    shape = [1] * values.ndim
    shape[axis] = -1
    return param.reshape(shape)


def _block_size(scale_shape: tuple[int, ...], values_shape: tuple[int, ...]) -> int | None:
    """The side ``b`` of square blocks with one scale each (FP8 checkpoints: 128×128), the last block of an
    axis possibly short: every axis then has ``ceil(v / b)`` scales. None when the shapes are no such layout."""
    if len(scale_shape) != len(values_shape) or not all(0 < s <= v for s, v in zip(scale_shape, values_shape)):
        return None
    b = max(-(-v // s) for s, v in zip(scale_shape, values_shape))
    return b if b > 1 and all(s == -(-v // b) for s, v in zip(scale_shape, values_shape)) else None


def _tile_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A scale of the values' rank spread over its blocks (a broadcasting one is returned as it is)."""
    if all(p in (1, v) for p, v in zip(param.shape, shape)):
        return param
    b = _block_size(param.shape, shape)
    if b is None:
        raise ValueError(f"a scale of shape {param.shape} fits no block layout of values {shape}")
    for axis, v in enumerate(shape):
        param = np.take(np.repeat(param, b, axis=axis), np.arange(v), axis=axis)
    return param


def quantize(values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, dtype: np.dtype, axis: int | None) -> np.ndarray:
    """ONNX ``QuantizeLinear``: ``saturate(round_half_even(x / scale) + zero_point)`` in ``dtype``."""
    x = np.asarray(values, dtype=np.float32)
    s = np.asarray(scale, dtype=np.float32)
    z = np.zeros((), np.float32) if zero_point is None else np.asarray(zero_point).astype(np.float32)
    if axis is not None and s.size > 1:
        s = _along(s, x, axis, 0)
        z = _along(z, x, axis, 0) if z.size > 1 else z
    info = np.iinfo(dtype)
    return np.clip(np.rint(x / s) + z, info.min, info.max).astype(dtype)


def resolve_axis(values_shape: tuple[int, ...], scale_shape: tuple[int, ...], preferred: int | None = None) -> tuple[bool, int | None]:
    """Whether a scale of ``scale_shape`` fits values of ``values_shape``, and the axis it runs along.

    A scalar (or one-element) scale is per-tensor; a 1-D scale runs along the ``preferred`` axis when its
    length fits there, else along the first axis of that length (the output channel for PyTorch layouts);
    a scale of the values' rank must broadcast.
    """
    size = int(math.prod(scale_shape))
    if size == 1:
        return True, None
    if len(scale_shape) == len(values_shape) and len(values_shape) > 1:
        fits = all(s in (1, v) for s, v in zip(scale_shape, values_shape)) or _block_size(scale_shape, values_shape) is not None
        return fits, 0 if fits else None
    if len(scale_shape) != 1 or not values_shape:
        return False, None
    if preferred is not None and values_shape[preferred % len(values_shape)] == size:
        return True, preferred % len(values_shape)
    for axis, dim in enumerate(values_shape):
        if dim == size:
            return True, axis
    return False, None


def pair_by_name(infos: Mapping[str, TensorInfo]) -> dict[str, QuantSpec]:
    """Quantized tensors of a flat store found by the naming conventions above, by exposed name."""
    specs: dict[str, QuantSpec] = {}
    floats = {n for n, i in infos.items() if i.dtype not in QUANT_DTYPES and i.dtype != "int64"}
    for name, info in infos.items():
        found = _scale_for(name, infos, floats) if info.dtype in QUANT_DTYPES else None
        if found is None:
            continue
        exposed, scale, divisor, zero_point = found
        ok, axis = resolve_axis(info.shape, infos[scale].shape)
        flag = scale[: -len("SCB")] + "weight_format" if scale.endswith("SCB") else ""
        if zero_point is not None and infos[zero_point].numel != infos[scale].numel:
            zero_point = None  # a zero point that does not match its scale is left as a plain tensor
        if ok:
            if exposed != name and (exposed in infos or exposed in specs):
                exposed = name  # never shadow a tensor that exists under the stripped name
            specs[exposed] = QuantSpec(name, scale, zero_point, axis, divisor, companions=(flag,) if flag in infos else ())
    return specs


def _scale_for(name: str, infos: Mapping[str, TensorInfo], floats: set[str]) -> tuple[str, str, float, str | None] | None:
    """``(exposed name, scale name, divisor, zero point name)`` of an integer tensor, if it has a scale."""
    bases = [name[: -len(sfx)] for sfx in VALUE_SUFFIXES if name.endswith(sfx)] + [name]
    for base in bases:
        # "_scale_inv" (DeepSeek-V3, Qwen FP8): despite the name, also multiplied in
        for scale_sfx, zp_sfx in (("_scale", "_zero_point"), (".scale", ".zero_point"), ("_scale_inv", "_zero_point")):
            if base + scale_sfx in floats:
                zp = base + zp_sfx if base + zp_sfx in infos else None
                return base, base + scale_sfx, 1.0, zp
    # bitsandbytes LLM.int8(): row-wise absmax, values in [-127, 127]; Linear8bitLt saves it as its module's
    # "SCB" (``q_proj.weight`` beside ``q_proj.SCB``)
    module = name[: -len("weight")] if name.endswith(".weight") else None
    for scb in (name + ".SCB", *([module + "SCB"] if module else [])):
        if scb in floats:
            return name, scb, 127.0, None
    return None


def fold(infos: list[TensorInfo], specs: Mapping[str, QuantSpec]) -> list[TensorInfo]:
    """The tensor list with each quantized pair shown once (at its values' place) and scales hidden."""
    by_values = {spec.values: exposed for exposed, spec in specs.items()}
    hidden = {n for spec in specs.values() for n in (spec.scale, spec.zero_point, *spec.companions) if n}
    out: list[TensorInfo] = []
    for info in infos:
        if info.name in by_values:
            out.append(replace(info, name=by_values[info.name], quantized=True))
        elif info.name not in hidden:
            out.append(info)
    return out


def read_folded(name: str, specs: Mapping[str, QuantSpec], read_raw: Callable[[str], np.ndarray]) -> np.ndarray:
    """Read ``name`` through ``read_raw``, dequantizing when it is a folded pair."""
    spec = specs.get(name)
    if spec is None:
        return read_raw(name)
    zero_point = read_raw(spec.zero_point) if spec.zero_point else None
    return dequantize(read_raw(spec.values), read_raw(spec.scale), zero_point, spec.axis, spec.divisor, spec.block_size)
