"""The zoo presets: which trees, relations and sizes each one makes.

Each preset is a function ``(builder) -> None`` that calls :class:`~ancestree.zoo.plan.PlanBuilder`
methods. Times in :data:`MEASURED` were measured on 2 shared CPU cores with ``--workers 2`` (see README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ancestree.errors import BadInputError
from ancestree.zoo.plan import Plan, PlanBuilder

# Model sizes used by the presets (parameter counts in the README table).
VIT_TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64, "patch_size": 4}
VIT_SMALL = {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "mlp_dim": 128, "patch_size": 4}
VIT_BASE = {"hidden_size": 128, "num_layers": 6, "num_heads": 4, "mlp_dim": 256, "patch_size": 4}
CNN_TINY = {"channels": 16, "num_layers": 2, "hidden_size": 32}
CNN_SMALL = {"channels": 32, "num_layers": 3, "hidden_size": 128}
MLP_TINY = {"hidden_size": 64, "num_layers": 2}
MLP_SMALL = {"hidden_size": 256, "num_layers": 2}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    build: Callable[[PlanBuilder], None]


def _every_copy(b: PlanBuilder, parent: str) -> None:
    """Every relation without training: fp16, int8, 4-bit, pruned, and two duplicates."""
    for recipe in ("fp16", "int8", "q4", "pytorch", "onnx"):
        b.transform(parent, recipe)
    b.transform(parent, "prune", sparsity=0.5)


def micro(b: PlanBuilder) -> None:
    """The smallest zoo that exercises every writer: one root, a fine-tune, LoRA, and every copy."""
    root = b.root("ancestree-vit", "shapes", 8, b.train_spec(60, vary=False, lr=0.05, batch_size=32), **VIT_TINY)
    child = b.finetune(root, b.train_spec(30, vary=False, lr=0.02, batch_size=32))
    b.lora(root, b.train_spec(30, vary=False, lr=3e-3, optimizer="adam", batch_size=32), rank=2)
    _every_copy(b, child)


def tiny(b: PlanBuilder) -> None:
    """A few dozen tiny models with every relation kind; builds in seconds (used by the tests)."""
    pre = dict(vary=False, lr=0.05, batch_size=32, n_per_class=20)
    vit = b.root("ancestree-vit", "shapes", 12, b.train_spec(150, **pre), **VIT_TINY)
    fans = [b.finetune(vit, b.train_spec(60)) for _ in range(3)]
    b.merge(fans[:2])
    b.finetune(fans[2], b.train_spec(60))
    b.snake(vit, b.train_spec(30), checkpoints=3)
    b.lora(vit, b.train_spec(60, optimizer="adam", lr=3e-3), rank=2)
    b.lora(fans[0], b.train_spec(60, optimizer="adam", lr=3e-3), rank=4)
    _every_copy(b, fans[0])
    # an unrelated root of the same architecture (another seed): must never be linked to the first
    other = b.root("ancestree-vit", "shapes", 12, b.train_spec(150, **pre), **VIT_TINY)
    b.finetune(b.finetune(other, b.train_spec(60)), b.train_spec(60))
    mlp = b.root("ancestree-mlp", "digits", 10, b.train_spec(150, **pre), **MLP_TINY)
    kids = [b.finetune(mlp, b.train_spec(60)) for _ in range(2)]
    b.merge(kids, task_arithmetic=True)
    b.transform(kids[0], "prune", sparsity=0.3)
    cnn = b.root("ancestree-cnn", "shapes", 12, b.train_spec(150, **{**pre, "optimizer": "adam", "lr": 0.01}), **CNN_TINY)
    b.transform(b.finetune(cnn, b.train_spec(50)), "q4")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("micro", "one tiny root, a fine-tune, a LoRA and every copy format (determinism checks)", micro),
        Preset("tiny", "a few dozen tiny models, every relation kind, three families (tests)", tiny),
    )
}


#: Measured with ``ancestree zoo make OUT --preset NAME --workers 2`` on 2 shared cores: (size on disk, time).
MEASURED: dict[str, tuple[str, str]] = {}


def describe_presets() -> list[dict[str, object]]:
    """One row per preset: models, relation kinds, measured size and time (planned, not built)."""
    rows = []
    for name, preset in PRESETS.items():
        plan = build_plan(name)
        relations = sorted({s.relation for s in plan.models.values() if s.relation})
        size, time = MEASURED.get(name, ("", ""))
        rows.append({"name": name, "models": len(plan.models), "relations": relations, "size": size, "time": time,
                     "description": preset.description})
    return rows


def build_plan(preset: str, seed: int = 0, declare_fraction: float = 0.5) -> Plan:
    """The plan of ``preset`` for ``seed``."""
    if preset not in PRESETS:
        raise BadInputError(None, f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    builder = PlanBuilder(preset, seed)
    PRESETS[preset].build(builder)
    return builder.build(declare_fraction)


__all__ = ["MEASURED", "PRESETS", "Preset", "build_plan", "describe_presets"]
