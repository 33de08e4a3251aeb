"""Write zoo models to disk in the formats real hubs use, byte-for-byte reproducibly.

One function per format: float safetensors (any float dtype), int8 safetensors (``<name>`` I8 +
``<name>_scale``), GGUF Q4_0, PyTorch ``pytorch_model.bin``, ONNX export, PEFT adapter folders; plus the
``config.json`` and the ``README.md`` model card. Nothing written carries a date, a host or a random name.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from ancestree.zoo.architectures import build_module

if TYPE_CHECKING:
    import onnx

#: The file each format puts its weights in (the folder layout ``ancestree`` reads).
WEIGHT_FILES = {
    "safetensors": "model.safetensors",
    "int8": "model.safetensors",
    "gguf": "model.gguf",
    "pytorch": "pytorch_model.bin",
    "onnx": "model.onnx",
    "peft": "adapter_model.safetensors",
}


def write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_safetensors(folder: Path, state: dict[str, torch.Tensor], name: str = "model.safetensors") -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / name), metadata={"format": "pt"})


def dequantize_int8(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`ancestree.zoo.recipes.quantize_int8`: ``<name>`` × ``<name>_scale`` per row; others as is."""
    out = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(f"{name}_scale")
        if value.dtype == torch.int8 and scale is not None:
            rows = value.reshape(value.shape[0], -1).to(torch.float32) * scale[:, None]
            out[name] = rows.reshape(value.shape)
        else:
            out[name] = value
    return out


def write_gguf(folder: Path, state: dict[str, torch.Tensor], arch: str, name: str) -> None:
    """GGUF with Q4_0 blocks for every matrix whose rows are a multiple of 32 long, F32 for the rest."""
    import gguf

    writer = gguf.GGUFWriter(str(folder / WEIGHT_FILES["gguf"]), arch=arch)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    for key, value in state.items():
        array = value.detach().to(torch.float32).contiguous().numpy()
        if array.ndim >= 2 and array.shape[-1] % 32 == 0:
            packed = gguf.quants.quantize(array.reshape(-1, array.shape[-1]), gguf.GGMLQuantizationType.Q4_0)
            packed = packed.reshape(*array.shape[:-1], packed.shape[-1])
            writer.add_tensor(key, packed, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_gguf(path: Path) -> dict[str, np.ndarray]:
    """Dequantized tensors of a GGUF file, in the original (PyTorch) shape order."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = np.asarray(values, np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
    return out


def write_pytorch(folder: Path, state: dict[str, torch.Tensor]) -> None:
    # torch.save's zip records carry no timestamps; the archive's root name comes from the file name.
    buffer = io.BytesIO()
    torch.save({k: v.contiguous() for k, v in state.items()}, buffer)
    (folder / WEIGHT_FILES["pytorch"]).write_bytes(buffer.getvalue())


def write_onnx(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """An ONNX export of the model (TorchScript exporter: fast and deterministic; opset 17)."""
    module = build_module(config)
    module.load_state_dict(state)
    module.eval()
    dummy = torch.zeros(1, *config["input_shape"])
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, but it is the fast, stable one
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module, (dummy,), buffer,  # type: ignore[arg-type]  # torch's stubs say a path; this exporter takes a file
            dynamo=False, opset_version=17, input_names=["pixel_values"],
            output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
        )
    (folder / WEIGHT_FILES["onnx"]).write_bytes(buffer.getvalue())


def quantize_onnx_weights(model: "onnx.ModelProto") -> None:
    """Turn every float matrix initializer into int8 + per-row scale feeding a ``DequantizeLinear`` (QDQ).

    This is how onnxruntime's weight-only quantization stores a model: ``X_quantized`` (int8),
    ``X_scale``, ``X_zero_point`` and a ``DequantizeLinear`` node whose output keeps the name ``X``.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    kept, nodes = [], []
    for init in graph.initializer:
        value = numpy_helper.to_array(init)
        if value.ndim < 2 or value.dtype != np.float32:
            kept.append(init)
            continue
        rows = value.reshape(value.shape[0], -1)
        scale = (np.maximum(np.abs(rows).max(axis=1), 1e-12) / 127.0).astype(np.float32)
        q = np.clip(np.round(rows / scale[:, None]), -127, 127).astype(np.int8).reshape(value.shape)
        kept += [numpy_helper.from_array(q, f"{init.name}_quantized"), numpy_helper.from_array(scale, f"{init.name}_scale"),
                 numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{init.name}_zero_point")]
        nodes.append(helper.make_node("DequantizeLinear", [f"{init.name}_quantized", f"{init.name}_scale",
                                                           f"{init.name}_zero_point"], [init.name], axis=0,
                                      name=f"{init.name}_DequantizeLinear"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    old = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old)  # dequantize first: keeps the graph topologically sorted


def write_onnx_int8(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """The ONNX export of :func:`write_onnx` with its weight matrices stored as int8 (QDQ)."""
    import onnx

    write_onnx(folder, config, state)
    path = folder / WEIGHT_FILES["onnx"]
    model = onnx.load_from_string(path.read_bytes())
    quantize_onnx_weights(model)
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString(deterministic=True))


def write_adapter(folder: Path, adapter_config: dict[str, Any], adapter_state: dict[str, torch.Tensor]) -> None:
    write_json(folder / "adapter_config.json", adapter_config)
    write_safetensors(folder, adapter_state, WEIGHT_FILES["peft"])


def write_card(folder: Path, model_id: str, card: dict[str, Any], classes: list[str], about: str) -> None:
    """``README.md``: YAML front matter (``base_model``… when declared) and the training classes in text."""
    front = yaml.safe_dump(card, sort_keys=False, allow_unicode=True)
    body = f"# {model_id}\n\n{about}\n\nTraining classes: {', '.join(classes)}.\n"
    (folder / "README.md").write_text(f"---\n{front}---\n\n{body}", encoding="utf-8")


__all__ = [
    "WEIGHT_FILES",
    "dequantize_int8",
    "read_gguf",
    "write_adapter",
    "write_card",
    "write_gguf",
    "write_json",
    "write_onnx",
    "write_onnx_int8",
    "write_pytorch",
    "write_safetensors",
]
