"""A zoo's plan: every model to make, how (recipe and hyper-parameters), from which parents, in which jobs.

Presets describe a zoo by calling :class:`PlanBuilder` methods (``root``, ``finetune``, ``snake``,
``lora``, ``quantize``, ``prune``, ``merge``, ``duplicate``); the builder records the ground truth
(parents, relation, classes, tree, split, generation) of each model as it goes and groups models into
jobs (a snake's checkpoints come from one run; a LoRA run gives both the adapter and the merged model).
Every random choice comes from the zoo seed, so a plan is a pure function of (preset, seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ancestree.zoo.architectures import make_config
from ancestree.zoo.data import class_names, seed_of
from ancestree.zoo.recipes import TrainSpec

#: Relation of each recipe's output to its parent(s), as ``tree``'s JSON names them.
RELATION = {
    "pretrain": None,
    "finetune": "finetune",
    "snake": "finetune",
    "lora-adapter": "adapter",
    "lora-merged": "adapter",
    "fp16": "quantized",
    "int8": "quantized",
    "int8-onnx": "quantized",
    "q4": "quantized",
    "prune": "pruned",
    "merge": "merge",
    "pytorch": "duplicate",
    "onnx": "duplicate",
}

#: Stored format of each recipe's output.
FORMAT = {"lora-adapter": "peft", "q4": "gguf", "pytorch": "pytorch", "onnx": "onnx", "int8-onnx": "onnx"}


@dataclass(frozen=True)
class ModelSpec:
    """One planned model and its ground truth."""

    key: str
    recipe: str
    parents: tuple[str, ...]
    config: dict[str, Any]
    domain: str
    classes: tuple[str, ...]
    tree: int
    generation: int
    split: str
    job: str

    @property
    def relation(self) -> str | None:
        return RELATION[self.recipe]

    @property
    def format(self) -> str:
        return FORMAT.get(self.recipe, "safetensors")


@dataclass(frozen=True)
class Job:
    """One unit of work: reads the weights of ``inputs``, writes the model folders of ``outputs``."""

    key: str
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    preset: str
    seed: int
    models: dict[str, ModelSpec]
    jobs: dict[str, Job]
    ids: dict[str, str] = field(default_factory=dict)
    declared: frozenset[str] = frozenset()
    #: The float dtype trained models are released in (their files; training itself runs in float32).
    dtype: str = "float32"

    def producer(self, model_key: str) -> str:
        return self.models[model_key].job

    def job_dependencies(self, job: Job) -> set[str]:
        return {self.producer(k) for k in job.inputs}


class PlanBuilder:
    """Records models and jobs; hyper-parameters are drawn from ``rng`` (seeded by the zoo seed)."""

    def __init__(self, preset: str, seed: int) -> None:
        self.preset, self.seed = preset, seed
        self.rng = np.random.default_rng(seed_of("plan", preset, seed))
        self.models: dict[str, ModelSpec] = {}
        self.jobs: dict[str, Job] = {}
        self._trees = 0
        self._counters: dict[tuple[str, str], int] = {}

    # -- bookkeeping ---------------------------------------------------------------------------------
    def _add(self, job: Job, specs: list[ModelSpec]) -> None:
        for key in (job.key, *job.outputs):
            if key in self.jobs or key in self.models:
                raise ValueError(f"duplicate plan key {key!r}")
        self.jobs[job.key] = job
        for spec in specs:
            self.models[spec.key] = spec

    def _child(self, parent: str, key: str, recipe: str, job: str, **changes: Any) -> ModelSpec:
        p = self.models[parent]
        return replace(p, key=key, recipe=recipe, parents=(parent,), generation=p.generation + 1, job=job, **changes)

    def _key(self, parent: str, tag: str) -> str:
        n = self._counters.get((parent, tag), 0)
        self._counters[(parent, tag)] = n + 1
        return f"{parent}/{tag}{n}"

    # -- hyper-parameters ----------------------------------------------------------------------------
    def classes(self, parent: str, fraction: float | None = None, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A random subset of the tree's classes (``fraction`` of them; random in [0.3, 0.8] when None)."""
        p = self.models[parent]
        pool = [c for c in class_names(p.domain, p.config["num_labels"]) if c not in exclude]
        fraction = self.rng.uniform(0.3, 0.8) if fraction is None else fraction
        n = max(2, int(round(fraction * p.config["num_labels"])))
        picked = self.rng.choice(len(pool), size=min(n, len(pool)), replace=False)
        return tuple(pool[i] for i in sorted(picked))

    def train_spec(self, steps: int, vary: bool = True, **fixed: Any) -> TrainSpec:
        """Random fine-tuning hyper-parameters around ``steps``: optimizer, lr, weight decay, noise, data size.

        The spread (weight decay up to 0.05, label noise up to 30%, ×0.5–2 length) makes drift traps:
        fine-tunes that drift in shared directions can end nearer their cousins than their parent.
        """
        if not vary:
            return TrainSpec(steps=steps, **fixed)
        optimizer = str(self.rng.choice(["sgd", "sgd", "adam", "adamw"]))
        lr = float(np.exp(self.rng.uniform(np.log(0.005), np.log(0.05)))) if optimizer == "sgd" else float(
            np.exp(self.rng.uniform(np.log(3e-4), np.log(3e-3)))
        )
        values: dict[str, Any] = {
            "steps": int(steps * self.rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])),
            "lr": round(lr, 6),
            "optimizer": optimizer,
            "weight_decay": float(self.rng.choice([0.0, 1e-4, 1e-3, 1e-2, 5e-2])),
            "label_noise": float(self.rng.choice([0.0, 0.0, 0.1, 0.3])),
            "n_per_class": int(self.rng.choice([10, 20, 40])),
            "batch_size": 32,
        }
        values.update(fixed)
        return TrainSpec(**values)

    # -- recipes -------------------------------------------------------------------------------------
    def root(self, model_type: str, domain: str, num_labels: int, spec: TrainSpec, split: str = "train",
             **sizes: int) -> str:
        tree = self._trees
        self._trees += 1
        key = f"t{tree}"
        config = make_config(model_type, num_labels, **sizes)
        model = ModelSpec(key, "pretrain", (), config, domain, tuple(class_names(domain, num_labels)), tree, 0, split, key)
        self._add(Job(key, "pretrain", (), (key,), {"spec": spec.to_dict()}), [model])
        return key

    def finetune(self, parent: str, spec: TrainSpec, classes: tuple[str, ...] | None = None,
                 split: str | None = None, **notes: Any) -> str:
        """Full fine-tuning of ``parent``; ``notes`` (e.g. ``fan=0``) are recorded in the recipe."""
        key = self._key(parent, "ft")
        classes = classes or self.classes(parent)
        model = self._child(parent, key, "finetune", key, classes=classes, split=split or self.models[parent].split)
        self._add(Job(key, "finetune", (parent,), (key,), {"spec": spec.to_dict(), **notes}), [model])
        return key

    def snake(self, parent: str, spec: TrainSpec, checkpoints: int) -> list[str]:
        """``checkpoints`` successive checkpoints of one run, each the parent of the next."""
        job = self._key(parent, "run")
        classes = self.classes(parent)
        keys = [f"{job}/ckpt{i + 1}" for i in range(checkpoints)]
        base = self.models[parent]
        chain = [
            replace(self._child(parent, key, "snake", job, classes=classes), parents=(previous,),
                    generation=base.generation + 1 + i)
            for i, (key, previous) in enumerate(zip(keys, [parent, *keys[:-1]]))
        ]
        self._add(Job(job, "snake", (parent,), tuple(keys), {"spec": spec.to_dict(), "checkpoints": checkpoints}), chain)
        return keys

    def lora(self, parent: str, spec: TrainSpec, rank: int, classes: tuple[str, ...] | None = None,
             keep_adapter: bool = True) -> list[str]:
        """A LoRA fine-tune saved as a PEFT adapter folder (unless not ``keep_adapter``) and merged into full
        weights; returns ``[adapter, merged]`` or ``[merged]``."""
        job = self._key(parent, "lora")
        classes = classes or self.classes(parent)
        specs = [self._child(parent, f"{job}/{part}", f"lora-{part}", job, classes=classes)
                 for part in (("adapter", "merged") if keep_adapter else ("merged",))]
        outputs = tuple(s.key for s in specs)
        self._add(Job(job, "lora", (parent,), outputs, {"spec": spec.to_dict(), "rank": rank}), specs)
        return list(outputs)

    def transform(self, parent: str, recipe: str, **params: Any) -> str:
        """A copy of ``parent`` without training: ``fp16``, ``int8``, ``int8-onnx``, ``q4``, ``prune``, ``pytorch``,
        ``onnx``."""
        key = self._key(parent, recipe)
        model = self._child(parent, key, recipe, key)
        self._add(Job(key, recipe, (parent,), (key,), params), [model])
        return key

    def merge(self, parents: list[str], weights: list[float] | None = None, task_arithmetic: bool = False) -> str:
        """Weight average of ``parents`` (siblings), or task arithmetic on their common parent."""
        specs = [self.models[p] for p in parents]
        common = specs[0].parents[0]
        if any(s.parents != (common,) for s in specs):
            raise ValueError("merge parents must be siblings")
        key = self._key(common, "merge")
        if weights is None:
            weights = [1.0 / len(parents)] * len(parents) if not task_arithmetic else [0.7] * len(parents)
        classes = tuple(sorted({c for s in specs for c in s.classes}))
        model = replace(specs[0], key=key, recipe="merge", parents=tuple(parents), classes=classes, job=key,
                        generation=max(s.generation for s in specs) + 1)
        inputs = (*parents, common) if task_arithmetic else tuple(parents)
        params = {"weights": [float(w) for w in weights], "method": "task_arithmetic" if task_arithmetic else "average"}
        self._add(Job(key, "merge", inputs, (key,), params), [model])
        return key

    # -- finishing -----------------------------------------------------------------------------------
    def build(self, declare_fraction: float) -> Plan:
        """The plan with opaque ids (``m0000``…, shuffled so neither names nor order leak the lineage)."""
        keys = list(self.models)
        order = np.random.default_rng(seed_of("ids", self.preset, self.seed)).permutation(len(keys))
        width = max(4, len(str(len(keys))))
        ids = {key: f"m{int(i):0{width}d}" for key, i in zip(keys, order)}
        children = sorted((k for k in keys if self.models[k].parents), key=lambda k: seed_of("declare", self.seed, k))
        declared = frozenset(children[: int(round(declare_fraction * len(children)))])
        return Plan(self.preset, self.seed, dict(self.models), dict(self.jobs), ids, declared)
