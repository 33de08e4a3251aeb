"""The zoo presets: which trees, relations and sizes each one makes.

Each preset is a function ``(builder) -> None`` that calls :class:`~ancestree.zoo.plan.PlanBuilder`
methods. Times in :data:`MEASURED` were measured on 2 shared CPU cores with ``--workers 2`` (see README).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypedDict

from ancestree.errors import BadInputError
from ancestree.zoo.data import class_names
from ancestree.zoo.plan import Plan, PlanBuilder
from ancestree.zoo.recipes import TrainSpec


class Sizes(TypedDict, total=False):
    """Model sizes: the ``**sizes`` of :meth:`PlanBuilder.root` (typed, so they are not taken for ``split``)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    patch_size: int
    channels: int


# Model sizes used by the presets (parameter counts in the README table).
VIT_TINY: Sizes = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "mlp_dim": 64, "patch_size": 4}
VIT_SMALL: Sizes = {"hidden_size": 64, "num_layers": 4, "num_heads": 4, "mlp_dim": 128, "patch_size": 4}
VIT_BASE: Sizes = {"hidden_size": 128, "num_layers": 6, "num_heads": 4, "mlp_dim": 256, "patch_size": 4}
CNN_TINY: Sizes = {"channels": 16, "num_layers": 2, "hidden_size": 32}
CNN_SMALL: Sizes = {"channels": 32, "num_layers": 3, "hidden_size": 128}
MLP_TINY: Sizes = {"hidden_size": 64, "num_layers": 2}
MLP_SMALL: Sizes = {"hidden_size": 256, "num_layers": 2}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    build: Callable[[PlanBuilder], None]


def _every_copy(b: PlanBuilder, parent: str) -> None:
    """Every relation without training: fp16, int8 (safetensors and ONNX), 4-bit, pruned, two duplicates."""
    for recipe in ("fp16", "int8", "int8-onnx", "q4", "pytorch", "onnx"):
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
    pre: dict[str, Any] = dict(vary=False, lr=0.05, batch_size=32, n_per_class=20)
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


VIT_MID: Sizes = {"hidden_size": 48, "num_layers": 4, "num_heads": 4, "mlp_dim": 96, "patch_size": 4}
MLP_LARGE: Sizes = {"hidden_size": 1024, "num_layers": 2}
SPLITS = ("train", "train", "val", "train", "test")  # family i gets SPLITS[i % 5]: 60% / 20% / 20%


def _pretrain(b: PlanBuilder, steps: int, optimizer: str = "adam") -> TrainSpec:
    lr = 2e-3 if optimizer == "adam" else 0.05
    return b.train_spec(steps, vary=False, lr=lr, optimizer=optimizer, batch_size=32, n_per_class=30)


def vthr(b: PlanBuilder, lora_ranks: tuple[int, ...] = ()) -> None:
    """MoTHer's VTHR layout: 5 ViT trees × (root, 4 children, 16 grandchildren), fine-tuned (or LoRA)."""
    for t in range(5):
        root = b.root("ancestree-vit", "shapes", 24, _pretrain(b, 400), split=SPLITS[t], **VIT_MID)
        for _ in range(4):
            child = _vthr_child(b, root, lora_ranks)
            for _ in range(4):
                _vthr_child(b, child, lora_ranks)


def _vthr_child(b: PlanBuilder, parent: str, lora_ranks: tuple[int, ...]) -> str:
    if not lora_ranks:
        return b.finetune(parent, b.train_spec(150))
    rank = int(b.rng.choice(lora_ranks))
    spec = b.train_spec(150, optimizer="adam", lr=float(b.rng.choice([1e-3, 3e-3])), weight_decay=0.0)
    return b.lora(parent, spec, rank, keep_adapter=False)[0]


def _grow(b: PlanBuilder, root: str, target: int, steps: int) -> None:
    """Grow a random tree of about ``target`` models under ``root`` with every relation kind.

    Parents of training are drawn uniformly from the float models made so far, so trees get deep
    (fine-tunes of fine-tunes) as well as wide; copies (quantized, pruned, duplicates) are leaves.
    """
    floats, count = [root], 1
    children: dict[str, list[str]] = {}
    while count < target:
        parent = floats[int(b.rng.integers(len(floats)))]
        r = b.rng.random()
        made: list[str] = []
        if r < 0.34:
            made = [b.finetune(parent, b.train_spec(steps))]
        elif r < 0.44:  # a fan: one task, a learning-rate sweep
            classes, base = b.classes(parent), b.train_spec(steps)
            made = [b.finetune(parent, replace(base, lr=base.lr * f), classes, fan=i) for i, f in enumerate((0.5, 1, 2))]
            if b.rng.random() < 0.6:  # merge part of the sweep, as model soups do
                made.append(b.merge(made[:2] if b.rng.random() < 0.5 else made, task_arithmetic=bool(b.rng.random() < 0.5)))
        elif r < 0.48:
            made = b.snake(parent, b.train_spec(max(steps // 2, 20)), int(b.rng.integers(3, 5)))
        elif r < 0.62:
            spec = b.train_spec(steps, optimizer="adam", lr=3e-3, weight_decay=0.0)
            made = b.lora(parent, spec, int(b.rng.choice([1, 2, 4, 8, 16])))[-1:]
            count += 1  # the adapter folder
        elif r < 0.76:
            count += bool(b.transform(parent, str(b.rng.choice(["fp16", "int8", "int8-onnx", "q4"]))))
        elif r < 0.83:
            count += bool(b.transform(parent, "prune", sparsity=float(b.rng.choice([0.2, 0.5, 0.8]))))
        elif r < 0.91:
            count += bool(b.transform(parent, str(b.rng.choice(["pytorch", "onnx"]))))
        else:
            siblings = children.get(parent, [])
            if len(siblings) >= 2:
                picked = [siblings[i] for i in sorted(b.rng.choice(len(siblings), size=min(3, len(siblings)), replace=False))]
                made = [b.merge(picked, task_arithmetic=bool(b.rng.random() < 0.5))]
        if made and b.models[made[0]].recipe != "merge":
            children.setdefault(parent, []).append(made[0])
        floats += made
        count += len(made)


def wild(b: PlanBuilder) -> None:
    """A mixed hub: 6 families of 3 architectures and 4 sizes, every relation, snakes, fans, merges."""
    families = [
        ("ancestree-vit", "shapes", 24, VIT_MID, 45, 120),
        ("ancestree-vit", "shapes", 24, VIT_MID, 35, 120),  # same recipe, other seed: unrelated
        ("ancestree-cnn", "shapes", 24, CNN_SMALL, 30, 100),
        ("ancestree-mlp", "digits", 10, MLP_SMALL, 25, 150),
        ("ancestree-vit", "shapes", 24, VIT_BASE, 10, 80),
        ("ancestree-mlp", "digits", 10, MLP_LARGE, 12, 100),
    ]
    for t, (model_type, domain, labels, sizes, target, steps) in enumerate(families):
        root = b.root(model_type, domain, labels, _pretrain(b, 300), split=SPLITS[t % 5], **sizes)
        _grow(b, root, target, steps)
    b.root("ancestree-vit", "shapes", 24, _pretrain(b, 300), **VIT_MID)  # a lone independent training


def lineage(b: PlanBuilder) -> None:
    """Chains of 4 generations below 10 roots (3 families), 4 children per root then 2, 1, 1 per model."""
    families = [("ancestree-mlp", "digits", 10, MLP_SMALL), ("ancestree-cnn", "shapes", 16, CNN_TINY),
                ("ancestree-vit", "shapes", 16, VIT_TINY), ("ancestree-mlp", "shapes", 16, MLP_SMALL)]
    for t in range(10):
        model_type, domain, labels, sizes = families[t % len(families)]
        root = b.root(model_type, domain, labels, _pretrain(b, 300), split=SPLITS[t % 5], **sizes)
        level = [root]
        for fanout in (4, 2, 1, 1):
            level = [b.finetune(p, b.train_spec(80)) for p in level for _ in range(fanout)]


def model_j(b: PlanBuilder, per_root: int = 200, held_out: int = 4) -> None:
    """ProbeX's Model-J: ``per_root`` fine-tunes of each of 3 roots, each on a random half of 32 classes.

    ``held_out`` classes never appear in a train-split fine-tune (val/test ones may use them), for
    zero-shot search; splits are per model (70% / 15% / 15%) within each tree, as tree experts need.
    """
    vocabulary = class_names("shapes", 32)
    hidden = tuple(vocabulary[i] for i in sorted(b.rng.choice(32, size=held_out, replace=False)))
    for model_type, sizes in (("ancestree-vit", VIT_TINY), ("ancestree-cnn", CNN_TINY), ("ancestree-mlp", MLP_SMALL)):
        root = b.root(model_type, "shapes", 32, _pretrain(b, 400), **sizes)
        for i in range(per_root):
            split = "train" if i % 20 < 14 else "val" if i % 20 < 17 else "test"
            classes = b.classes(root, 0.5, exclude=hidden if split == "train" else ())
            b.finetune(root, b.train_spec(80, weight_decay=0.0, label_noise=0.0), classes, split=split)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("micro", "one tiny root, a fine-tune, a LoRA and every copy format (determinism checks)", micro),
        Preset("tiny", "a few dozen tiny models, every relation kind, three families (tests)", tiny),
        Preset("vthr", "MoTHer's layout: 5 ViT trees x (root, 4 children, 16 grandchildren), full fine-tuning", vthr),
        Preset("vthr-lora", "vthr with LoRA fine-tunes of rank 1-16, merged into full weights",
               lambda b: vthr(b, lora_ranks=(1, 2, 4, 8, 16))),
        Preset("wild", "150+ models: 6 families and a lone unrelated model (7 trees), 3 architectures, every relation, snakes, fans, merges", wild),
        Preset("lineage", "10 roots x chains of 4 generations (4, 2, 1, 1 children), splits by family", lineage),
        Preset("model-j", "3 roots x 200 fine-tunes on random halves of 32 named classes, 4 held out", model_j),
    )
}


#: Measured with ``ancestree zoo make OUT --preset NAME --workers 2`` on 2 cores shared with other jobs
#: (load average 5-8, so an idle machine is faster): (size on disk, wall time), 2026-11-23.
MEASURED: dict[str, tuple[str, str]] = {
    "micro": ("0.9 MB", "24 s"),
    "tiny": ("3.3 MB", "25 s"),
    "vthr": ("35 MB", "7.1 min"),
    "vthr-lora": ("35 MB", "4.7 min"),
    "wild": ("154 MB", "1.4 min"),
    "lineage": ("160 MB", "46 s"),
    "model-j": ("242 MB", "4.5 min"),
}


def describe_presets() -> list[dict[str, Any]]:
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
