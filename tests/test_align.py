"""Tensor alignment: names, wrapper prefixes, and content matching of renamed, transposed exports."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from ancestree.align import align, normalise_name
from ancestree.fingerprint import Fingerprint, fingerprint


def save(tmp_path: Path, name: str, tensors: dict[str, np.ndarray]) -> Path:
    path = tmp_path / f"{name}.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return path


def block(seed: int = 0, head: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = {}
    for i in range(2):
        for proj in ("query", "key", "value"):
            t[f"encoder.layer.{i}.{proj}.weight"] = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
            t[f"encoder.layer.{i}.{proj}.bias"] = (rng.standard_normal(64) * 0.02).astype(np.float32)
        t[f"encoder.layer.{i}.ffn.weight"] = (rng.standard_normal((128, 64)) * 0.05).astype(np.float32)
    if head:
        t["classifier.weight"] = (rng.standard_normal((3, 64)) * 0.05).astype(np.float32)
    return t


def test_normalise_name_strips_wrappers() -> None:
    assert normalise_name("base_model.model.bert.encoder.x") == "encoder.x"
    assert normalise_name("module.model.layers.0.w") == "layers.0.w"
    assert normalise_name("model.") == "model."  # never empties a name


def test_prefixed_names_pair_by_prefix(tmp_path: Path) -> None:
    fa = fingerprint(save(tmp_path, "a", block()))
    fb = fingerprint(save(tmp_path, "b", {f"bert.{k}": v for k, v in block(head=False).items()}))
    al = align(fa, fb)
    assert len(al) == len(fb)
    assert all(p.b == f"bert.{p.a}" and p.by == "prefix" and not p.transposed for p in al)
    assert al.unpaired_a == ["classifier.weight"] and al.unpaired_b == []


def onnx_like(tensors: dict[str, np.ndarray], seed: int = 7) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, bool]]]:
    """Generic names in shuffled order, matrices stored transposed (as MatMul initialisers are)."""
    rng = np.random.default_rng(seed)
    names = list(tensors)
    rng.shuffle(names)
    out, truth = {}, {}
    for i, name in enumerate(names):
        v = tensors[name]
        flip = v.ndim == 2
        out[f"onnx::MatMul_{i}" if flip else f"val_{i}"] = v.T if flip else v
        truth[name] = (f"onnx::MatMul_{i}" if flip else f"val_{i}", flip)
    return out, truth


@pytest.mark.parametrize("finetuned", [False, True])
def test_generic_names_pair_by_content_with_transposes(tmp_path: Path, finetuned: bool) -> None:
    original = block(head=False)
    exported = dict(original)
    if finetuned:  # the export of a fine-tuned child still pairs with its parent
        rng = np.random.default_rng(1)
        exported = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in original.items()}
    renamed, truth = onnx_like(exported)
    fa = fingerprint(save(tmp_path, "orig", block()))  # the original has a head the export lacks
    fb = fingerprint(save(tmp_path, "onnx", renamed))
    al = align(fa, fb)
    got = {p.a: (p.b, p.transposed) for p in al}
    assert got == truth
    assert all(p.by == "content" for p in al)
    assert al.unpaired_a == ["classifier.weight"]


def test_square_matrix_under_same_name_stored_transposed_is_detected(tmp_path: Path) -> None:
    t = block(head=False)
    flipped = {k: (v.T if k.endswith("query.weight") else v) for k, v in t.items()}
    al = align(fingerprint(save(tmp_path, "a", t)), fingerprint(save(tmp_path, "b", flipped)))
    assert {p.a for p in al if p.transposed} == {k for k in t if k.endswith("query.weight")}


def test_align_accepts_models(tmp_path: Path) -> None:
    from ancestree.io import load_model

    with load_model(save(tmp_path, "a", block())) as ma, load_model(save(tmp_path, "b", block(1))) as mb:
        al = align(ma, mb)
    assert len(al) == len(block()) and all(p.by == "name" for p in al)


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Linear(24, 48)
        self.hidden = torch.nn.Linear(48, 48, bias=False)
        self.norm = torch.nn.LayerNorm(48)
        self.out = torch.nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.norm(torch.relu(self.hidden(torch.relu(self.embed(x))))))


def test_onnx_export_aligns_with_safetensors_original(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyNet().eval()
    with torch.no_grad():  # LayerNorm gains away from their initial ones, so every tensor is distinct
        net.norm.weight.add_(0.1 * torch.randn(48))
        net.norm.bias.add_(0.1 * torch.randn(48))
    state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    st = save(tmp_path, "net", state)
    onnx_path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.randn(2, 24),), str(onnx_path), dynamo=False)
    fa, fb = fingerprint(st), fingerprint(onnx_path)
    al = align(fa, fb)
    assert sorted(p.a for p in al) == sorted(state) and not al.unpaired_a
    for p in al:
        ta, tb = fa[p.a], fb[p.b]
        assert ta.layout_hash == tb.layout_hash, p  # every pair holds the very same values
    from ancestree.relate import relate, verdict

    assert verdict(relate(fa, fb)).kind == "duplicate"
    assert fa.content_key == fb.content_key
