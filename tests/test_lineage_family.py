"""A small real model family for the parent-detection tests, and checks that it is what it claims.

Two unrelated MLP roots of one architecture (digits), fine-tuned children over three generations with
varied hyper-parameters (weight decay, optimizer, length), and derived copies of one child: int8-rounded,
magnitude-pruned, hidden-unit-permuted, and a LoRA fine-tune merged into full weights; plus a CNN root
of another architecture. Everything is trained here with the zoo's recipes (seconds on CPU).
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ancestree.lineage.permute import permute_units
from ancestree.zoo import recipes
from ancestree.zoo.architectures import build_module, load_module, make_config
from ancestree.zoo.data import class_names, make_dataset

MLP = {"hidden_size": 48, "num_layers": 2}
CLASSES = class_names("digits", 10)


def _save(folder: Path, config: dict, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _spec(i: int, steps: int = 40) -> recipes.TrainSpec:
    """Varied fine-tuning recipes (the drift traps: weight decay, Adam vs SGD, lengths)."""
    kinds = [dict(optimizer="sgd", lr=0.03, weight_decay=0.0), dict(optimizer="adamw", lr=2e-3, weight_decay=0.05),
             dict(optimizer="sgd", lr=0.02, weight_decay=0.01), dict(optimizer="adam", lr=1e-3, weight_decay=0.0)]
    return recipes.TrainSpec(steps=steps * (1 + i % 2), batch_size=32, n_per_class=10, **kinds[i % len(kinds)])


def build_family(out: Path) -> dict:
    """Write the family under ``out``; return {"paths": name -> folder, "parent": child -> parent name}."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add hand-offs on a shared CPU
    try:
        return _build(out)
    finally:
        torch.set_num_threads(threads)


def _build(out: Path) -> dict:
    config = make_config("ancestree-mlp", 10, **MLP)
    paths, parent, states = {}, {}, {}
    for r, seed in (("A", 1), ("B", 2)):
        states[r], _ = recipes.pretrain(config, "digits", recipes.TrainSpec(steps=80, lr=0.05, batch_size=32, n_per_class=10), seed)
    tree = {"A1": "A", "A2": "A", "A3": "A", "B1": "B", "B2": "B", "A11": "A1", "A12": "A1", "A21": "A2", "A111": "A11"}
    for i, (name, p) in enumerate(tree.items()):
        classes = [CLASSES[j] for j in np.random.default_rng(i).choice(10, 4, replace=False)]
        _, outs, _ = recipes.finetune(config, states[p], "digits", classes, _spec(i), 100 + i)
        states[name], parent[name] = outs[-1], p
    a1 = states["A1"]
    states["A1-int8"] = _int8(a1)
    states["A1-pruned"] = recipes.prune(a1, 0.5)
    states["A1-permuted"] = {k: torch.from_numpy(v.copy()) for k, v in
                             permute_units({k: v.numpy() for k, v in a1.items()}, seed=7).items()}
    _, _, _, merged, _ = recipes.lora(config, states["A"], "digits", CLASSES[:5], recipes.TrainSpec(steps=60, lr=3e-3, optimizer="adam", batch_size=32, n_per_class=10), 9, 2, "A")
    states["A-lora"] = merged
    parent.update({"A1-int8": "A1", "A1-pruned": "A1", "A1-permuted": "A1", "A-lora": "A"})
    for name, state in states.items():
        paths[name] = _save(out / name, config, state)
    cnn_config = make_config("ancestree-cnn", 10, channels=8, num_layers=2, hidden_size=16)
    torch.manual_seed(0)
    paths["CNN"] = _save(out / "CNN", cnn_config, recipes.clone_state(build_module(cnn_config)))
    return {"paths": paths, "parent": parent}


def _int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-row symmetric int8 round trip (what a dequantizing reader returns for an int8 checkpoint)."""
    q = recipes.quantize_int8(state)
    return {k: (q[k].float() * q[f"{k}_scale"][:, None].reshape(-1, *[1] * (v.ndim - 1))) if v.ndim >= 2 else v
            for k, v in state.items()}


@functools.lru_cache(maxsize=1)
def shared_family() -> dict:
    """The family, built once per test process whichever test module asks first (removed at exit)."""
    out = Path(tempfile.mkdtemp(prefix="ancestree-lineage-"))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    return build_family(out / "family")


@pytest.fixture
def lineage_family() -> dict:
    return shared_family()


def test_permuted_child_computes_the_same_function(lineage_family: dict) -> None:
    paths = lineage_family["paths"]
    x = torch.from_numpy(make_dataset("digits", CLASSES, 3, seed=0)[0])
    with torch.no_grad():
        a, b = load_module(paths["A1"])(x), load_module(paths["A1-permuted"])(x)
    assert torch.allclose(a, b, atol=1e-5)
    w_a = load_module(paths["A1"]).fc1.weight
    w_b = load_module(paths["A1-permuted"]).fc1.weight
    assert not torch.allclose(w_a, w_b)  # the weights did move
