"""The format readers: real files written here, read back through ``load_model``, values compared."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from ancestree import BadInputError, load_model
from ancestree.io.quant import dequantize, pair_by_name, resolve_axis
from conftest import small_tensors, write_hf_folder

RNG_SEED = 1234


def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


# -- shared dequantization ------------------------------------------------------------------------------
def test_dequantize_per_tensor_per_axis_and_blocked() -> None:
    q = np.array([[1, -2, 3, 4], [5, 6, -7, 8]], dtype=np.int8)
    np.testing.assert_allclose(dequantize(q, np.float32(0.5)), q * 0.5)
    scale = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    zero = np.array([1, 0, 0, -1], np.int8)
    np.testing.assert_allclose(dequantize(q, scale, zero, axis=1), (q - zero[None, :]) * scale[None, :], rtol=1e-6)
    rows = np.array([2.0, 3.0], np.float32)
    np.testing.assert_allclose(dequantize(q, rows, axis=0), q * rows[:, None])
    blocks = np.array([[1.0, 10.0], [2.0, 20.0]], np.float32)  # blocks of 2 along axis 1
    expected = q * np.array([[1, 1, 10, 10], [2, 2, 20, 20]], np.float32)
    np.testing.assert_allclose(dequantize(q, blocks, axis=1, block_size=2), expected)
    np.testing.assert_allclose(dequantize(q, rows, axis=0, divisor=127.0), q * rows[:, None] / 127)


def test_resolve_axis_prefers_the_given_axis_and_rejects_misfits() -> None:
    assert resolve_axis((4, 3), (1,)) == (True, None)
    assert resolve_axis((4, 3), (3,)) == (True, 1)
    assert resolve_axis((3, 3), (3,), preferred=1) == (True, 1)
    assert resolve_axis((3, 3), (3,)) == (True, 0)  # PyTorch layouts: output channel first
    assert resolve_axis((4, 3), (5,))[0] is False


def _int8_with_scale(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w = rng().standard_normal(shape).astype(np.float32)
    scale = np.abs(w).max(axis=1) / 127
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return w, q, scale.astype(np.float32)


@pytest.mark.parametrize(("scale_name", "divisor"), [("layer.weight_scale", 1.0), ("layer.weight.scale", 1.0), ("layer.weight.SCB", 127.0),
                                                    ("layer.SCB", 127.0)])
def test_safetensors_int8_with_sibling_scale_is_one_tensor(tmp_path: Path, scale_name: str, divisor: float) -> None:
    """``layer.SCB`` (and a ``layer.weight_format`` flag) is how bitsandbytes' Linear8bitLt saves an int8 layer:
    it was read as a learned vector beside an int8 matrix counted as nothing."""
    w, q, scale = _int8_with_scale((6, 5))
    stored_scale = scale * divisor  # bitsandbytes stores the row absmax, i.e. 127 x scale
    extra = {"layer.weight_format": np.array(0, np.uint8)} if scale_name == "layer.SCB" else {}
    save_file({"layer.weight": q, scale_name: stored_scale, "layer.bias": w[0], **extra}, str(tmp_path / "q.safetensors"))
    with load_model(tmp_path / "q.safetensors") as model:
        assert set(model.tensors) == {"layer.weight", "layer.bias"}  # the scale is not listed
        info = model.tensors["layer.weight"]
        assert (info.dtype, info.quantized, info.shape) == ("int8", True, (6, 5))
        assert model.parameters == 30 + 5
        values = model.read("layer.weight")
        np.testing.assert_allclose(values, q * scale[:, None], rtol=1e-6)
        assert np.abs(values - w).max() <= scale.max() / 2 + 1e-6  # within half a quantization step


def test_safetensors_fp8_weight_with_scale(tmp_path: Path) -> None:
    import ml_dtypes

    w = rng().standard_normal((8, 4)).astype(np.float32)
    scale = np.float32(np.abs(w).max() / 448)  # the e4m3 range
    w8 = (w / scale).astype(ml_dtypes.float8_e4m3fn)
    save_file({"fc.weight": w8, "fc.weight_scale": np.array([scale], np.float32)}, str(tmp_path / "fp8.safetensors"))
    with load_model(tmp_path / "fp8.safetensors") as model:
        assert list(model.tensors) == ["fc.weight"] and model.tensors["fc.weight"].dtype == "float8_e4m3fn"
        np.testing.assert_allclose(model.read("fc.weight"), w8.astype(np.float32) * scale, rtol=1e-6)
        assert np.abs(model.read("fc.weight") - w).max() < 0.07 * np.abs(w).max()  # e4m3 keeps 3 mantissa bits


def test_onnxruntime_naming_pairs_with_zero_point() -> None:
    from ancestree.io.base import TensorInfo

    infos = {
        "W_quantized": TensorInfo("W_quantized", (4, 3), "uint8"),
        "W_scale": TensorInfo("W_scale", (), "float32"),
        "W_zero_point": TensorInfo("W_zero_point", (), "uint8"),
        "position_ids": TensorInfo("position_ids", (7,), "int64"),
    }
    specs = pair_by_name(infos)
    assert list(specs) == ["W"]
    assert (specs["W"].values, specs["W"].scale, specs["W"].zero_point) == ("W_quantized", "W_scale", "W_zero_point")


# -- PyTorch checkpoints ------------------------------------------------------------------------------------
def test_torch_zip_checkpoint_unwraps_flattens_and_maps(tmp_path: Path) -> None:
    a = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    b = torch.randn(5).to(torch.bfloat16)
    ckpt = {"epoch": 3, "optimizer": {"lr": 0.1}, "state_dict": {"enc.w": a, "dec": {"b": b, "steps": torch.tensor(7)}, "note": "x"}}
    torch.save(ckpt, tmp_path / "model.pt")
    with load_model(tmp_path / "model.pt") as model:
        assert model.format == "pytorch"
        assert list(model.tensors) == ["enc.w", "dec.b", "dec.steps"]
        assert model.tensors["dec.b"].dtype == "bfloat16" and model.tensors["dec.steps"].dtype == "int64"
        assert model.parameters == 12 + 5
        values = model.read("enc.w")
        np.testing.assert_array_equal(values, a.numpy())
        assert not values.flags.owndata  # a view into the memory-mapped file, not a second copy
        np.testing.assert_array_equal(model.read("dec.b"), b.float().numpy())
        assert model.read("dec.b").dtype == np.float32


def test_block_scales_only_for_square_block_layouts() -> None:
    """DeepSeek-V3 stores a (7168, 2112) FP8 matrix with (56, 17) scales: 128×128 blocks, the last column
    block short; each value takes the scale of its block. Shapes that fit no one block side are refused."""
    from ancestree.io.quant import _block_size, _tile_blocks

    assert _block_size((56, 17), (7168, 2112)) == 128 and _block_size((2, 2), (64, 64)) == 32
    assert _block_size((1, 256), (256, 512)) is None and _block_size((3, 5), (7, 9)) is None
    assert not resolve_axis((256, 512), (1, 256))[0] and resolve_axis((7168, 2112), (56, 17))[0]
    scales = np.arange(56 * 17, dtype=np.float32).reshape(56, 17)
    tiled = _tile_blocks(scales, (7168, 2112))
    assert tiled.shape == (7168, 2112) and tiled[127, 127] == scales[0, 0] and tiled[128, 128] == scales[1, 1]
    assert tiled[-1, -1] == scales[-1, -1] and tiled[0, 2048] == scales[0, 16]


def test_tied_weights_count_once(tmp_path: Path) -> None:
    """GPT-2's output head is its token embedding (one storage, two keys in ``pytorch_model.bin``): counted
    once in ``parameters``, as ``transformers`` counts it; a head that is a copy counts twice."""
    w = torch.randn(50, 16)
    torch.save({"wte.weight": w, "lm_head.weight": w, "h.weight": torch.randn(16, 16)}, tmp_path / "tied.bin")
    torch.save({"wte.weight": w, "lm_head.weight": w.clone(), "h.weight": torch.randn(16, 16)}, tmp_path / "copy.bin")
    with load_model(tmp_path / "tied.bin") as tied, load_model(tmp_path / "copy.bin") as copy:
        assert tied.parameters == 800 + 256 and copy.parameters == 2 * 800 + 256
        assert sorted(tied.tensors) == sorted(copy.tensors)  # both names stay listed
    folder = tmp_path / "gpt2"  # in a Hugging Face folder too (the folder counted every listed tensor)
    folder.mkdir()
    (tmp_path / "tied.bin").rename(folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")
    with load_model(folder) as model:
        assert model.parameters == 800 + 256


def test_torch_legacy_format_and_model_wrapper(tmp_path: Path) -> None:
    sd = {"fc.weight": torch.randn(3, 2), "fc.bias": torch.randn(3)}
    torch.save({"model": sd}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    with load_model(tmp_path / "legacy.bin") as model:
        assert set(model.tensors) == {"fc.weight", "fc.bias"}
        np.testing.assert_array_equal(model.read("fc.weight"), sd["fc.weight"].numpy())


def test_torch_checkpoint_without_known_wrapper_skips_optimizer_state(tmp_path: Path) -> None:
    w = torch.randn(3, 3)
    ckpt = {"model": {"arch": "mlp"}, "weights": {"fc": w, "blocks": [torch.ones(2), torch.zeros(2)]},
            "optimizer": {"state": {0: {"exp_avg": torch.ones(3, 3)}}}, "epoch": 9}
    torch.save(ckpt, tmp_path / "ckpt.pth")
    with load_model(tmp_path / "ckpt.pth") as model:
        assert list(model.tensors) == ["weights.fc", "weights.blocks.0", "weights.blocks.1"]
        np.testing.assert_array_equal(model.read("weights.fc"), w.numpy())


class _RunsCode:
    """Pickles to a call of ``os.system`` (or ``open(...).write``): what a hostile checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("how", ["zip", "legacy-protocol-2", "plain-pickle"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"weight": torch.ones(2), "evil": _RunsCode(marker)}
    path = tmp_path / "evil.pt"
    if how == "zip":
        torch.save(payload, path)
    elif how == "legacy-protocol-2":
        torch.save(payload, path, _use_new_zipfile_serialization=False, pickle_protocol=2)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(BadInputError, match="refuses to unpickle") as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    if how != "plain-pickle":
        assert "system" in str(err.value)  # the reason names the blocked call


def test_whole_module_pickle_is_refused(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # needs torch.nn globals: not a plain state dict
    with pytest.raises(BadInputError, match="refuses to unpickle"):
        load_model(tmp_path / "module.pt")


def test_torch_int8_with_bitsandbytes_scb(tmp_path: Path) -> None:
    w, q, scale = _int8_with_scale((4, 8))
    torch.save({"lin.weight": torch.from_numpy(q), "lin.weight.SCB": torch.from_numpy(scale * 127)}, tmp_path / "pytorch_model.bin")
    with load_model(tmp_path / "pytorch_model.bin") as model:
        assert list(model.tensors) == ["lin.weight"]
        np.testing.assert_allclose(model.read("lin.weight"), q * scale[:, None], rtol=1e-6)


# -- npz ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("compressed", [False, True])
def test_npz_reads_lazily_and_folds_scales(tmp_path: Path, compressed: bool) -> None:
    tensors = small_tensors(3)
    tensors["fortran"] = np.asfortranarray(rng().standard_normal((3, 5)))
    tensors["half"] = rng().standard_normal(6).astype(np.float16)
    _, q, scale = _int8_with_scale((4, 6))
    tensors["quant.weight"], tensors["quant.weight_scale"] = q, scale
    (np.savez_compressed if compressed else np.savez)(tmp_path / "w.npz", **tensors)
    with load_model(tmp_path / "w.npz") as model:
        assert model.format == "npz"
        assert "quant.weight_scale" not in model.tensors and model.tensors["quant.weight"].quantized
        for name, values in tensors.items():
            if name.startswith("quant"):
                continue
            got = model.read(name)
            np.testing.assert_array_equal(got, values)
            assert compressed or isinstance(got, np.memmap)  # a stored member is mapped, not read into memory
        np.testing.assert_allclose(model.read("quant.weight"), q * scale[:, None], rtol=1e-6)


def test_npz_object_array_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", ok=np.ones(3), bad=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BadInputError, match="Python objects"):
        load_model(tmp_path / "obj.npz")


# -- ONNX --------------------------------------------------------------------------------------------------
def _onnx_model(nodes: list, inits: list, inputs: list | None = None, opset: int = 21):
    import onnx
    from onnx import TensorProto, helper

    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])] if inputs is None else inputs
    outputs = [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)]
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_onnx_torch_export_matches_state_dict(tmp_path: Path) -> None:
    import warnings

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 4),), str(tmp_path / "net.onnx"), dynamo=False)
    with load_model(tmp_path / "net.onnx") as model:
        assert model.format == "onnx"
        assert model.parameters == sum(p.numel() for p in net.parameters())
        for name, values in net.state_dict().items():
            np.testing.assert_array_equal(model.read(name), values.numpy())


def test_onnx_constants_in_subgraphs_and_generic_names(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = rng()
    then_c, else_c, loop_c = (r.standard_normal(s).astype(np.float32) for s in ((3, 2), (5,), (2, 2)))
    then = helper.make_graph([helper.make_node("Constant", [], ["val_12"], value=numpy_helper.from_array(then_c))], "then", [], [helper.make_tensor_value_info("val_12", TensorProto.FLOAT, None)])
    nested = helper.make_graph([helper.make_node("Constant", [], ["onnx::MatMul_45"], value=numpy_helper.from_array(loop_c))], "body", [], [helper.make_tensor_value_info("onnx::MatMul_45", TensorProto.FLOAT, None)])
    literals = [helper.make_node("Constant", [], ["half"], value_float=0.5), helper.make_node("Constant", [], ["shape"], value_ints=[1, -1])]
    els = helper.make_graph(
        [*literals, helper.make_node("Constant", [], ["val_13"], value=numpy_helper.from_array(else_c)), helper.make_node("If", ["c"], ["inner"], then_branch=nested, else_branch=nested)],
        "else", [], [helper.make_tensor_value_info("val_13", TensorProto.FLOAT, None)],
    )
    init = numpy_helper.from_array(r.standard_normal((4, 4)).astype(np.float32), "val_0")
    node = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=els)
    model_proto = _onnx_model([node], [init], [helper.make_tensor_value_info("c", TensorProto.BOOL, [])])
    onnx.save(model_proto, tmp_path / "sub.onnx")
    with load_model(tmp_path / "sub.onnx") as model:
        assert set(model.tensors) == {"val_0", "val_12", "val_13", "onnx::MatMul_45"}  # graph literals are not weights
        np.testing.assert_array_equal(model.read("val_12"), then_c)
        np.testing.assert_array_equal(model.read("val_13"), else_c)
        np.testing.assert_array_equal(model.read("onnx::MatMul_45"), loop_c)


def test_onnx_folded_rotary_tables_and_masks_are_not_weights(tmp_path: Path) -> None:
    """torch.onnx.export(dynamo=True) folds rotary cos/sin tables and the causal mask into (1, 1, T, D)
    initializers that only elementwise ops use: listed as weights, they made the export another architecture
    than its own safetensors, and `tree` left the two unlinked. A (1, 1, 3, 3) convolution kernel stays."""
    import onnx
    from onnx import helper, numpy_helper

    from ancestree.fingerprint import fingerprint
    from ancestree.graph import GraphRecovery

    r = rng()
    weights = {f"w{i}": (r.standard_normal((16, 16)) * 0.1).astype(np.float32) for i in range(4)}
    tables = {"unsqueeze_14": r.standard_normal((1, 1, 8, 16)).astype(np.float32),
              "val_189": np.triu(np.full((1, 1, 8, 8), -1e4, np.float32), 1), "kernel": r.standard_normal((1, 1, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "val_0"], ["h0"])]
    for i in range(1, 4):
        nodes.append(helper.make_node("MatMul", [f"h{i - 1}", f"val_{i}"], [f"h{i}"]))
    nodes += [helper.make_node("Mul", ["h3", "unsqueeze_14"], ["rot"]), helper.make_node("Add", ["rot", "val_189"], ["masked"]),
              helper.make_node("Conv", ["masked", "kernel"], ["y"])]
    inits = [numpy_helper.from_array(w, f"val_{i}") for i, w in enumerate(weights.values())]
    inits += [numpy_helper.from_array(v, n) for n, v in tables.items()]
    onnx.save(_onnx_model(nodes, inits), tmp_path / "export.onnx")
    with load_model(tmp_path / "export.onnx") as model:
        assert set(model.tensors) == {"val_0", "val_1", "val_2", "val_3", "kernel"}
    save_file(weights | {"kernel": tables["kernel"]}, str(tmp_path / "model.safetensors"))
    fps = [fingerprint(tmp_path / f, model_id=f) for f in ("model.safetensors", "export.onnx")]
    graph = GraphRecovery(use_declared=False).fit(fps).graph_
    assert [d["relation"] for _, _, d in graph.graph.edges(data=True)] == ["duplicate"]


def test_onnx_weights_packed_for_matmulnbits_are_named_not_fingerprinted(tmp_path: Path) -> None:
    """onnxruntime's MatMulNBits holds 4-bit blocks in uint8 and float block scales: the scales alone were
    fingerprinted as the model's weights."""
    import onnx
    from onnx import helper, numpy_helper

    from ancestree.fingerprint import fingerprint

    r = rng()
    packed = numpy_helper.from_array(r.integers(0, 255, (8, 1, 16), dtype=np.uint8), "B")
    scales = numpy_helper.from_array(r.standard_normal(8).astype(np.float32), "scales")
    node = helper.make_node("MatMulNBits", ["x", "B", "scales"], ["y"], domain="com.microsoft", K=32, N=8, bits=4, block_size=32)
    proto = _onnx_model([node], [packed, scales])
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(proto, tmp_path / "nbits.onnx")
    with pytest.raises(BadInputError, match="packed for onnxruntime's MatMulNBits"):
        fingerprint(tmp_path / "nbits.onnx")


def test_onnx_dequantize_linear_per_tensor_per_axis_and_qdq(tmp_path: Path) -> None:
    import onnx
    from onnx import helper, numpy_helper

    r = rng()
    q1 = r.integers(-127, 128, (4, 3)).astype(np.int8)
    q2 = r.integers(0, 256, (3, 5)).astype(np.uint8)
    s2, z2 = r.uniform(0.01, 0.1, 5).astype(np.float32), r.integers(100, 150, 5).astype(np.uint8)
    f = r.standard_normal((5, 2)).astype(np.float32)
    inits = [
        numpy_helper.from_array(q1, "w1_q"), numpy_helper.from_array(np.float32(0.02), "s1"),
        numpy_helper.from_array(q2, "val_3"), numpy_helper.from_array(s2, "val_4"), numpy_helper.from_array(z2, "val_5"),
        numpy_helper.from_array(f, "w3"), numpy_helper.from_array(np.float32(0.05), "qs"), numpy_helper.from_array(np.int8(3), "qz"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w1_q", "s1"], ["w1"]),
        helper.make_node("DequantizeLinear", ["val_3", "val_4", "val_5"], ["w2"], axis=1),
        helper.make_node("QuantizeLinear", ["w3", "qs", "qz"], ["w3_q"]),
        helper.make_node("DequantizeLinear", ["w3_q", "qs", "qz"], ["w3_dq"]),
    ]
    onnx.save(_onnx_model(nodes, inits), tmp_path / "q.onnx")
    with load_model(tmp_path / "q.onnx") as model:
        assert {n: (t.dtype, t.quantized) for n, t in model.tensors.items()} == {
            "w1": ("int8", True), "val_3": ("uint8", True), "w3": ("int8", True),
        }
        assert model.parameters == 12 + 15 + 10  # scales and zero points are not parameters
        np.testing.assert_allclose(model.read("w1"), q1 * np.float32(0.02), rtol=1e-6)
        np.testing.assert_allclose(model.read("val_3"), (q2.astype(np.float32) - z2) * s2, rtol=1e-6)
        fake = (np.clip(np.rint(f / 0.05) + 3, -128, 127) - 3) * np.float32(0.05)
        np.testing.assert_allclose(model.read("w3"), fake, rtol=1e-6)
        assert np.abs(model.read("w3") - f).max() <= 0.025 + 1e-6


def test_onnx_blocked_int4_dequantize_linear(tmp_path: Path) -> None:
    import ml_dtypes
    import onnx
    from onnx import helper, numpy_helper

    r = rng()
    q = r.integers(-8, 8, (4, 8)).astype(ml_dtypes.int4)
    scale = r.uniform(0.1, 1.0, (4, 2)).astype(np.float32)  # one scale per block of 4 along axis 1
    node = helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w"], axis=1, block_size=4)
    onnx.save(_onnx_model([node], [numpy_helper.from_array(q, "w_q"), numpy_helper.from_array(scale, "w_s")], []), tmp_path / "i4.onnx")
    with load_model(tmp_path / "i4.onnx") as model:
        assert {n: (t.dtype, t.quantized) for n, t in model.tensors.items()} == {"w": ("int4", True)}
        np.testing.assert_array_equal(model.read("w"), q.astype(np.float32) * np.repeat(scale, 4, axis=1))


def test_onnx_onnxruntime_qoperator_naming(tmp_path: Path) -> None:
    """``QLinearConv`` fed ``W_quantized``/``W_scale``/``W_zero_point``: one tensor ``W``; activation scales hidden."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = rng()
    wq = r.integers(-127, 128, (2, 3, 1, 1)).astype(np.int8)
    ws = np.array([0.5, 0.25], np.float32)
    names = ["x_scale", "x_zero_point", "W_quantized", "W_scale", "W_zero_point", "y_scale", "y_zero_point"]
    arrays = [np.float32(0.1), np.uint8(128), wq, ws, np.zeros(2, np.int8), np.float32(0.2), np.uint8(128)]
    inits = [numpy_helper.from_array(a, n) for n, a in zip(names, arrays)]
    node = helper.make_node("QLinearConv", ["x_q", *names], ["y"])
    inputs = [helper.make_tensor_value_info("x_q", TensorProto.UINT8, [1, 3, 2, 2])]
    onnx.save(_onnx_model([node], inits, inputs), tmp_path / "ort.onnx")
    with load_model(tmp_path / "ort.onnx") as model:
        assert list(model.tensors) == ["W"]
        np.testing.assert_allclose(model.read("W"), wq * ws[:, None, None, None])


def test_onnx_external_data(tmp_path: Path) -> None:
    import onnx
    from onnx import helper, numpy_helper

    w = rng().standard_normal((64, 32)).astype(np.float32)
    proto = _onnx_model([helper.make_node("MatMul", ["x", "W"], ["y"])], [numpy_helper.from_array(w, "W")])
    onnx.save(proto, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").stat().st_size >= w.nbytes
    with load_model(tmp_path / "ext.onnx") as model:
        np.testing.assert_array_equal(model.read("W"), w)
        # mapped from the side file: reading its bytes into the proto and decoding them made two copies
        values = model.read("W")
        while values is not None and not isinstance(values, np.memmap):
            values = values.base
        assert isinstance(values, np.memmap)
    (tmp_path / "ext.data").unlink()
    with load_model(tmp_path / "ext.onnx") as model, pytest.raises(BadInputError, match="missing"):
        model.read("W")


# -- GGUF --------------------------------------------------------------------------------------------------
def _write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, str]], arch: str = "llama", heads: tuple = (0, 0)) -> None:
    from gguf import GGMLQuantizationType, GGUFWriter, quants

    writer = GGUFWriter(str(path), arch)
    writer.add_name("tiny-test")
    if heads[0]:
        writer.add_head_count(heads[0])
        writer.add_head_count_kv(heads[1])
    writer.add_string("general.base_model.0.repo_url", "https://huggingface.co/org/base-model")
    for name, (values, kind) in tensors.items():
        if kind in ("f32", "f16"):
            writer.add_tensor(name, values.astype(np.float32 if kind == "f32" else np.float16))
        else:
            qtype = GGMLQuantizationType[kind.upper()]
            packed = quants.quantize(values, qtype)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("kind", ["q8_0", "q4_0", "q5_1"])
def test_gguf_blocks_dequantized_a_slice_at_a_time_are_the_whole_tensor_dequantized(tmp_path: Path, monkeypatch, kind: str) -> None:
    """gguf's ``dequantize`` builds temporaries as large as its output, so a tensor is dequantized a slice
    of rows at a time into one array: the values must be those of one call on the whole tensor, in any
    layout (here 3-D, slices of 7 rows' blocks)."""
    from gguf import GGMLQuantizationType, quants

    import ancestree.io.gguf as gguf_reader

    a = rng().standard_normal((5, 40, 64)).astype(np.float32)
    _write_gguf(tmp_path / "m.gguf", {"w": (a, kind)})
    qtype = GGMLQuantizationType[kind.upper()]
    packed = quants.quantize(a, qtype)
    monkeypatch.setattr(gguf_reader, "DEQUANTIZE_SLICE_BYTES", 7 * packed.shape[-1])
    with load_model(tmp_path / "m.gguf") as model:
        values = model.read("w")
    np.testing.assert_array_equal(values, quants.dequantize(packed, qtype))
    assert values.dtype == np.float32 and values.shape == a.shape


def test_gguf_shapes_dtypes_values_and_metadata(tmp_path: Path) -> None:
    from gguf import GGMLQuantizationType, quants

    r = rng()
    a = r.standard_normal((3, 8, 64)).astype(np.float32)  # non-square so a reversed shape would show
    kinds = ["f32", "f16", "q8_0", "q4_0", "q5_0", "bf16"]
    _write_gguf(tmp_path / "m.gguf", {k: (a, k) for k in kinds})
    with load_model(tmp_path / "m.gguf") as model:
        assert model.format == "gguf"
        got = {n: (t.shape, t.dtype, t.quantized) for n, t in model.tensors.items()}
        assert got["f32"] == ((3, 8, 64), "float32", False)
        assert got["f16"] == ((3, 8, 64), "float16", False)
        assert got["q4_0"] == ((3, 8, 64), "q4_0", True)
        assert got["bf16"] == ((3, 8, 64), "bfloat16", False)
        assert model.parameters == len(kinds) * a.size
        np.testing.assert_array_equal(model.read("f32"), a)
        assert not model.read("f32").flags.owndata
        # each type: exactly gguf's own round trip, and within one quantization step of each 32-block's absmax
        step = {"q8_0": 1 / 127, "q5_0": 1 / 16, "q4_0": 1 / 8, "bf16": 1 / 128, "f16": 1 / 1024}
        block_max = np.abs(a).reshape(-1, 32).max(axis=1, keepdims=True)
        for kind, fraction in step.items():
            values = model.read(kind)
            assert values.shape == a.shape
            assert (np.abs(values - a).reshape(-1, 32) <= fraction * block_max).all(), kind
            if kind not in ("f16",):
                qtype = GGMLQuantizationType[kind.upper()]
                np.testing.assert_array_equal(values, quants.dequantize(quants.quantize(a, qtype), qtype))
        assert model.meta.extra["general.name"] == "tiny-test"
        assert model.meta.extra["general.architecture"] == "llama"
        assert model.meta.declared_base_model == "org/base-model"


@pytest.mark.parametrize(("kind", "arch"), [("f16", "llama"), ("q8_0", "llama"), ("f16", "olmo"), ("f16", "deci")])
def test_gguf_query_and_key_rows_permuted_by_llama_cpp_are_put_back(tmp_path: Path, kind: str, arch: str) -> None:
    """llama.cpp's converter reorders each head's query/key rows (LlamaModel.permute) for Llama-like
    architectures: read as stored, a GGUF of a model looked unrelated to its own safetensors in attention.
    DeciLM stores its head counts per layer."""
    r = rng()
    heads, kv_heads, width = 4, 2, 64
    q = r.standard_normal((heads * 16, width)).astype(np.float32)
    k = r.standard_normal((kv_heads * 16, width)).astype(np.float32)
    v = r.standard_normal((kv_heads * 16, width)).astype(np.float32)

    def permute(w: np.ndarray, n: int) -> np.ndarray:  # as convert_hf_to_gguf.py writes it
        return w.reshape(n, 2, w.shape[0] // n // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    stored = {"blk.0.attn_q.weight": (permute(q, heads), kind), "blk.0.attn_k.weight": (permute(k, kv_heads), kind),
              "blk.0.attn_v.weight": (v, kind)}
    tolerance = 0.01 if kind == "f16" else 0.05
    _write_gguf(tmp_path / "llama.gguf", stored, arch, ([heads, 0], [kv_heads, 0]) if arch == "deci" else (heads, kv_heads))
    with load_model(tmp_path / "llama.gguf") as model:
        for name, want in (("blk.0.attn_q.weight", q), ("blk.0.attn_k.weight", k), ("blk.0.attn_v.weight", v)):
            assert np.abs(model.read(name) - want).max() < tolerance * np.abs(want).max(), name
    _write_gguf(tmp_path / "qwen2.gguf", stored, "qwen2", (heads, kv_heads))  # rotary halves: never permuted
    with load_model(tmp_path / "qwen2.gguf") as model:
        assert np.abs(model.read("blk.0.attn_q.weight") - permute(q, heads)).max() < tolerance * np.abs(q).max()


# -- PEFT --------------------------------------------------------------------------------------------------
class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(10, 6)
        self.fc1 = torch.nn.Linear(6, 8)
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc1(self.emb(x)))


@pytest.mark.parametrize("safe", [True, False])
def test_peft_lora_delta_equals_merged_minus_base(tmp_path: Path, safe: bool) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = _Tiny()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["fc1", "emb", "conv"], modules_to_save=["head"], init_lora_weights=False,
        rank_pattern={"conv": 2}, alpha_pattern={"fc1": 3}, use_rslora=not safe,
    )
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        peft_model.base_model.model.head.modules_to_save["default"].weight.add_(1.0)
    peft_model.save_pretrained(str(tmp_path / "adapter"), safe_serialization=safe)
    trained = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n or "modules_to_save" in n)
    merged = peft_model.merge_and_unload().state_dict()
    with load_model(tmp_path / "adapter") as model:
        assert model.format == "peft"
        assert model.meta.extra["adapter"] is True
        assert model.meta.extra["lora_rank"] == {"conv.weight": 2, "emb.weight": 4, "fc1.weight": 4}
        assert model.meta.adapter_config["r"] == 4
        assert set(model.tensors) == {"conv.weight", "emb.weight", "fc1.weight", "head.weight", "head.bias"}
        for name in ("conv.weight", "emb.weight", "fc1.weight"):
            delta = (merged[name] - before[name]).numpy()
            assert model.tensors[name].shape == delta.shape
            assert np.abs(delta).max() > 0.05  # the check below is not vacuous
            np.testing.assert_allclose(model.read(name), delta, atol=1e-5)
        np.testing.assert_array_equal(model.read("head.weight"), merged["head.weight"].numpy())
        assert model.parameters == trained  # what the adapter stores and trained (lora_A/B, head)


def test_peft_parameters_count_the_stored_low_rank_factors(tmp_path: Path) -> None:
    """A rank-2 adapter of a 64x64 layer trains 256 numbers, though it is read as a 4096-entry update."""
    from peft import LoraConfig, get_peft_model

    base = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False))
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    shutil.make_archive(str(tmp_path / "adapter"), "zip", tmp_path / "adapter")  # zipped, it counted 4096 (the update)
    for path in (tmp_path / "adapter", tmp_path / "adapter.zip"):
        with load_model(path) as model:
            assert model.tensors["0.weight"].shape == (64, 64)
            assert model.parameters == 2 * 64 * 2 and model.dtype_counts == {"float32": 256}, path


def test_peft_rank_mismatch_is_bad_input(tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    folder.mkdir()
    r = rng()
    save_file({"base_model.model.fc.lora_A.weight": r.standard_normal((4, 6)).astype(np.float32),
               "base_model.model.fc.lora_B.weight": r.standard_normal((8, 4)).astype(np.float32)}, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 16}))
    with pytest.raises(BadInputError, match="rank 4"):
        load_model(folder)


# -- zip ---------------------------------------------------------------------------------------------------
def test_zip_of_folder_and_of_single_file(tmp_path: Path) -> None:
    folder = write_hf_folder(tmp_path / "model", small_tensors(5), {"base_model": "org/base"})
    with zipfile.ZipFile(tmp_path / "model.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for f in folder.iterdir():
            zf.write(f, f"model/{f.name}")
    with load_model(tmp_path / "model.zip", "my-id") as model:
        assert (model.id, model.format) == ("my-id", "zip:safetensors")
        assert model.meta.declared_base_model == "org/base"
        assert [f.path for f in model.meta.files] == [tmp_path / "model.zip"]
        assert model.meta.files[0].size == (tmp_path / "model.zip").stat().st_size
        np.testing.assert_array_equal(model.read("layer.0.weight"), small_tensors(5)["layer.0.weight"])
        workdir = model.workdir
        assert workdir.is_dir()
    assert not workdir.exists()  # the extraction is removed on close
    np.savez(tmp_path / "w.npz", **small_tensors(6))
    with zipfile.ZipFile(tmp_path / "single.zip", "w") as zf:
        zf.write(tmp_path / "w.npz", "w.npz")
    with load_model(tmp_path / "single.zip") as model:
        assert model.format == "zip:npz"
        np.testing.assert_array_equal(model.read("layer.1.weight"), small_tensors(6)["layer.1.weight"])


def test_zip_bomb_is_refused_before_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ancestree.io.zip as zipmod

    monkeypatch.setattr(zipmod, "MIN_LIMIT", 1 << 20)  # a 1 MiB floor keeps the test file small
    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.safetensors", bytes(8 << 20))  # 8 MiB of zeros compresses ~1000x
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("ancestree-zip-*"))
    with pytest.raises(BadInputError, match="zip bomb"):
        load_model(tmp_path / "bomb.zip")
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("ancestree-zip-*")) <= before


def test_inspect_record_declares_a_string_even_for_a_merge() -> None:
    """The contract's `declared_base_model` is null or a string; a merge card's list is joined."""
    from ancestree.io.base import inspect_record

    rec = inspect_record("m", "safetensors", 1, 1, {"float32": 1}, ["org/a", "org/b"])
    assert rec["declared_base_model"] == "org/a, org/b"
    assert inspect_record("m", "safetensors", 1, 1, {}, None)["declared_base_model"] is None


def test_files_users_have_from_training_and_other_tools_are_read(tmp_path: Path) -> None:
    """From a dogfood round: a Lightning `.ckpt` was an "unknown model format" (the same bytes as `.pt` were
    read), a folder holding `model.safetensors` and its `model.fp16.safetensors` variant was refused (a tensor
    "also appears" in both), one beside Mistral's `consolidated.safetensors` counted every weight twice, and
    big-endian float arrays in an `.npz` were taken for integers without scales."""
    from ancestree.fingerprint import fingerprint

    tensors = small_tensors(3)
    torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in tensors.items()}, "epoch": 3,
                "optimizer_states": [{"state": {}}]}, tmp_path / "epoch=3-step=1000.ckpt")
    with load_model(tmp_path / "epoch=3-step=1000.ckpt") as model:
        assert np.array_equal(model.read("layer.0.weight"), tensors["layer.0.weight"])

    folder = write_hf_folder(tmp_path / "variants", tensors)
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, str(folder / "model.fp16.safetensors"))
    save_file(tensors, str(folder / "consolidated.safetensors"))
    with load_model(write_hf_folder(tmp_path / "plain", tensors)) as plain:
        expected = plain.parameters
    with load_model(folder) as model:
        assert model.parameters == expected
        assert [f.path.name for f in model.meta.files] == ["model.safetensors"]

    np.savez(tmp_path / "big.npz", **{k: v.astype(">f4") if v.dtype.kind == "f" else v for k, v in tensors.items()})
    np.savez(tmp_path / "little.npz", **tensors)
    with load_model(tmp_path / "big.npz") as model:
        name = next(iter(tensors))
        assert model.tensors[name].dtype == "float32" and np.array_equal(model.read(name), tensors[name])
    assert fingerprint(tmp_path / "big.npz").same_content(fingerprint(tmp_path / "little.npz"))


def test_files_unpacked_over_a_model_with_their_old_times_are_read_again(tmp_path: Path) -> None:
    """`unzip -o` (or tar, rsync -t) of another model of the same size over a folder, restoring the old
    modification time: the fingerprint cache served the old model's fingerprint (`compare` said "same
    weights" of what was now a fine-tune). The key holds the inode and the change time too."""
    from ancestree.fingerprint import FingerprintCache, fingerprint

    cache = FingerprintCache(tmp_path / "cache")
    first = write_hf_folder(tmp_path / "m", small_tensors(1))
    weights = next(first.glob("*.safetensors"))
    before = weights.stat()
    old = fingerprint(first, cache)
    other = write_hf_folder(tmp_path / "other", small_tensors(2))
    shutil.copyfile(next(other.glob("*.safetensors")), tmp_path / "new.safetensors")
    os.replace(tmp_path / "new.safetensors", weights)  # a new file (inode) in its place, as unzip writes one
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size
    assert not fingerprint(first, cache).same_content(old)
