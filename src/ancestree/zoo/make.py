"""Make a zoo: run a plan's jobs in dependency order on N worker processes, then write ``truth.json``.

* Resumable: each model folder is built in ``OUT/.tmp-<id>`` and renamed into place when complete, with
  its record in ``OUT/.zoo/<id>.json``; a model whose folder exists is never made again.
* Deterministic: every job seeds torch from (zoo seed, job key) and runs single-threaded, and no file
  holds a date, so the same seed gives byte-identical files whatever the number of workers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, replace
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from ancestree.atomic import check_writable, write_text
from ancestree.errors import DAMAGED_FILE, BadInputError
from ancestree.io.base import relation_fields
from ancestree.zoo import recipes, save
from ancestree.zoo.architectures import load_state
from ancestree.zoo.data import seed_of
from ancestree.zoo.plan import Job, ModelSpec, Plan
from ancestree.zoo.presets import build_plan

RECORDS = ".zoo"


# -- one job ------------------------------------------------------------------------------------------
def _is_done(out: Path, model_id: str) -> bool:
    return (out / model_id).is_dir() and (out / RECORDS / f"{model_id}.json").is_file()


def _card(plan: Plan, spec: ModelSpec) -> dict[str, Any]:
    """Model-card front matter: ``base_model`` only for the declared fraction of non-root models."""
    card: dict[str, Any] = {}
    if spec.key in plan.declared:
        parents = [plan.ids[p] for p in spec.parents]
        card["base_model"] = parents if len(parents) > 1 else parents[0]
        assert spec.relation is not None  # a declared model has parents: its recipe is no pretraining
        card.update(relation_fields(spec.relation))
    card["library_name"] = "ancestree"
    card["tags"] = ["ancestree-zoo", "image-classification", spec.config["model_type"]]
    card["datasets"] = [f"ancestree/{spec.domain}"]
    return card


@dataclass(frozen=True)
class _Context:
    """What a recipe needs to know about its job."""

    job: Job
    plan: Plan
    out: Path

    @property
    def seed(self) -> int:
        return seed_of(self.plan.seed, self.job.key)  # from the job key only: independent of scheduling

    @property
    def first(self) -> ModelSpec:
        return self.plan.models[self.job.outputs[0]]

    @property
    def spec(self) -> recipes.TrainSpec:
        return recipes.TrainSpec(**self.job.params["spec"])

    def state(self, i: int = 0) -> recipes.State:
        return load_state(self.out / self.plan.ids[self.job.inputs[i]])


Outputs = dict[str, dict[str, Any]]  # model key -> {"state" | "adapter": payload, "recipe": extra truth}

#: Times a diverged run is tried again at half its learning rate before the zoo fails.
RETRIES = 4


def _stable(run: Callable[[recipes.TrainSpec], Any], spec: recipes.TrainSpec) -> tuple[Any, dict[str, float]]:
    """``run(spec)``, again at half the learning rate while training diverges (a sweep's highest rate on a
    noisy task can): a zoo of NaN models teaches nothing. Returns the result and, when the rate was lowered,
    ``{"lr_used": rate}`` for the model's recipe in ``truth.json``."""
    for attempt in range(RETRIES):
        try:
            return run(spec), ({"lr_used": spec.lr} if attempt else {})
        except recipes.Diverged:
            spec = replace(spec, lr=spec.lr / 2)
    return run(spec), {"lr_used": spec.lr}  # a last try; its Diverged names the rate


def _do_pretrain(c: _Context) -> Outputs:
    (state, acc), used = _stable(lambda spec: recipes.pretrain(c.first.config, c.first.domain, spec, c.seed), c.spec)
    return {c.first.key: {"state": state, "recipe": {"accuracy": round(acc, 4), **used}}}


def _do_finetune(c: _Context) -> Outputs:
    """A fine-tune, or a snake: one run of ``n × steps`` saved every ``steps``. In a zoo released in bfloat16
    the run goes on from its float32 state after each save (as training keeps its master weights), so a later
    checkpoint's ``start_sha256`` is of that state, not of the previous checkpoint as released."""
    spec, n = c.spec, c.job.params.get("checkpoints", 1)
    run = recipes.TrainSpec(**{**spec.to_dict(), "steps": spec.steps * n})
    marks = tuple(spec.steps * (i + 1) for i in range(n - 1))
    parent = c.state()
    (start, states, acc), used = _stable(
        lambda spec: recipes.finetune(c.first.config, parent, c.first.domain, list(c.first.classes), spec, c.seed, marks), run)
    starts = [start] + [recipes.state_hash(s) for s in states[:-1]]
    outputs: Outputs = {}
    for i, (key, state, start_hash) in enumerate(zip(c.job.outputs, states, starts)):
        extra = {"start_sha256": start_hash, "steps_done": spec.steps * (i + 1), **used}
        if i == n - 1:
            extra["accuracy"] = round(acc, 4)
        outputs[key] = {"state": state, "recipe": extra}
    return outputs


def _do_lora(c: _Context) -> Outputs:
    base_id = c.plan.ids[c.job.inputs[0]]
    parent = c.state()
    (start, config, adapter, merged, acc), used = _stable(lambda spec: recipes.lora(
        c.first.config, parent, c.first.domain, list(c.first.classes), spec, c.seed, c.job.params["rank"], base_id), c.spec)
    extra = {"start_sha256": start, "accuracy": round(acc, 4), **used}
    return {
        key: {"adapter": (config, adapter), "recipe": extra}
        if c.plan.models[key].recipe == "lora-adapter" else {"state": merged, "recipe": extra}
        for key in c.job.outputs
    }


def _do_merge(c: _Context) -> Outputs:
    weights, task_arithmetic = c.job.params["weights"], c.job.params["method"] == "task_arithmetic"
    states = [c.state(i) for i in range(len(weights))]
    base = c.state(len(weights)) if task_arithmetic else None  # the siblings' common parent
    extra = {"base": c.plan.ids[c.job.inputs[-1]]} if task_arithmetic else {}
    return {c.first.key: {"state": recipes.merge(states, weights, base), "recipe": extra}}


def _do_copy(c: _Context) -> Outputs:
    """Copies without training; the format change itself (GGUF, ONNX, .bin) happens when writing."""
    parent, kind = c.state(), c.job.kind
    if kind == "fp16":
        parent = recipes.to_fp16(parent)
    elif kind == "int8":
        parent = recipes.quantize_int8(parent)
    elif kind == "prune":
        parent = recipes.prune(parent, c.job.params["sparsity"])
    return {c.first.key: {"state": parent, "recipe": {}}}


_RECIPES = {"pretrain": _do_pretrain, "finetune": _do_finetune, "snake": _do_finetune, "lora": _do_lora,
            "merge": _do_merge}


#: Recipes whose weights are stored in the zoo's release dtype. The other copies have a storage of their own
#: (float16, int8, 4-bit, ONNX's float32) and are made from the parent as released.
RELEASED = frozenset({"pretrain", "finetune", "snake", "lora-adapter", "lora-merged", "merge", "prune", "pytorch"})


def _write_model(folder: Path, plan: Plan, spec: ModelSpec, result: dict[str, Any]) -> int:
    """Write one model folder; return its parameter count (learned elements, quantized ones counted once)."""
    model_id = plan.ids[spec.key]
    dtype = plan.dtype if spec.recipe in RELEASED else "float32"
    if spec.recipe == "lora-adapter":
        adapter_config, adapter_state = result["adapter"]
        adapter_state = recipes.release(adapter_state, dtype)
        save.write_adapter(folder, adapter_config, adapter_state)
        parameters = sum(v.numel() for v in adapter_state.values())
    else:
        save.write_json(folder / "config.json", spec.config)
        state = recipes.release(result["state"], dtype)
        parameters = _count(state, spec.recipe)
        if spec.recipe == "q4":
            save.write_gguf(folder, state, spec.config["model_type"], model_id)
        elif spec.recipe == "pytorch":
            save.write_pytorch(folder, state)
        elif spec.recipe == "onnx":
            save.write_onnx(folder, spec.config, state)
        elif spec.recipe == "int8-onnx":
            save.write_onnx_int8(folder, spec.config, state)
        else:
            save.write_safetensors(folder, state)
    about = f"An {spec.config['model_type']} model ({spec.recipe}) from a synthetic ancestree zoo."
    save.write_card(folder, model_id, _card(plan, spec), list(spec.classes), about)
    return parameters


def _count(state: recipes.State, recipe: str) -> int:
    if recipe == "int8":  # scales are not parameters of their own
        return sum(v.numel() for k, v in state.items() if not (k.endswith("_scale") and k[:-6] in state))
    return sum(v.numel() for v in state.values())


def _record(plan: Plan, spec: ModelSpec, job: Job, parameters: int, extra: dict[str, Any]) -> dict[str, Any]:
    recipe = {"kind": spec.recipe, "domain": spec.domain, **job.params, **extra}
    return {
        "id": plan.ids[spec.key],
        "key": spec.key,
        "format": spec.format,
        "parameters": parameters,
        "tree": spec.tree,
        "classes": list(spec.classes),
        "split": spec.split,
        "generation": spec.generation,
        "architecture": spec.config["model_type"],
        "declared": spec.key in plan.declared,
        "recipe": recipe,
    }


def run_job(job: Job, plan: Plan, out: Path) -> list[str]:
    """Make the job's model folders that do not exist yet; return their ids."""
    todo = [k for k in job.outputs if not _is_done(out, plan.ids[k])]
    if not todo:
        return []
    results = _RECIPES.get(job.kind, _do_copy)(_Context(job, plan, out))
    for key in todo:
        spec, model_id = plan.models[key], plan.ids[key]
        tmp = out / f".tmp-{model_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        parameters = _write_model(tmp, plan, spec, results[key])
        record = _record(plan, spec, job, parameters, results[key]["recipe"])
        write_text(out / RECORDS / f"{model_id}.json", json.dumps(record, indent=2) + "\n")
        shutil.rmtree(out / model_id, ignore_errors=True)  # a folder without its record is unfinished
        tmp.rename(out / model_id)
    return [plan.ids[k] for k in todo]


_WORKER: dict[str, Any] = {}


def _worker_init(plan: Plan, out: Path) -> None:
    """Each worker receives the plan once (not with every job) and runs on one thread."""
    torch.set_num_threads(1)  # determinism and fair sharing: one core per worker
    _WORKER.update(plan=plan, out=out)


def _worker_run(key: str) -> list[str]:
    return run_job(_WORKER["plan"].jobs[key], _WORKER["plan"], _WORKER["out"])


# -- scheduling ---------------------------------------------------------------------------------------
def run_plan(plan: Plan, out: Path, workers: int = 1, progress: bool = True) -> int:
    """Run every unfinished job of ``plan`` into ``out``, parents before children; return the jobs run."""
    from tqdm.auto import tqdm

    pending = {k: j for k, j in plan.jobs.items() if not all(_is_done(out, plan.ids[o]) for o in j.outputs)}
    bar = tqdm(total=len(plan.models), initial=len(plan.models) - sum(len(j.outputs) for j in pending.values()),
               unit="model", desc=f"zoo {plan.preset}", disable=not progress)
    waiting = {k: plan.job_dependencies(j) & set(pending) for k, j in pending.items()}
    ran = 0
    try:
        if workers <= 1:
            ran = _run_serial(plan, out, pending, waiting, bar)
        else:
            ran = _run_parallel(plan, out, pending, waiting, bar, workers)
    finally:
        bar.close()
    return ran


def _ready(waiting: dict[str, set[str]]) -> list[str]:
    return sorted(k for k, deps in waiting.items() if not deps)


def _finish(key: str, waiting: dict[str, set[str]]) -> None:
    for deps in waiting.values():
        deps.discard(key)


def _run_serial(plan: Plan, out: Path, pending: dict[str, Job], waiting: dict[str, set[str]], bar) -> int:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ran = 0
        while waiting:
            key = _ready(waiting)[0]
            del waiting[key]
            bar.update(len(run_job(pending[key], plan, out)))
            _finish(key, waiting)
            ran += 1
        return ran
    finally:
        torch.set_num_threads(threads)


def _run_parallel(plan: Plan, out: Path, pending: dict[str, Job], waiting: dict[str, set[str]], bar, workers: int) -> int:
    # spawn, not fork: forking a process whose OpenMP pool is already running can deadlock
    context = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(plan, out)) as pool:
        running: dict[Future, str] = {}
        ran = 0
        while waiting or running:
            for key in _ready(waiting):
                del waiting[key]
                running[pool.submit(_worker_run, key)] = key
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key = running.pop(future)
                bar.update(len(future.result()))
                _finish(key, waiting)
                ran += 1
        return ran


# -- the zoo ------------------------------------------------------------------------------------------
#: Copies made without training: the same recipe on the same parent writes the same weights.
DETERMINISTIC_COPIES = frozenset({"fp16", "int8", "int8-onnx", "q4", "prune", "pytorch", "onnx"})


def repeated_copies(plan: Plan) -> dict[str, str]:
    """Copies identical to an earlier copy (same parent, recipe and parameters) -> that earlier copy.

    A random hub can draw the same copy of one parent twice; those two files hold the same weights, so
    the truth calls the second a ``duplicate`` of the first rather than a second quantized/pruned child.
    """
    first: dict[str, str] = {}
    repeats: dict[str, str] = {}
    for key, spec in plan.models.items():
        if spec.recipe not in DETERMINISTIC_COPIES:
            continue
        job = plan.jobs[spec.job]
        signature = json.dumps([spec.parents, spec.recipe, job.params], sort_keys=True)
        repeats.update({key: first[signature]} if signature in first else {})
        first.setdefault(signature, key)
    return repeats


def truth(plan: Plan, out: Path) -> dict[str, Any]:
    """``truth.json``: the contract's ``tree --format json`` schema, plus classes, split and recipes."""
    records = [_read_record(out / RECORDS / f"{plan.ids[k]}.json") for k in plan.models]
    repeats = repeated_copies(plan)
    edges = [
        {"parent": plan.ids[p], "child": plan.ids[spec.key], "relation": spec.relation, "confidence": 1.0}
        for spec in plan.models.values()
        if spec.key not in repeats
        for p in spec.parents
    ]
    edges += [{"parent": plan.ids[first], "child": plan.ids[key], "relation": "duplicate", "confidence": 1.0}
              for key, first in repeats.items()]
    released = {} if plan.dtype == "float32" else {"dtype": plan.dtype}
    return {
        "preset": plan.preset,
        "seed": plan.seed,
        **released,
        "models": sorted(records, key=lambda r: r["id"]),
        "edges": sorted(edges, key=lambda e: (e["child"], e["parent"])),
    }


def _read_record(path: Path, remedy: str = "delete it and the model folder of the same name to make that model "
                                           "again") -> Any:
    """A record of the zoo being made, or :class:`BadInputError` naming it when it is damaged."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except DAMAGED_FILE as exc:
        raise BadInputError(path, f"damaged record of an unfinished zoo ({exc.__class__.__name__}); {remedy}") from None


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into a folder made with another preset, seed or declared fraction."""
    path = out / RECORDS / "settings.json"
    if path.is_file():
        previous = _read_record(path, "make the zoo again in an empty folder")
        if previous != settings:
            raise BadInputError(out, f"holds a zoo made with {previous}, not {settings}; use an empty folder")
    else:
        write_text(path, json.dumps(settings, sort_keys=True) + "\n")


def is_zoo(folder: Path) -> bool:
    """Whether ``folder`` is a zoo: one being made (its settings record) or a finished one (a ``truth.json``
    with the ``preset`` a zoo's truth carries, so that any other ground-truth file does not count)."""
    if (folder / RECORDS / "settings.json").is_file():
        return True
    try:
        return "preset" in json.loads((folder / "truth.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        return False


def _check_not_nested(out: Path) -> None:
    """Refuse a zoo inside another: scanning the outer zoo would find the inner zoo's models too, which its
    truth does not list and whose cards declare parents of the same names (``m0000``...): false conflicts."""
    outer = next((folder for folder in out.resolve().parents if is_zoo(folder)), None)
    if outer is not None:
        raise BadInputError(out, f"is inside the zoo {outer}; a zoo within a zoo is scanned as part of the outer one: "
                                 "give a folder outside it")


def make_zoo(
    out: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    workers: int = 1,
    declare_fraction: float = 0.5,
    progress: bool = False,
    dtype: str = "float32",
) -> Path:
    """Make (or finish) the zoo ``preset`` in ``out`` and return the path of its ``truth.json``.

    ``dtype`` is the float dtype the trained models are released in (``"bfloat16"``: as most hub models
    are); they train in float32 from their parent as released, and copies are made from it.
    """
    if not 0.0 <= declare_fraction <= 1.0:
        raise BadInputError(None, f"--declare-fraction must be between 0 and 1, got {declare_fraction}")
    if dtype not in recipes.RELEASE_DTYPES:
        raise BadInputError(None, f"--dtype must be one of {', '.join(recipes.RELEASE_DTYPES)}, got {dtype!r}")
    if not str(out).strip():
        raise BadInputError(None, "the zoo needs a folder name")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInputError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / RECORDS / "settings.json").is_file():
        # only an empty folder or one of our own (interrupted) zoos: never write over someone's files
        raise BadInputError(out, "is not empty and holds no ancestree zoo; give a new or empty folder")
    _check_not_nested(out)
    plan = replace(build_plan(preset, seed, declare_fraction), dtype=dtype)
    check_writable(out / RECORDS / "settings.json")  # a read-only place: said now, in one line
    out.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {"preset": preset, "seed": seed, "declare_fraction": declare_fraction}
    _check_settings(out, settings if dtype == "float32" else {**settings, "dtype": dtype})
    for leftover in out.glob(".tmp-*"):  # an interrupted run's half-built folders
        shutil.rmtree(leftover, ignore_errors=True)
    run_plan(plan, out, workers, progress)
    target = out / "truth.json"
    write_text(target, json.dumps(truth(plan, out), indent=2) + "\n")
    return target


__all__ = ["make_zoo", "run_job", "run_plan", "truth"]
