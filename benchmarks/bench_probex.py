"""ProbeX on a model-j zoo: faithful ProbeX vs ours, the ablation of each change, zero-shot and retrieval.

    python benchmarks/bench_probex.py ZOO [--epochs 150] [--only faithful,ours] [--json OUT.json] [--cache-dir DIR]

Every configuration is trained in its own process (so peak memory is its own) with the same router, layer
sweep and epochs; the table's scores are on the zoo's held-out ``test`` models. The raw results (``--json``,
or the ``--one`` line) also hold the same scores on the ``val`` models under ``"val"``: that is the split to
judge a change of the defaults on. All configurations share one layer cache (``--cache-dir``, by default in
the temp dir, keyed by the zoo's name), so only the first run reads the zoo; later runs' fit times therefore
exclude the pass over the zoo. Prints Markdown tables for the README's "Learning from weights" section.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The "ours" default before the val ablation (docs/probex.md): it also had the learned temperature with the
#: symmetric contrastive loss, and a 2nd layer. Removing both scored higher on val in all three seeds.
V1 = {"temperature": True, "symmetric": True, "n_layers": 2}

#: name -> (preset, overrides): the ablation removes one change of ours v1 at a time.
CONFIGS: dict[str, tuple[str, dict]] = {
    "faithful": ("faithful", {}),
    "ours": ("ours", {}),
    "ours v1 (+ temperature & symmetric loss + 2nd layer)": ("ours", V1),
    "ours v1 − row readout (ProbeX net only)": ("ours", {**V1, "row_readout": False}),
    "ours v1 − row naming (ProbeX text head, calibrated+transfer)": ("ours", {**V1, "zero_shot": "calibrated+transfer"}),
    "ours v1 − ΔW (raw weights)": ("ours", {**V1, "delta": False}),
    "ours v1 − standardisation": ("ours", {**V1, "standardize": False}),
    "ours v1 − extra views (X only)": ("ours", {**V1, "views": ["x"]}),
    "ours v1 − temperature & symmetric loss": ("ours", {**V1, "temperature": False, "symmetric": False}),
    "ours v1 − joint heads": ("ours", {**V1, "joint": False}),
    "ours v1 − 2nd layer": ("ours", {**V1, "n_layers": 1}),
    "ours − row readout (ProbeX net only)": ("ours", {"row_readout": False}),
}


def default_cache(zoo: str) -> Path:
    """The layer cache shared by every configuration run on ``zoo``."""
    return Path(tempfile.gettempdir()) / f"probex-bench-cache-{Path(zoo).resolve().name}"


def run_one(zoo: str, name: str, epochs: int, threads: int, cache: Path, seed: int = 0) -> dict:
    """Train and score one configuration in this process; return scores, wall time and peak memory."""
    import torch

    from ancestree.probex import ProbeXExperts
    from ancestree.probex.evaluate import evaluate
    from ancestree.probex.model import PRESETS, with_overrides

    torch.set_num_threads(threads)
    preset, over = CONFIGS[name]
    over = {**over, "views": tuple(over["views"])} if "views" in over else over
    config = with_overrides(PRESETS[preset], epochs=epochs, seed=seed, **over)
    start = time.perf_counter()
    experts = ProbeXExperts(config, cache_dir=cache, progress=False).fit(zoo)
    fit_s = time.perf_counter() - start
    scores = evaluate(experts, zoo, "test")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the val pass, as in earlier runs
    scores["val"] = evaluate(experts, zoo, "val")
    scores.update(
        name=name,
        seed=seed,
        fit_seconds=round(fit_s, 1),
        peak_rss_mb=round(peak_mb, 1),
        layers={e.tree: e.layers for e in experts.experts.values()},
        trees=len(experts.router.trees),
    )
    return scores


def run_all(zoo: str, names: list[str], epochs: int, threads: int, cache: Path, seed: int = 0) -> list[dict]:
    results = []
    for name in names:
        cmd = [sys.executable, __file__, zoo, "--one", name, "--epochs", str(epochs), "--threads", str(threads), "--cache-dir", str(cache), "--seed", str(seed)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"# {name}: {json.dumps({k: v for k, v in results[-1].items() if k not in ('layers', 'val')})}", file=sys.stderr, flush=True)
    return results


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def tables(results: list[dict], epochs: int) -> str:
    by = {r["name"]: r for r in results}
    lines = [
        f"Held-out test models; every configuration trained {epochs} epochs with the same router and layer sweep.",
        "",
        "| method | membership acc. % (chance) | zero-shot top-1 % (chance) | recall@1 % | recall@5 % | router acc. % | fit time s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {pct(r['membership_accuracy'])} ({pct(r['membership_chance'])}) | "
            f"{pct(r['zero_shot_top1'])} ({pct(r['zero_shot_chance'])}) | {pct(r['retrieval_recall@1'])} | "
            f"{pct(r['retrieval_recall@5'])} | {pct(r['router_accuracy'])} | {r['fit_seconds']} | {r['peak_rss_mb']} |"
        )
    if "faithful" in by and "ours" in by:
        gain = 100 * (by["ours"]["membership_accuracy"] - by["faithful"]["membership_accuracy"])
        lines += ["", f"Ours − faithful, membership accuracy: {gain:+.1f} points."]
    first = results[0]
    lines += [
        "",
        f"{first['models']} test models, {first['zero_shot_models']} of them trained on at least one held-out class; "
        f"{first['retrieval_queries']} held-out class queries; {first['trees']} trees found by the router.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zoo")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated configuration names (default: all)")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    parser.add_argument("--json", default="", help="also write the raw results here")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every configuration (to see the noise)")
    parser.add_argument("--cache-dir", default="", help="layer cache shared by all runs (default: temp dir, per zoo)")
    args = parser.parse_args()
    cache = Path(args.cache_dir) if args.cache_dir else default_cache(args.zoo)
    if args.one:
        print(json.dumps(run_one(args.zoo, args.one, args.epochs, args.threads, cache, args.seed)))
        return
    names = [n for n in args.only.split(",") if n] or list(CONFIGS)
    results = run_all(args.zoo, names, args.epochs, args.threads, cache, args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(tables(results, args.epochs))


if __name__ == "__main__":
    main()
