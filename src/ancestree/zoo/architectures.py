"""The zoo's model families: a small vision transformer, a small CNN and an MLP, all runnable on CPU.

Every model is described by a plain ``config.json``-style dict (``model_type``, ``architectures``,
sizes, ``num_labels``, ``input_shape``); :func:`build_module` turns it into a ``torch.nn.Module`` and
:func:`load_module` rebuilds a runnable module from a zoo model folder (config + weights).
The ViT keeps separate square ``q_proj``/``k_proj``/``v_proj``/``out_proj`` matrices, as the ViTs that
MoTHer was designed on do, and LoRA targets them by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ancestree.errors import BadInputError, IncomparableError
from ancestree.zoo.data import INPUT_SHAPE

MODEL_TYPES = {"ancestree-vit": "AncestreeViT", "ancestree-cnn": "AncestreeCNN", "ancestree-mlp": "AncestreeMLP"}

#: Linear layers LoRA adapts, per family (names as they appear in ``named_modules``).
LORA_TARGETS = {
    "ancestree-vit": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "ancestree-cnn": ["fc1", "fc2"],
    "ancestree-mlp": ["fc1", "fc2"],
}

#: Default sizes per family; ``make_config`` overrides them.
DEFAULTS: dict[str, dict[str, int]] = {
    "ancestree-vit": {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "mlp_dim": 128, "patch_size": 4},
    "ancestree-cnn": {"channels": 32, "num_layers": 3, "hidden_size": 128},
    "ancestree-mlp": {"hidden_size": 128, "num_layers": 2},
}


def make_config(model_type: str, num_labels: int, **sizes: int) -> dict[str, Any]:
    """A complete config dict for ``model_type`` (``"ancestree-vit"``, ``-cnn`` or ``-mlp``)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(MODEL_TYPES)}")
    unknown = set(sizes) - set(DEFAULTS[model_type])
    if unknown:
        raise ValueError(f"{model_type} has no size {sorted(unknown)}")
    config: dict[str, Any] = {"model_type": model_type, "architectures": [MODEL_TYPES[model_type]]}
    config.update(DEFAULTS[model_type])
    config.update(sizes)
    config["num_labels"] = int(num_labels)
    config["input_shape"] = list(INPUT_SHAPE)
    return config


class Attention(nn.Module):
    """Multi-head self-attention with four square projections."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, n, h, d // h).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        att = torch.softmax(q @ k.transpose(-2, -1) / (d // h) ** 0.5, dim=-1)
        return self.out_proj((att @ v).transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, mlp_dim), nn.Linear(mlp_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class AncestreeViT(nn.Module):
    """A small ViT: patch embedding, class token, learned positions, pre-norm blocks, linear head."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        c, size = config["input_shape"][0], config["input_shape"][1]
        dim, p = config["hidden_size"], config["patch_size"]
        self.patch_embed = nn.Conv2d(c, dim, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (size // p) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(dim, config["num_heads"], config["mlp_dim"]) for _ in range(config["num_layers"])
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, config["num_labels"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


class AncestreeCNN(nn.Module):
    """Conv-BN-free CNN (no running statistics, so the state dict is exactly the learned weights)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        ch, layers = config["channels"], []
        c_in = config["input_shape"][0]
        for i in range(config["num_layers"]):
            c_out = ch * 2**i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.GELU()]
            if i < 2:  # 16 -> 8 -> 4
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c_in, config["hidden_size"])
        self.fc2 = nn.Linear(config["hidden_size"], config["num_labels"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class AncestreeMLP(nn.Module):
    """Flatten, ``num_layers`` hidden layers (``fc1``, ``fc2``, ...), linear head."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        d_in, hidden = int(torch.tensor(config["input_shape"]).prod()), config["hidden_size"]
        for i in range(config["num_layers"]):
            setattr(self, f"fc{i + 1}", nn.Linear(d_in if i == 0 else hidden, hidden))
        self.num_layers = config["num_layers"]
        self.head = nn.Linear(hidden, config["num_labels"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i in range(self.num_layers):
            x = torch.nn.functional.gelu(getattr(self, f"fc{i + 1}")(x))
        return self.head(x)


_CLASSES = {"ancestree-vit": AncestreeViT, "ancestree-cnn": AncestreeCNN, "ancestree-mlp": AncestreeMLP}


def build_module(config: dict[str, Any]) -> nn.Module:
    """A freshly initialised module for ``config`` (seed torch first for reproducible initial weights)."""
    model_type = config.get("model_type")
    if model_type not in _CLASSES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(_CLASSES)}")
    return _CLASSES[model_type](config)


def count_parameters(config: dict[str, Any]) -> int:
    return sum(p.numel() for p in build_module(config).parameters())


def load_state(folder: Path) -> dict[str, torch.Tensor]:
    """The float32 state dict stored in a zoo model folder (safetensors of any float dtype, int8, .bin).

    Formats without the original tensor names (ONNX, GGUF, PEFT adapters) go through
    :func:`ancestree.io.load_model`, which dequantizes; names must then match the module's.
    """
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
        from ancestree.zoo.save import dequantize_int8

        return {k: v.float() for k, v in dequantize_int8(raw).items()}
    # everything else (PyTorch pickles too: nested state dicts, sparse or meta tensors) through the readers
    from ancestree.io import load_model

    with load_model(folder) as model:
        return {info.name: torch.from_numpy(value.astype("float32").copy()) for info, value in model.iter_tensors()}


def load_module(path: str | Path) -> nn.Module:
    """A runnable module rebuilt from a zoo model folder's ``config.json`` and weights (in eval mode).

    A PEFT adapter folder is resolved against its base model (``base_model_name_or_path`` is a sibling
    folder id) and returned merged.
    """
    folder = Path(path)
    if (folder / "adapter_config.json").is_file():
        return _load_adapter(folder)
    if not (folder / "config.json").is_file():
        raise BadInputError(folder, "not a zoo model folder (no config.json)")
    config = json.loads((folder / "config.json").read_text())
    module = build_module(config)
    state = load_state(folder)
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise IncomparableError(folder, f"weights do not fit {config['model_type']}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return module.eval()


def _load_adapter(folder: Path) -> nn.Module:
    from peft import PeftModel  # noqa: F401 - imported for its side effect of registering LoRA layers
    from safetensors.torch import load_file

    from ancestree.zoo.recipes import apply_adapter

    adapter_config = json.loads((folder / "adapter_config.json").read_text())
    base = load_module(folder.parent / adapter_config["base_model_name_or_path"])
    return apply_adapter(base, adapter_config, load_file(str(folder / "adapter_model.safetensors"))).eval()


__all__ = [
    "LORA_TARGETS",
    "MODEL_TYPES",
    "build_module",
    "count_parameters",
    "load_module",
    "load_state",
    "make_config",
]
