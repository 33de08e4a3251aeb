"""ONNX models: initializers and ``Constant`` nodes (also inside ``If``/``Loop``/``Scan`` bodies).

Weights hide in several places in real exports; all become tensors here, under their names as stored
(generic names such as ``val_123`` are kept; matching them across models is ``align``'s job):

* graph initializers, of the main graph and of every sub-graph;
* ``Constant`` nodes anywhere (the output name is the tensor's name);
* quantized weights: an integer constant dequantized by a ``DequantizeLinear`` (or fed with its scale to a
  ``QLinearConv``/``QLinearMatMul``), a float constant fake-quantized by ``QuantizeLinear`` ->
  ``DequantizeLinear``, or onnxruntime's ``X_quantized``/``X_scale``/``X_zero_point`` naming. Each is exposed
  once (dtype of the integers, ``quantized=True``) with the dequantized values; scales and zero points of
  quantization nodes are not listed.

Tensors with external data are read from their side file (inside the model's folder only) when needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

from ancestree.errors import BadInputError
from ancestree.io.base import FileInfo, Model, TensorInfo
from ancestree.io.quant import QUANT_DTYPES, VALUE_SUFFIXES, QuantSpec, dequantize, fold, pair_by_name, quantize, resolve_axis
from ancestree.io.safetensors import to_float

#: op -> (values, scale, zero point, default axis) input positions of the quantized operands it dequantizes.
QUANT_OPERANDS: dict[str, tuple[tuple[int, int, int, int | None], ...]] = {
    "DequantizeLinear": ((0, 1, 2, 1),),
    "QLinearConv": ((3, 4, 5, 0), (0, 1, 2, None)),
    "QLinearMatMul": ((3, 4, 5, -1), (0, 1, 2, 0)),
}

#: Inputs of quantization ops that are scales or zero points (hidden from the tensor list).
_ZERO_POINT_INPUTS = {"MatMulInteger": (2, 3), "ConvInteger": (2, 3)}


#: ONNX element types stored as plain little-endian numbers, which external data can be mapped as.
MAPPABLE_TYPES: dict[int, np.dtype] = {TensorProto.FLOAT: np.dtype("<f4"), TensorProto.FLOAT16: np.dtype("<f2"), TensorProto.DOUBLE: np.dtype("<f8"),
                  TensorProto.INT8: np.dtype("i1"), TensorProto.UINT8: np.dtype("u1"), TensorProto.INT16: np.dtype("<i2"),
                  TensorProto.UINT16: np.dtype("<u2"), TensorProto.INT32: np.dtype("<i4"), TensorProto.INT64: np.dtype("<i8")}


@dataclass(frozen=True)
class FakeQuant:
    """A float weight that the graph quantizes and dequantizes again (``QuantizeLinear -> DequantizeLinear``)."""

    values: str
    q_scale: str
    q_zero_point: str | None
    q_dtype: np.dtype
    q_axis: int | None
    dq: QuantSpec  # the DequantizeLinear step; its ``values`` is unused


def load_proto(path: Path) -> ModelProto:
    """Parse the protobuf without pulling external data in, and check it looks like a model."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError as exc:
        raise BadInputError(path, f"not an ONNX model: protobuf does not parse ({exc}; truncated or another format?)") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise BadInputError(path, f"not an ONNX model ({exc.__class__.__name__}: {exc})") from None
    if not proto.HasField("graph") or proto.ir_version <= 0:
        raise BadInputError(path, "not an ONNX model: no graph or IR version (truncated or another protobuf?)")
    return proto


def walk_graphs(graph: GraphProto) -> Iterator[GraphProto]:
    """The graph and every sub-graph of its nodes' attributes (``If`` branches, ``Loop``/``Scan`` bodies)."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from walk_graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from walk_graphs(sub)


def constant_tensor(node: NodeProto) -> TensorProto | None:
    """The tensor a ``Constant`` node produces, named after its output (None for strings and sparse values)."""
    for attr in node.attribute:
        if attr.name == "value":
            tensor = TensorProto()
            tensor.CopyFrom(attr.t)
        elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = helper.get_attribute_value(attr)
            dtype = np.float32 if "float" in attr.name else np.int64
            tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        else:
            continue
        tensor.name = node.output[0]
        return tensor
    return None


def collect(proto: ModelProto) -> tuple[dict[str, TensorProto], list[NodeProto], set[str]]:
    """Every constant tensor by name (initializers, then ``Constant`` outputs), every node (recursively),
    and the names that come from ``Constant`` nodes."""
    constants: dict[str, TensorProto] = {}
    from_nodes: set[str] = set()
    nodes: list[NodeProto] = []
    graphs = list(walk_graphs(proto.graph))
    for graph in graphs:
        for init in graph.initializer:
            constants.setdefault(init.name, init)
    for graph in graphs:
        for node in graph.node:
            nodes.append(node)
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                tensor = constant_tensor(node)
                if tensor is not None and tensor.name not in constants:
                    constants[tensor.name] = tensor
                    from_nodes.add(tensor.name)
    for function in proto.functions:
        nodes.extend(function.node)
    return constants, nodes, from_nodes


#: Types stored two or more values to a byte (their byte count is not numel × itemsize).
PACKED_TYPES = frozenset(getattr(TensorProto, t) for t in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
                         if hasattr(TensorProto, t))


def is_literal(info: TensorInfo) -> bool:
    """A ``Constant`` node that is graph arithmetic, not a weight: a scalar (GELU's 0.5, an attention
    scale) or integers (shapes, axes, indices). Exporters emit dozens; listing them would make the same
    weights count differently in ONNX and in safetensors."""
    return info.numel <= 1 or info.dtype in ("int64", "int32", "bool")


#: onnxruntime contrib ops that hold block-packed low-bit weights this reader does not unpack.
PACKED_OPS = frozenset({"MatMulNBits", "GatherBlockQuantized", "MatMulBnb4"})

#: Elementwise ops: a constant that only these consume, broadcast over batch and heads (two leading axes of
#: one), is graph arithmetic folded by the exporter (rotary cos/sin tables, a causal mask), not a weight.
ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Where"})


def is_broadcast_constant(info: TensorInfo, consumers: set[str]) -> bool:
    """``(1, 1, T, D)`` tables that ``torch.onnx.export(dynamo=True)`` folds into initializers: they made an
    export another architecture than its own safetensors, so `tree` left the two unlinked."""
    shape = info.shape
    return len(shape) >= 4 and shape[0] == shape[1] == 1 and bool(consumers) and consumers <= ELEMENTWISE


def tensor_info(tensor: TensorProto) -> TensorInfo | None:
    """Name, shape and stored dtype from the proto alone (None for strings and undefined types)."""
    if tensor.data_type in (TensorProto.UNDEFINED, TensorProto.STRING):
        return None
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except (KeyError, ValueError, TypeError):
        return None
    return TensorInfo(tensor.name, tuple(int(d) for d in tensor.dims), dtype.name)


def _attr(node: NodeProto, name: str, default: int | None) -> int | None:
    for attr in node.attribute:
        if attr.name == name:
            return int(helper.get_attribute_value(attr))
    return default


def _input(node: NodeProto, i: int) -> str | None:
    return node.input[i] if i < len(node.input) and node.input[i] else None


class OnnxModel(Model):
    """One ``.onnx`` file."""

    format = "onnx"

    def __init__(self, path: str | Path, model_id: str | None = None) -> None:
        super().__init__(path, model_id)
        proto = load_proto(self.path)
        self._proto: ModelProto | None = proto
        self._constants, nodes, from_nodes = collect(proto)
        stored = {n: info for n, t in self._constants.items() if (info := tensor_info(t)) is not None}
        self._stored = stored
        self._specs: dict[str, QuantSpec] = {}
        self._fake: dict[str, FakeQuant] = {}
        hidden = self._find_quantized(nodes)
        self._find_fake_quantized(nodes, hidden)
        taken = self._used() | set(self._fake)
        self._specs.update(pair_by_name({n: i for n, i in stored.items() if n not in taken}))
        taken = self._used() | set(self._fake)
        literals = {n for n in from_nodes if n in stored and n not in taken and is_literal(stored[n])}
        consumers: dict[str, set[str]] = {}
        for node in nodes:
            for name in node.input:
                consumers.setdefault(name, set()).add(node.op_type)
        literals |= {n for n, info in stored.items() if n not in taken and is_broadcast_constant(info, consumers.get(n, set()))}
        self._hidden = hidden | literals  # scales and zero points of quantization ops, and graph literals
        self.meta.files = [FileInfo.of(self.path)]
        self.meta.extra["onnx_producer"] = f"{proto.producer_name} {proto.producer_version}".strip()
        self.meta.extra["onnx_opset"] = {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import}
        packed = sorted({node.op_type for node in nodes} & PACKED_OPS)
        if packed:  # their packed integers and block scales are not read as weights (fingerprint refuses the model)
            self.meta.extra["onnx_packed_ops"] = packed

    # -- finding quantized weights ------------------------------------------------------------------
    def _find_quantized(self, nodes: list[NodeProto]) -> set[str]:
        """Fold integer constants with constant scales; return every scale/zero point a quantization op uses."""
        hidden: set[str] = set()
        for node in nodes:
            for values, scale, zero_point, axis in QUANT_OPERANDS.get(node.op_type, ()):
                v, s, z = _input(node, values), _input(node, scale), _input(node, zero_point)
                hidden.update(n for n in (s, z) if n in self._stored)
                if v in self._stored and s in self._stored and (z is None or z in self._stored):
                    self._add_spec(node, v, s, z, axis)
            if node.op_type == "QuantizeLinear":
                hidden.update(n for n in node.input[1:] if n in self._stored)
            elif node.op_type.startswith("QLinear"):
                data = {0, 3, 8} if len(node.input) >= 8 else {0}
                hidden.update(n for i, n in enumerate(node.input) if i not in data and n in self._stored)
            for i in _ZERO_POINT_INPUTS.get(node.op_type, ()):
                if (z := _input(node, i)) in self._stored:
                    hidden.add(z)
        return hidden

    def _add_spec(self, node: NodeProto, values: str, scale: str, zero_point: str | None, axis: int | None) -> None:
        info = self._stored[values]
        if info.dtype not in QUANT_DTYPES or values in self._used():
            return
        block = _attr(node, "block_size", 0) or 0
        if node.op_type == "DequantizeLinear":
            axis = _attr(node, "axis", 1)
        ok, axis = (True, axis) if block else resolve_axis(info.shape, self._stored[scale].shape, axis)
        if ok:
            self._specs[self._exposed_name(values)] = QuantSpec(values, scale, zero_point, axis, 1.0, block)

    def _find_fake_quantized(self, nodes: list[NodeProto], hidden: set[str]) -> None:
        """Float constants that go through ``QuantizeLinear`` then ``DequantizeLinear``."""
        consumers: dict[str, list[NodeProto]] = {}
        for node in nodes:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        for node in nodes:
            if node.op_type != "QuantizeLinear" or _input(node, 0) not in self._stored:
                continue
            w, s, z = _input(node, 0), _input(node, 1), _input(node, 2)
            assert w is not None  # a stored name
            dq = next((c for c in consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"), None)
            if dq is None or s not in self._stored or w in self._fake or self._stored[w].dtype not in ("float32", "float16", "float64", "bfloat16"):
                continue
            assert s is not None  # a stored name
            ds, dz = _input(dq, 1), _input(dq, 2)
            if ds not in self._stored or (dz is not None and dz not in self._stored):
                continue
            q_dtype = np.dtype(self._stored[z].dtype) if z in self._stored else self._output_dtype(node)
            q_axis = resolve_axis(self._stored[w].shape, self._stored[s].shape, _attr(node, "axis", 1))[1]
            dq_axis = resolve_axis(self._stored[w].shape, self._stored[ds].shape, _attr(dq, "axis", 1))[1]
            self._fake[w] = FakeQuant(w, s, z, q_dtype, q_axis, QuantSpec(w, ds, dz, dq_axis))
            hidden.update(n for n in (s, z, ds, dz) if n)

    @staticmethod
    def _output_dtype(node: NodeProto) -> np.dtype:
        code = _attr(node, "output_dtype", 0)
        return np.dtype(helper.tensor_dtype_to_np_dtype(code)) if code else np.dtype(np.uint8)

    def _used(self) -> set[str]:
        return {spec.values for spec in self._specs.values()}

    def _exposed_name(self, values: str) -> str:
        """onnxruntime's ``W_quantized`` is shown as ``W`` unless that name is taken."""
        for suffix in VALUE_SUFFIXES:
            base = values.removesuffix(suffix)
            if base != values and base not in self._stored and base not in self._specs:
                return base
        return values

    # -- the Model interface ------------------------------------------------------------------------
    def _list(self) -> list[TensorInfo]:
        for tensor in self._constants.values():  # side files checked when listed: inspect refuses what tree cannot read
            if tensor.data_location == TensorProto.EXTERNAL:
                self._external_span(tensor)
            elif tensor.raw_data and tensor.name in self._stored and tensor.data_type not in PACKED_TYPES:
                self._check_raw_size(tensor, self._stored[tensor.name])
        used = self._used()
        infos = [info for name, info in self._stored.items() if name not in self._hidden or name in used]
        folded = fold(infos, self._specs)
        return [TensorInfo(i.name, i.shape, self._fake[i.name].q_dtype.name, True) if i.name in self._fake else i for i in folded]

    def _read(self, name: str) -> np.ndarray:
        if name in self._fake:
            return self._read_fake(self._fake[name])
        spec = self._specs.get(name)
        if spec is None:
            return to_float(self._array(name))
        zero_point = self._array(spec.zero_point) if spec.zero_point else None
        return dequantize(self._array(spec.values), self._array(spec.scale), zero_point, spec.axis, 1.0, spec.block_size)

    def _read_fake(self, fake: FakeQuant) -> np.ndarray:
        zero_point = self._array(fake.q_zero_point) if fake.q_zero_point else None
        q = quantize(self._array(fake.values), self._array(fake.q_scale), zero_point, fake.q_dtype, fake.q_axis)
        dq = fake.dq
        return dequantize(q, self._array(dq.scale), self._array(dq.zero_point) if dq.zero_point else None, dq.axis)

    def _array(self, name: str) -> np.ndarray:
        tensor = self._constants[name]
        if tensor.data_location == TensorProto.EXTERNAL:
            mapped = self._mapped_external(tensor)
            if mapped is not None:
                return mapped
            tensor = self._with_external_data(tensor)
        try:
            return numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as exc:
            raise BadInputError(self.path, f"tensor {name!r} cannot be decoded ({exc})") from None

    def _external_span(self, tensor: TensorProto) -> tuple[Path, int, int]:
        """``(side file, offset, length)`` of a tensor stored outside the model file, each checked: a location
        inside the model's folder, a file that exists and holds those bytes."""
        info = {e.key: e.value for e in tensor.external_data}
        location = Path(info.get("location", ""))
        if not location.parts or location.is_absolute() or ".." in location.parts:
            raise BadInputError(self.path, f"tensor {tensor.name!r} has unsafe external data location {str(location)!r}")
        side = self.path.parent / location
        offset, length = int(info.get("offset", 0)), info.get("length")
        if not side.is_file():
            raise BadInputError(self.path, f"external data file {str(location)!r} of tensor {tensor.name!r} is missing")
        size = side.stat().st_size
        length = int(length) if length is not None else size - offset
        if offset < 0 or offset + length > size:
            raise BadInputError(side, f"tensor {tensor.name!r} needs bytes {offset}..{offset + length}, file has {size}")
        return side, offset, length

    def _check_raw_size(self, tensor: TensorProto, info: TensorInfo) -> None:
        """Inline bytes must be what the shape and type need (a cut or doctored file reads otherwise)."""
        if any(d < 0 for d in info.shape):
            raise BadInputError(self.path, f"tensor {tensor.name!r} has a negative dimension {list(info.shape)}")
        need = info.numel * np.dtype(info.dtype).itemsize
        if len(tensor.raw_data) != need:
            raise BadInputError(self.path, f"tensor {tensor.name!r} holds {len(tensor.raw_data)} bytes, its shape "
                                           f"{list(info.shape)} of {info.dtype} needs {need}")

    def _mapped_external(self, tensor: TensorProto) -> np.ndarray | None:
        """A plain numeric tensor's bytes in its side file, memory-mapped: reading them into the proto and
        decoding that made two copies (about 3× the tensor in memory). None for other types or sizes, which
        :meth:`_with_external_data` reads (and :func:`numpy_helper.to_array` checks)."""
        dtype = MAPPABLE_TYPES.get(tensor.data_type)
        side, offset, length = self._external_span(tensor)
        shape = tuple(int(d) for d in tensor.dims)
        if dtype is None or any(d < 0 for d in shape) or length != int(np.prod(shape)) * dtype.itemsize or length == 0:
            return None
        return np.memmap(side, dtype=dtype, mode="r", offset=offset, shape=shape).view(np.ndarray)

    def _with_external_data(self, tensor: TensorProto) -> TensorProto:
        """A copy of ``tensor`` with its bytes read from the side file (kept out of the loaded proto)."""
        side, offset, length = self._external_span(tensor)
        copy = TensorProto()
        copy.CopyFrom(tensor)
        del copy.external_data[:]
        copy.data_location = TensorProto.DEFAULT
        with open(side, "rb") as fh:
            fh.seek(offset)
            copy.raw_data = fh.read(length)
        return copy

    def close(self) -> None:
        self._proto = None

