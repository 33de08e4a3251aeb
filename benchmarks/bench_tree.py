"""Tree recovery: accuracy of ours vs the MoTHer baseline on zoos, their time and memory, and scaling.

For every zoo given (folders made by ``ancestree zoo make``, with ``truth.json``), in fresh subprocesses:

* ``mother``: the faithful baseline (each model read once, every pair compared on its raw square matrices in
  memory, as the paper's code does), with the TRUE number of trees given
  (the paper needs it; ours estimates it) — and ``mother-lora`` for zoos whose name contains ``lora``;
  ``mother-flipped`` / ``mother-lora-flipped``: the same with the kurtosis rule flipped by hand, as the paper
  does for continued pre-training (what a user would do after looking at one tree of the zoo);
* ``ours``: fingerprinting every model (no cache, cold start) plus recovery, weights only (declared
  metadata ignored), and ``ours+declared`` with the declared ``base_model`` prior.

Wall time (format readers imported before the clock, for every method; each method run twice in its
process: the first run, and the second, warm one) and peak RSS (``ru_maxrss`` of the subprocess) are
measured per method. The scaling run times
recovery alone on 1k and 10k synthetic fingerprints (random-walk trees, :mod:`ancestree.graph.synthetic`).
``--speed N...`` times ours and MoTHer end to end on zoos of N random-walk models written to a temporary
folder (families of 25, N rounded down to them; each model ``--speed-layers`` square float32 matrices of side
``--speed-side``, as ``bench_index.py`` writes its atlases):
the small zoos above hold 80k–1.8M parameters a model, where reading is cheap and MoTHer's pairs are cheap
too; this shows how the two grow with the number of models.

Usage: ``python benchmarks/bench_tree.py --zoo /work/zoos/vthr --zoo /work/zoos/wild [--scaling 1000 10000]``
Prints markdown tables (and ``--json FILE`` writes the raw numbers).
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


def run_one(method: str, zoo: str) -> dict:
    """Recover one zoo with one method in this process; returns scores, seconds and peak RSS.

    The method runs twice: ``seconds`` is the first run (a fresh process: ours loads its compiled
    kernels from numba's cache, ~0.4 s), ``seconds_warm`` the second (a long-running process, e.g. the
    index or a server). Nothing is cached between the two: ours fingerprints every file again.
    """
    from ancestree.graph import GraphRecovery, ModelGraph, MoTHer, evaluate

    truth = ModelGraph.load(Path(zoo) / "truth.json")
    sources = [(m, Path(zoo) / m) for m in truth.models]
    import_readers()

    def recover() -> ModelGraph:
        if method.startswith("mother"):
            k = len(truth.tree_members())
            order = "parent-lower" if method.endswith("flipped") else "parent-higher"
            distance = "lora" if method.startswith("mother-lora") else "rms"
            return MoTHer(n_trees=k, distance=distance, kurtosis_order=order).fit(sources).graph_
        from ancestree.fingerprint import fingerprint_many

        fps = fingerprint_many(sources, cache=None, progress=False)
        return GraphRecovery(use_declared=method == "ours+declared").fit(fps).graph_

    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        graph = recover()
        seconds.append(time.perf_counter() - start)
    scores = evaluate(graph, truth).to_dict()
    return {"method": method, "zoo": Path(zoo).name, "seconds": seconds[0], "seconds_warm": seconds[1],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **scores}


def import_readers() -> None:
    """Import every format reader (torch, onnx, gguf) and scipy.optimize (imported by alignment on first
    use) before the clock starts, for both methods alike: ``import torch`` alone takes ~1.5 s, paid once by
    a long-running process, not per recovery."""
    import scipy.optimize  # noqa: F401

    from ancestree.io import gguf, npz, onnx, peft, safetensors, torch_pickle, zip  # noqa: F401


def run_scaling(n: int) -> dict:
    from ancestree.graph import GraphRecovery, evaluate, graph_from_edges
    from ancestree.graph.synthetic import synthetic_fingerprints

    fps, edges = synthetic_fingerprints(n)
    start = time.perf_counter()
    graph = GraphRecovery(use_declared=False).fit(fps).graph_
    seconds = time.perf_counter() - start
    truth = graph_from_edges([f.id for f in fps], [(p, c, "finetune", 1.0) for p, c in edges])
    s = evaluate(graph, truth)
    return {"models": n, "seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "undirected_f1": s.undirected_f1, "edge_f1": s.edge_f1, "tree_exact": s.tree_exact}


def write_walk_zoo(folder: Path, n: int, side: int, layers: int, per_family: int = 25, seed: int = 0) -> Path:
    """About ``n`` models in families of ``per_family`` (``bench_index.write_families``: a random root, each
    child a random earlier member plus 5 % noise), ``layers`` square matrices each, and the zoo's ``truth.json``."""
    from bench_index import write_families

    edges: list[tuple[Path, Path]] = []
    paths = write_families(folder, max(1, n // per_family), per_family, side, layers, seed=seed, edges=edges)
    rel = lambda p: p.relative_to(folder).as_posix()  # noqa: E731
    models = [{"id": rel(p), "format": "safetensors", "parameters": layers * side * side} for p in paths]
    truth = {"models": models, "edges": [{"parent": rel(p), "child": rel(c), "relation": "finetune"} for p, c in edges]}
    (folder / "truth.json").write_text(json.dumps(truth))
    return folder


def run_speed(sizes: list[int], side: int, layers: int) -> list[dict]:
    """Ours and MoTHer on random-walk zoos of each size (fresh subprocesses, as the zoo rows)."""
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            zoo = write_walk_zoo(Path(tmp) / f"walk-{n}", n, side, layers)
            for method in ("mother", "ours"):
                rows.append({**subprocess_json(["--one", method, str(zoo)]), "models": n, "side": side, "layers": layers})
                print(f"speed {n} {method}: {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    return rows


def speed_markdown(rows: list[dict]) -> str:
    lines = ["| models | parameters each | MoTHer s (warm) | ours s (warm) | ours faster, fresh / warm | MoTHer MB | ours MB |",
             "|---|---|---|---|---|---|---|"]
    for mother, ours in zip(rows[::2], rows[1::2]):
        lines.append(f"| {mother['models']:,} | {mother['layers'] * mother['side'] ** 2:,} | {mother['seconds']:.1f} "
                     f"({mother['seconds_warm']:.1f}) | {ours['seconds']:.1f} ({ours['seconds_warm']:.1f}) | "
                     f"{mother['seconds'] / ours['seconds']:.1f}× / {mother['seconds_warm'] / ours['seconds_warm']:.1f}× | "
                     f"{mother['peak_mb']:.0f} | {ours['peak_mb']:.0f} |")
    return "\n".join(lines)


def subprocess_json(args: list[str]) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as tmp:
        env["ANCESTREE_CACHE"] = tmp  # nothing cached from earlier runs
        out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


COLUMNS = [("edge_f1", "edge F1"), ("mother_accuracy", "edge acc."), ("direction_accuracy", "direction"),
           ("relation_accuracy", "relation"), ("tree_ari", "tree ARI"), ("tree_exact", "trees exact"),
           ("predicted_trees", "trees found"), ("cross_tree_edges", "cross-tree edges"), ("seconds", "time s"),
           ("seconds_warm", "warm s"), ("peak_mb", "peak MB")]


def markdown(rows: list[dict]) -> str:
    head = "| zoo | method | " + " | ".join(c[1] for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in rows:
        cells = []
        for key, _ in COLUMNS:
            v = r.get(key, float("nan"))
            cells.append(f"{v:.2f}" if key.startswith("seconds") else f"{v:.0f}" if key == "peak_mb" else f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(f"| {r['zoo']} ({r['models']} models, {r['true_trees']} trees) | {r['method']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", action="append", default=[])
    parser.add_argument("--scaling", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--json", help="also write the raw numbers here")
    parser.add_argument("--methods", default="mother,mother-flipped,mother-lora,mother-lora-flipped,ours,ours+declared",
                        help="comma-separated methods to run (mother-lora* only on zoos named *lora*; *-flipped: the "
                             "paper's hand-flipped kurtosis rule)")
    parser.add_argument("--reuse", help="rows of an earlier --json run to reuse for (zoo, method) pairs not run now")
    parser.add_argument("--speed", type=int, nargs="*", default=[], help="time ours and MoTHer on random-walk zoos of these sizes")
    parser.add_argument("--speed-side", type=int, default=256)
    parser.add_argument("--speed-layers", type=int, default=4)
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "ZOO"), help=argparse.SUPPRESS)
    parser.add_argument("--scale-one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return
    if args.scale_one:
        print(json.dumps(run_scaling(args.scale_one)))
        return
    wanted = args.methods.split(",")
    old = {(r["zoo"], r["method"]): r for r in json.loads(Path(args.reuse).read_text())["zoos"]} if args.reuse else {}
    rows = []
    for zoo in args.zoo:
        lora = ["mother-lora", "mother-lora-flipped"] if "lora" in Path(zoo).name else []
        methods = ["mother", "mother-flipped", *lora, "ours", "ours+declared"]
        for m in methods:
            if m not in wanted:
                if (Path(zoo).name, m) in old:
                    rows.append(old[(Path(zoo).name, m)])
                continue
            rows.append(subprocess_json(["--one", m, zoo]))
            print(f"{Path(zoo).name} {m}: edge acc {rows[-1]['mother_accuracy']:.3f}, {rows[-1]['seconds']:.1f} s", file=sys.stderr)
    if rows:
        print(markdown(rows))
        print()
        for zoo in args.zoo:
            by = {r["method"]: r for r in rows if r["zoo"] == Path(zoo).name}
            if "mother" not in by or "ours" not in by:
                continue
            warm = by["mother"].get("seconds_warm", float("nan")) / by["ours"].get("seconds_warm", float("nan"))
            print(f"- {Path(zoo).name}: ours (fingerprints + recovery) is {by['mother']['seconds'] / by['ours']['seconds']:.1f}x "
                  f"faster than MoTHer in a fresh process, {warm:.1f}x in a warm one, and uses {by['ours']['peak_mb']:.0f} MB vs {by['mother']['peak_mb']:.0f} MB peak RSS")
    speed = run_speed(args.speed, args.speed_side, args.speed_layers)
    if speed:
        print("\n" + speed_markdown(speed))
    scaling = [subprocess_json(["--scale-one", str(n)]) for n in args.scaling]
    if args.json:  # write the raw numbers before printing, so a long run is never lost
        Path(args.json).write_text(json.dumps({"zoos": rows, "scaling": scaling, "speed": speed}, indent=2) + "\n")
    if scaling:
        print("\n| synthetic models | recovery time s | peak MB | undirected F1 | directed F1 | trees exact |\n|---|---|---|---|---|---|")
        for s in scaling:
            print(f"| {s['models']:,} | {s['seconds']:.1f} | {s['peak_mb']:.0f} | {s['undirected_f1']:.3f} | {s['edge_f1']:.3f} | {s['tree_exact']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"zoos": rows, "scaling": scaling, "speed": speed}, indent=2) + "\n")


if __name__ == "__main__":
    main()
