"""How each zoo model is made from its parents: real training and real weight transformations.

Every function here is pure in its inputs (a config, parent state dicts, hyper-parameters and a seed) and
returns state dicts; writing them to disk in one format or another is :mod:`ancestree.zoo.save`'s job.
Run single-threaded with the same seed, each gives bit-identical results.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ancestree.zoo.architectures import LORA_TARGETS, build_module
from ancestree.zoo.data import class_names, make_dataset

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class TrainSpec:
    """Hyper-parameters of one training run (recorded as the model's ``recipe`` in truth.json)."""

    steps: int = 300
    lr: float = 0.05
    optimizer: str = "sgd"  # sgd | adam | adamw
    weight_decay: float = 0.0
    batch_size: int = 64
    label_noise: float = 0.0
    n_per_class: int = 40

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Growth of the largest weight over one run beyond which it counts as diverged (the shipped zoos: fine-tunes
#: at most 4.6x, pre-training from initialisation at most 7.2x; a blown-up run in a wild seed: 1.2 million x).
EXPLODED = 100.0


class Diverged(RuntimeError):
    """A training run whose weights became NaN or infinite, or blew up (too high a learning rate for its task)."""


def state_hash(state: State) -> str:
    """A hash of a state dict's names, shapes and float32 values (what ``starting weights`` are compared by)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name].detach().to(torch.float32).contiguous().numpy()
        digest.update(name.encode())
        digest.update(str(value.shape).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def clone_state(module: nn.Module) -> State:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def _optimizer(params: list[torch.nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=0.9, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    raise ValueError(f"unknown optimizer {spec.optimizer!r}")


def _task_data(domain: str, classes: list[str], vocabulary: list[str], spec: TrainSpec, seed: int):
    X, y = make_dataset(domain, classes, spec.n_per_class, seed, vocabulary)
    if spec.label_noise > 0:  # noisy labels drawn from the task's own classes
        rng = np.random.default_rng(seed + 1)
        flip = rng.random(len(y)) < spec.label_noise
        choices = np.asarray([vocabulary.index(c) for c in classes])
        y = np.where(flip, rng.choice(choices, size=len(y)), y)
    return torch.from_numpy(X), torch.from_numpy(y)


def train(
    module: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    spec: TrainSpec,
    seed: int,
    checkpoints: tuple[int, ...] = (),
) -> list[State]:
    """Train ``module`` in place; return its state after each step count in ``checkpoints`` and at the end."""
    X, y = data
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = _optimizer(params, spec)
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    start_absmax = max(_absmax(module.state_dict()), default=0.0)
    saved: list[State] = []
    for step in range(1, spec.steps + 1):
        batch = torch.randint(0, len(y), (spec.batch_size,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(module(X[batch]), y[batch]).backward()
        optimizer.step()
        if step in checkpoints:
            saved.append(clone_state(module))
    saved.append(clone_state(module))
    module.eval()
    peaks = [peak for state in saved for peak in _absmax(state)]  # NaN or inf where a tensor holds one
    if not all(math.isfinite(peak) for peak in peaks):
        raise Diverged(f"training diverged at lr {spec.lr:g} (non-finite weights)")
    if max(peaks, default=0.0) > EXPLODED * start_absmax:
        # finite but blown up: the network is dead (chance accuracy) and its fine-tunes barely move, so a
        # zoo would call near-copies fine-tunes
        raise Diverged(f"training diverged at lr {spec.lr:g} (weights grew over {EXPLODED:g}x)")
    return saved


def _absmax(state: dict[str, torch.Tensor]) -> list[float]:
    """The largest magnitude of each float tensor of ``state`` (NaN or inf when the tensor holds one)."""
    return [float(v.abs().max()) for v in state.values() if v.is_floating_point() and v.numel()]


def accuracy(module: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> float:
    with torch.no_grad():
        return float((module(data[0]).argmax(1) == data[1]).float().mean())


def pretrain(config: dict[str, Any], domain: str, spec: TrainSpec, seed: int) -> tuple[State, float]:
    """A root: fresh initialisation from ``seed``, trained on every class of its head."""
    torch.manual_seed(seed)
    module = build_module(config)
    vocabulary = class_names(domain, config["num_labels"])
    data = _task_data(domain, vocabulary, vocabulary, spec, seed)
    state = train(module, data, spec, seed)[-1]
    return state, accuracy(module, data)


def finetune(
    config: dict[str, Any],
    parent: State,
    domain: str,
    classes: list[str],
    spec: TrainSpec,
    seed: int,
    checkpoints: tuple[int, ...] = (),
) -> tuple[str, list[State], float]:
    """Full fine-tuning of ``parent`` on ``classes``; returns the start hash, the checkpoints and accuracy."""
    module = build_module(config)
    module.load_state_dict(parent)
    start = state_hash(clone_state(module))
    vocabulary = class_names(domain, config["num_labels"])
    data = _task_data(domain, classes, vocabulary, spec, seed)
    states = train(module, data, spec, seed, checkpoints)
    return start, states, accuracy(module, data)


# -- LoRA (through peft) ----------------------------------------------------------------------------------
def _lora_config(adapter_config: dict[str, Any]):
    from peft import LoraConfig

    known = {f.name for f in fields(LoraConfig)}
    return LoraConfig(**{k: v for k, v in adapter_config.items() if k in known and k not in ("peft_type", "base_model_name_or_path")})


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def lora(
    config: dict[str, Any],
    parent: State,
    domain: str,
    classes: list[str],
    spec: TrainSpec,
    seed: int,
    rank: int,
    base_id: str,
) -> tuple[str, dict[str, Any], State, State, float]:
    """LoRA fine-tune of ``parent``: (start hash, adapter_config, adapter state dict, merged state, accuracy)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    torch.manual_seed(seed)  # LoRA's A matrices are initialised at random
    module = build_module(config)
    module.load_state_dict(parent)
    start = state_hash(clone_state(module))
    lora_config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS[config["model_type"]], bias="none"
    )
    peft_model = get_peft_model(module, lora_config)
    vocabulary = class_names(domain, config["num_labels"])
    data = _task_data(domain, classes, vocabulary, spec, seed)
    train(peft_model, data, spec, seed)
    adapter_state = {k: v.detach().clone().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    adapter_config = _jsonable(peft_model.peft_config["default"].to_dict())
    adapter_config["base_model_name_or_path"] = base_id
    acc = accuracy(peft_model, data)
    merged = clone_state(peft_model.merge_and_unload())
    return start, adapter_config, adapter_state, merged, acc


def apply_adapter(base: nn.Module, adapter_config: dict[str, Any], adapter_state: State) -> nn.Module:
    """``base`` with a saved PEFT LoRA adapter loaded and merged into its weights."""
    from peft import get_peft_model, set_peft_model_state_dict

    peft_model = get_peft_model(base, _lora_config(adapter_config))
    set_peft_model_state_dict(peft_model, adapter_state)
    return peft_model.merge_and_unload()


# -- transformations without training -------------------------------------------------------------------
def prune(state: State, sparsity: float) -> State:
    """Magnitude pruning: in every weight matrix (2-D or more), zero the ``sparsity`` fraction smallest |w|."""
    out = {}
    for name, value in state.items():
        if value.ndim >= 2 and value.is_floating_point():
            k = int(round(sparsity * value.numel()))
            order = torch.argsort(value.abs().flatten(), stable=True)  # stable: ties broken the same way every run
            flat = value.flatten().clone()
            flat[order[:k]] = 0.0
            out[name] = flat.reshape(value.shape)
        else:
            out[name] = value.clone()
    return out


def merge(states: list[State], weights: list[float], base: State | None = None) -> State:
    """Weight averaging ``Σ w_i θ_i`` or, with ``base``, task arithmetic ``base + Σ w_i (θ_i − base)``."""
    out: State = {}
    for name in states[0]:
        if base is None:
            merged = cast(torch.Tensor, sum(w * s[name] for w, s in zip(weights, states)))  # a tensor: weights given
        else:
            merged = base[name] + sum(w * (s[name] - base[name]) for w, s in zip(weights, states))
        out[name] = merged.to(torch.float32).contiguous()
    return out


def quantize_int8(state: State) -> dict[str, torch.Tensor]:
    """Symmetric per-output-row int8: weight ``<name>`` (I8) and ``<name>_scale`` (F32, one per row).

    1-D tensors (biases, norms) and tokens stay float32, as in common int8 checkpoints.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if value.ndim >= 2:
            rows = value.reshape(value.shape[0], -1)
            scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127.0
            q = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8)
            out[name] = q.reshape(value.shape).contiguous()
            out[f"{name}_scale"] = scale.to(torch.float32).contiguous()
        else:
            out[name] = value.to(torch.float32).contiguous()
    return out


def to_fp16(state: State) -> State:
    return {k: v.to(torch.float16).contiguous() for k, v in state.items()}


#: Float dtypes a zoo's models can be released in.
RELEASE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def release(state: State, dtype: str) -> State:
    """``state`` as released in ``dtype``: its float32 tensors stored in that dtype, others as they are
    (training runs in float32 and saves in the release dtype, as mixed-precision training does)."""
    target = RELEASE_DTYPES[dtype]
    return {k: v.to(target).contiguous() if v.dtype == torch.float32 else v for k, v in state.items()}


__all__ = [
    "State",
    "TrainSpec",
    "accuracy",
    "apply_adapter",
    "clone_state",
    "finetune",
    "lora",
    "merge",
    "pretrain",
    "prune",
    "quantize_int8",
    "release",
    "state_hash",
    "to_fp16",
    "train",
]
