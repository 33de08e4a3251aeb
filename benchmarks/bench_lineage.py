"""Parent detection on the ``lineage`` zoo: every method, 1–3 generations apart, "none of these", robustness.

    python benchmarks/bench_lineage.py [ZOO] [--out results.json]

ZOO defaults to /work/zoos/lineage (made with ``ancestree zoo make ZOO --preset lineage`` when missing).
Everything learned (weights coefficients and none score, α and calibrations of the linearised methods, the
detector) is fitted on tasks whose *children and candidates* belong to the zoo's train families; accuracy
is measured on children of the val and test families, never seen in this fitting. (The shipped tree
direction model behind the recovered-graph evidence was fitted on the whole zoo, val and test families
included; refitted without them, the weights row is the same: README.) Prints Markdown tables.

Tasks (:func:`ancestree.lineage.tasks.make_tasks`): the ancestor k generations up plus 9 distractors of the
same architecture, first from the ancestor's own generation (its siblings and other families' models at
that level, the paper's protocol), then, when a generation has too few models (the roots), from other
generations — which can include the child's uncles and cousins. Accuracy is also split by whether a task
holds such a relative of another generation ("with relatives") or not ("paper protocol").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from ancestree.lineage.calibrate import fit_calibration
from ancestree.lineage.detector import DetectorRanker, fit_on_zoo, save_detector
from ancestree.lineage.linearized import FeatureRanker, LinearizedRanker, similarity
from ancestree.lineage.result import Calibration, CandidateScore, make_ranking
from ancestree.lineage.tasks import Task, Zoo, make_tasks
from ancestree.lineage.weights import WeightsRanker

ALPHAS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5)
METRICS = ("l1", "l2", "cka")


def subsample(tasks: list[Task], n: int, seed: int = 0) -> list[Task]:
    if n <= 0 or len(tasks) <= n:
        return tasks
    return [tasks[i] for i in sorted(np.random.default_rng(seed).choice(len(tasks), n, replace=False))]


def has_relatives(zoo: Zoo, task: Task) -> bool:
    """Does the task hold a non-ancestral relative of the child from another generation than the target's?"""
    if task.truth is None:
        return False
    target = zoo.models[Path(task.truth).name]
    return any(zoo.models[Path(c).name]["tree"] == target["tree"] and zoo.models[Path(c).name]["generation"] != target["generation"]
               for c in task.candidates)


# -- weights ----------------------------------------------------------------------------------------------
def fit_weights(train: list[Task]) -> WeightsRanker:
    ranker = WeightsRanker()
    data = []
    for t in train:
        _, scored, _ = ranker.score_candidates(t.child, list(t.candidates))
        ids = [c.candidate for c in scored]
        data.append(([c.evidence for c in scored], ids.index(t.truth) if t.truth in ids else None))
    return ranker.fit(data)


# -- features (linearised and baselines share one pass per task while fitting and evaluating) ----------------
def feature_scores(task: Task) -> tuple[list[str], dict[tuple[str, float], list[float]]]:
    """Candidate ids and, per (metric, α), their scores (α = 0 is the baseline: no linearisation)."""
    ranker = LinearizedRanker("l1")
    ranker.alphas = [0.0, *ALPHAS]
    _, f_c, feats, _ = ranker.features_by_alpha(task.child, list(task.candidates))
    ids = list(feats)
    return ids, {(m, a): [similarity(m, f_c[i], feats[i][a]) for i in ids] for m in METRICS for a in ranker.alphas}


def fit_features(train: list[Task]) -> dict[str, tuple[float, Calibration]]:
    """Per method name: (α, calibration); α by top-1 on the train tasks (ties: the smallest α)."""
    per: dict[tuple[str, float], list] = defaultdict(list)
    for t in train:
        ids, scores = feature_scores(t)
        for key, s in scores.items():
            per[key].append((s, ids.index(t.truth) if t.truth in ids else None))
    chosen = {}
    for m in METRICS:
        chosen[f"baseline-{m}"] = (0.0, fit_calibration(per[(m, 0.0)]))

        def top1(a: float) -> float:
            return float(np.mean([np.argmax(s) == t for s, t in per[(m, a)] if t is not None]))

        best = max(ALPHAS, key=top1)
        chosen[f"linearized-{m}"] = (best, fit_calibration(per[(m, best)]))
    return chosen


def feature_ranker(name: str, alpha: float, cal: Calibration):
    kind, metric = name.split("-")
    if kind == "baseline":
        return FeatureRanker(metric, calibration=cal)
    return LinearizedRanker(metric, alpha=alpha, calibration=cal)


# -- evaluation ---------------------------------------------------------------------------------------------
def evaluate(tasks: list[Task], weights: WeightsRanker, feats: dict, detector: DetectorRanker | None) -> dict[str, list]:
    """Per method: list of (task, ranking)."""
    out: dict[str, list] = defaultdict(list)
    for n, t in enumerate(tasks):
        out["weights"].append((t, weights.rank(t.child, list(t.candidates))))
        ids, scores = feature_scores(t)
        for name, (alpha, cal) in feats.items():
            metric = name.split("-")[1]
            scored = [CandidateScore(i, s) for i, s in zip(ids, scores[(metric, alpha)])]
            out[name].append((t, make_ranking(t.child, name, scored, cal)))
        if detector is not None:
            out["detector"].append((t, detector.rank(t.child, list(t.candidates))))
        if (n + 1) % 50 == 0:
            print(f"  evaluated {n + 1}/{len(tasks)}", file=sys.stderr, flush=True)
    return out


def none_auroc(results: list) -> float | None:
    """How well ``p_none`` tells tasks without an ancestor among the candidates from tasks with one."""
    labels = [t.truth is None for t, _ in results]
    p_none = [r.p_none for _, r in results]
    return float(roc_auc_score(labels, p_none)) if 0 < sum(labels) < len(labels) else None


def summarise(zoo: Zoo, results: list) -> dict:
    row: dict = {}
    for k in (1, 2, 3):
        hits = [r.ranking[0].candidate == t.truth for t, r in results if t.truth is not None and t.generations == k and r.ranking]
        row[f"top1_gen{k}"] = float(np.mean(hits)) if hits else None
        row[f"n_gen{k}"] = len(hits)
        for protocol, want in (("paper", False), ("relatives", True)):
            sub = [r.ranking[0].candidate == t.truth for t, r in results
                   if t.truth is not None and t.generations == k and has_relatives(zoo, t) == want]
            row[f"top1_gen{k}_{protocol}"] = float(np.mean(sub)) if sub else None
            row[f"n_gen{k}_{protocol}"] = len(sub)
    row["none_auroc"] = none_auroc(results)
    for k in (1, 2, 3):  # one level: the ancestor k up present, or removed from a set drawn at its level
        row[f"none_auroc_gen{k}"] = none_auroc([(t, r) for t, r in results if t.generations == k])
    row["decision_accuracy"] = float(np.mean([r.parent == t.truth for t, r in results]))
    row["n_tasks"] = len(results)
    return row


# -- time and memory, one method at a time -------------------------------------------------------------------
def _ranker(spec: dict):
    if spec["kind"] == "weights":
        return WeightsRanker(spec["coef"], Calibration(**spec["calibration"]))
    if spec["kind"] == "detector":
        return DetectorRanker.load(spec["path"])
    return feature_ranker(spec["kind"], spec["alpha"], Calibration(**spec["calibration"]))


def _measure(spec: dict, tasks: list[tuple[str, list[str]]], queue) -> None:
    """In a fresh process: peak RSS after imports, then seconds per ranking and peak RSS while ranking."""
    torch.set_num_threads(1)
    ranker = _ranker(spec)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ranker.rank(*tasks[0])  # warm-up: imports, first fingerprint, module classes
    start = time.perf_counter()
    for child, cands in tasks[1:]:
        ranker.rank(child, cands)
    seconds = (time.perf_counter() - start) / max(len(tasks) - 1, 1)
    queue.put((seconds, base / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def time_and_memory(specs: dict[str, dict], tasks: list[Task]) -> dict[str, dict]:
    """Per method, in its own spawned process: s / child (10 candidates), peak RSS, and the rise over the
    process after imports (what ranking itself needs)."""
    ctx = mp.get_context("spawn")
    plain = [(t.child, list(t.candidates)) for t in tasks]
    out = {}
    for name, spec in specs.items():
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(spec, plain, queue))
        proc.start()
        seconds, base, peak = queue.get()
        proc.join()
        out[name] = {"seconds_per_child": seconds, "peak_rss_mb": peak, "ranking_rss_mb": peak - base}
    return out


# -- robustness -----------------------------------------------------------------------------------------------
def _write(folder: Path, config: dict, state: dict, fmt: str) -> str:
    from ancestree.zoo import save

    folder.mkdir(parents=True, exist_ok=True)
    save.write_json(folder / "config.json", config)
    if fmt == "gguf":
        save.write_gguf(folder, state, config["model_type"], folder.name)
    else:
        save.write_safetensors(folder, state)
    return str(folder)


def _q4_fraction(state: dict) -> float:
    """Share of parameters GGUF Q4_0 actually quantizes (matrices whose rows are a multiple of 32)."""
    total = sum(v.numel() for v in state.values())
    return sum(v.numel() for v in state.values() if v.ndim >= 2 and v.shape[-1] % 32 == 0) / total


def derived_tasks(zoo: Zoo, gen1: list[Task], out: Path, seed: int = 0) -> tuple[list[tuple[str, Task]], dict]:
    """(variant, task) with a changed child: the child of a 1-generation task quantized (int8, fp16, GGUF
    4-bit), magnitude-pruned, or with its hidden units permuted (truth: the task's parent, same candidates);
    and a LoRA fine-tune (merged) of the child, whose truth is the child among 9 models of its generation."""
    from ancestree.lineage.permute import permute_units
    from ancestree.zoo import recipes
    from ancestree.zoo.architectures import load_state
    from ancestree.zoo.data import class_names

    rng = np.random.default_rng(seed)
    made, q4 = [], []
    for n, t in enumerate(gen1):
        cid = Path(t.child).name
        config = json.loads((zoo.root / cid / "config.json").read_text())
        state = load_state(zoo.root / cid)
        variants = {"int8": (recipes.quantize_int8(state), "st"), "fp16": (recipes.to_fp16(state), "st"),
                    "4-bit (GGUF Q4_0)": (state, "gguf"), "pruned 50%": (recipes.prune(state, 0.5), "st")}
        q4.append(_q4_fraction(state))
        if config["model_type"] != "ancestree-vit":  # attention heads are no unit chain: MLP/CNN only
            perm = permute_units({k: v.numpy() for k, v in state.items()}, seed=n)
            variants["units permuted"] = ({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in perm.items()}, "st")
        for name, (st, fmt) in variants.items():
            made.append((name, Task(_write(out / f"{cid}-{len(made)}", config, st, fmt), t.candidates, t.truth, 1, name)))
        domain = zoo.models[cid]["recipe"].get("domain", "shapes")
        classes = class_names(domain, config["num_labels"])[:4]
        spec = recipes.TrainSpec(steps=60, lr=3e-3, optimizer="adam", batch_size=32, n_per_class=10)
        merged = recipes.lora(config, state, domain, classes, spec, 7 + n, 4, cid)[3]
        level = zoo.models[cid]["generation"]
        peers = [zoo.path(o) for o, m in sorted(zoo.models.items()) if o != cid and m["arch_key"] == zoo.models[cid]["arch_key"]
                 and m["generation"] == level]
        cands = [peers[i] for i in rng.permutation(len(peers))[:9]] + [zoo.path(cid)]
        child = _write(out / f"{cid}-lora-{n}", config, merged, "st")
        made.append(("LoRA-merged", Task(child, tuple(cands[i] for i in rng.permutation(len(cands))), zoo.path(cid), 1, "lora")))
    return made, {"q4_quantized_fraction": float(np.mean(q4))}


def robustness(zoo: Zoo, evals: list[Task], rankers: dict, n_children: int) -> tuple[dict, dict]:
    gen1 = [t for t in evals if t.truth is not None and t.generations == 1]
    gen1 = [gen1[i] for i in np.linspace(0, len(gen1) - 1, min(n_children, len(gen1))).astype(int)]
    rows: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as tmp:
        made, info = derived_tasks(zoo, gen1, Path(tmp))
        for variant, task in made:
            for name, ranker in rankers.items():
                r = ranker.rank(task.child, list(task.candidates))
                rows[variant][name].append(bool(r.ranking) and r.ranking[0].candidate == task.truth)
    table = {v: {m: float(np.mean(h)) for m, h in d.items()} | {"n": len(next(iter(d.values())))} for v, d in rows.items()}
    return table, info


# -- tables -------------------------------------------------------------------------------------------------
def pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def tables(summary: dict, robust: dict, costs: dict, train_seconds: float, alphas: dict) -> str:
    lines = ["| method | α | top-1, 1 gen | top-1, 2 gens | top-1, 3 gens | none AUROC | parent-or-none accuracy |",
             "|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        auroc = "–" if row["none_auroc"] is None else f"{row['none_auroc']:.3f}"
        lines.append(f"| {name} | {alphas.get(name, '')} | {pct(row['top1_gen1'])} | {pct(row['top1_gen2'])} | "
                     f"{pct(row['top1_gen3'])} | {auroc} | {pct(row['decision_accuracy'])} |")
    lines += ["", "None AUROC by level (tasks of one level only: the ancestor k generations up present, or the "
              "candidates drawn at its level with every ancestor removed)", "",
              "| method | 1 gen | 2 gens | 3 gens |", "|---|---|---|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | " + " | ".join("–" if row[f"none_auroc_gen{k}"] is None else f"{row[f'none_auroc_gen{k}']:.3f}"
                                                  for k in (1, 2, 3)) + " |")
    first = next(iter(summary.values()))
    lines += ["", "Top-1 split by protocol (n tasks: "
              + ", ".join(f"{k} gen {first[f'n_gen{k}_paper']} paper / {first[f'n_gen{k}_relatives']} with relatives" for k in (1, 2, 3)) + ")",
              "", "| method | paper 1 | paper 2 | paper 3 | relatives 1 | relatives 2 | relatives 3 |", "|---|---|---|---|---|---|---|"]
    for name, row in summary.items():
        lines.append(f"| {name} | " + " | ".join(pct(row[f"top1_gen{k}_{p}"]) for p in ("paper", "relatives") for k in (1, 2, 3)) + " |")
    methods = sorted({m for row in robust.values() for m in row if m != "n"})
    lines += ["", "| derived child | n | " + " | ".join(f"{m} top-1" for m in methods) + " |", "|---|---|" + "---|" * len(methods)]
    for variant, row in robust.items():
        lines.append(f"| {variant} | {row['n']} | " + " | ".join(pct(row.get(m)) for m in methods) + " |")
    lines += ["", "| method | s / child (10 candidates) | peak RSS | RSS for ranking |", "|---|---|---|---|"]
    for name, c in costs.items():
        lines.append(f"| {name} | {c['seconds_per_child']:.2f} | {c['peak_rss_mb']:.0f} MB | {c['ranking_rss_mb']:.1f} MB |")
    lines.append(f"\nDetector training (encoding + epochs) on CPU: {train_seconds:.0f} s.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoo", nargs="?", default="/work/zoos/lineage")
    ap.add_argument("--out", default=None, help="write all numbers as JSON here")
    ap.add_argument("--max-tasks", type=int, default=0, help="evaluation tasks (sampled; 0 = all)")
    ap.add_argument("--fit-tasks", type=int, default=300, help="train-family tasks for fitting weights and the detector")
    ap.add_argument("--feature-fit-tasks", type=int, default=120, help="train-family tasks for α and calibrations")
    ap.add_argument("--detector-epochs", type=int, default=30)
    ap.add_argument("--robust-children", type=int, default=12)
    ap.add_argument("--timing-tasks", type=int, default=11)
    args = ap.parse_args()
    torch.set_num_threads(1)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    zoo_path = Path(args.zoo)
    if not (zoo_path / "truth.json").is_file():
        from ancestree.zoo import make_zoo

        make_zoo(zoo_path, "lineage", seed=0, workers=2)
    zoo = Zoo.load(zoo_path)
    train = subsample(make_tasks(zoo, splits=("train",), candidate_splits=("train",), seed=1), args.fit_tasks)
    evals = subsample(make_tasks(zoo, splits=("val", "test"), seed=2), args.max_tasks)
    log(f"fitting on {len(train)} train-family tasks; evaluating {len(evals)} val/test-family tasks")
    t0 = time.perf_counter()
    weights = fit_weights(train)
    log(f"weights coef {weights.coef}, none {weights.calibration.none_score:.3f} ({time.perf_counter() - t0:.0f} s)")
    feats = fit_features(subsample(train, args.feature_fit_tasks, seed=3))
    log(f"feature methods: { {k: (a, c.to_dict()) for k, (a, c) in feats.items()} }")
    t0 = time.perf_counter()
    model = fit_on_zoo(zoo_path, None, epochs=args.detector_epochs, max_tasks=args.fit_tasks, seed=0, log=log)
    train_seconds = time.perf_counter() - t0
    detector = DetectorRanker(model)
    results = evaluate(evals, weights, feats, detector)
    summary = {name: summarise(zoo, r) for name, r in results.items()}
    # the linearised metric shown in the robustness table: the best on the evaluation tasks (a choice on
    # the tasks it is then shown on, which can only favour that baseline)
    best_lin = max((k for k in feats if k.startswith("linearized")), key=lambda k: summary[k]["top1_gen1"] or 0)
    log("robustness ...")
    robust, robust_info = robustness(zoo, evals, {"weights": weights, "detector": detector,
                                                  best_lin: feature_ranker(best_lin, *feats[best_lin])}, args.robust_children)
    with tempfile.TemporaryDirectory() as tmp:
        save_detector(model, Path(tmp) / "detector.pt")
        specs = {"weights": {"kind": "weights", "coef": weights.coef, "calibration": weights.calibration.to_dict()},
                 **{k: {"kind": k, "alpha": a, "calibration": c.to_dict()} for k, (a, c) in feats.items()},
                 "detector": {"kind": "detector", "path": str(Path(tmp) / "detector.pt")}}
        timing = [t for t in evals if len(t.candidates) == 10][: args.timing_tasks]
        log("time and memory ...")
        costs = time_and_memory(specs, timing)
    alphas = {k: a for k, (a, _) in feats.items() if k.startswith("linearized")}
    report = {"summary": summary, "robustness": robust, "robustness_info": robust_info, "costs": costs,
              "detector_train_seconds": train_seconds, "detector_train_tasks": len(train),
              "weights_coef": weights.coef, "weights_none": weights.calibration.none_score,
              "features": {k: {"alpha": a, **c.to_dict()} for k, (a, c) in feats.items()},
              "fit_tasks": len(train), "eval_tasks": len(evals)}
    print(tables(summary, robust, costs, train_seconds, alphas))
    print(f"\n4-bit: GGUF Q4_0 quantizes {100 * robust_info['q4_quantized_fraction']:.0f}% of the parameters of these "
          "children (matrices whose rows are a multiple of 32 long); the rest stay float32.")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
