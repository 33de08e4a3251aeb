"""Cross-generation walks (``ancestree parent --ancestors``): the whole chain of ancestors, or not.

    python benchmarks/bench_ancestors.py [ZOO ...] [--splits val,test] [--json FILE] [--detector FILE]

For every fine-tuned model of the zoo's given splits with two or more ancestors, all of them fine-tunes
(no merge or copy on the way up), the candidates are all its ancestors plus relatives that are not (its
siblings, uncles, cousins: the models a walk can go wrong on) and two models of other families of the
same architecture, 10 in all. The walk (:func:`ancestree.lineage.api.walk_ancestors` with the weights
ranker, as ``parent --ancestors``) is run twice, on distances alone and with the direction check of
:func:`ancestree.lineage.ancestors.older_by_direction`, and each result is
classed as: ``exact`` (every ancestor at its generation, nothing else), ``over`` (the chain right, then one
or more models that are not ancestors), ``under`` (a right chain that stops short), ``wrong`` (the rest).

The direction model was fitted on the ``lineage`` zoo and ``tiny`` seeds 1–3 (``graph/direction.json``);
on ``lineage`` use ``--splits val,test`` and read the numbers as in-sample for the direction model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ancestree.lineage.ancestors import older_by_direction
from ancestree.lineage.api import walk_ancestors
from ancestree.lineage.tasks import Zoo
from ancestree.lineage.weights import WeightsRanker

FLOAT = (None, "finetune")  # relations of models a walk may meet (roots have none)


def chain_tasks(zoo: Zoo, splits: tuple[str, ...], n_candidates: int = 10, seed: int = 0) -> list[tuple[str, list[str], list[str]]]:
    """``(child, ancestors nearest first, candidates)`` for every eligible child (see the module docstring)."""
    rng = np.random.default_rng(seed)
    tasks = []
    for cid, m in sorted(zoo.models.items()):
        ancestors = zoo.ancestors(cid)
        if (m["split"] not in splits or m.get("relation") != "finetune" or len(ancestors) < 2
                or any(zoo.models[a].get("relation") not in FLOAT for a in ancestors)):
            continue
        excluded = {cid, *ancestors, *zoo.descendants(cid)}
        same_arch = [o for o, om in zoo.models.items() if o not in excluded and om["arch_key"] == m["arch_key"]
                     and om.get("relation") in FLOAT]
        kin = [o for o in same_arch if zoo.models[o]["tree"] == m["tree"]]
        others = [o for o in same_arch if zoo.models[o]["tree"] != m["tree"]]
        room = n_candidates - len(ancestors) - 2
        if room < 1 or not kin:
            continue
        picks = list(rng.choice(kin, min(room, len(kin)), replace=False)) + list(rng.choice(others, min(2, len(others)), replace=False))
        candidates = [zoo.path(a) for a in ancestors] + [zoo.path(o) for o in picks]
        tasks.append((zoo.path(cid), [zoo.path(a) for a in ancestors], [candidates[i] for i in rng.permutation(len(candidates))]))
    return tasks


def outcome(found: dict[str, int], ancestors: list[str]) -> str:
    """``exact``, ``over``, ``under`` or ``wrong`` (see the module docstring)."""
    want = {a: k + 1 for k, a in enumerate(ancestors)}
    if found == want:
        return "exact"
    prefix = all(found.get(a) == g for a, g in want.items() if g <= min(len(found), len(want)))
    if prefix and len(found) > len(want):
        return "over"
    if prefix and len(found) < len(want) and set(found) <= set(want):
        return "under"
    return "wrong"


def run(zoo_path: str, splits: tuple[str, ...], detector: str | None = None) -> dict:
    zoo = Zoo.load(zoo_path)
    tasks = chain_tasks(zoo, splits)
    walks = [("distances only", WeightsRanker(), None), ("with direction check", WeightsRanker(), older_by_direction())]
    if detector:  # the learned detector on every step, with the same direction check (as `--detector --ancestors`)
        from ancestree.lineage.detector import DetectorRanker

        walks.append(("detector, direction check", DetectorRanker.load(detector), older_by_direction()))
    rows = {}
    for name, ranker, older in walks:
        counts: Counter[str] = Counter()
        t0 = time.perf_counter()
        for child, ancestors, candidates in tasks:
            ranking = walk_ancestors(ranker, child, candidates, older)  # as `ancestree parent --ancestors`
            counts[outcome({c.candidate: c.generations for c in ranking.ranking if c.generations}, ancestors)] += 1
        rows[name] = {**{k: counts[k] for k in ("exact", "over", "under", "wrong")},
                      "seconds_per_child": (time.perf_counter() - t0) / max(len(tasks), 1)}
        print(f"{Path(zoo_path).name} {name}: {rows[name]}", file=sys.stderr, flush=True)
    depth = Counter(len(a) for _, a, _ in tasks)
    return {"zoo": Path(zoo_path).name, "splits": list(splits), "tasks": len(tasks), "ancestors": dict(sorted(depth.items())), "walks": rows}


def table(results: list[dict]) -> str:
    lines = ["| zoo (children, ancestors each) | walk | exact chain | over-extended | stopped short | other errors | s / child |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        depth = ", ".join(f"{n}×{k}" for k, n in r["ancestors"].items())
        for name, w in r["walks"].items():
            n = max(r["tasks"], 1)
            lines.append(f"| {r['zoo']} ({r['tasks']}: {depth}) | {name} | {w['exact']} ({w['exact'] / n:.0%}) | {w['over']} | "
                         f"{w['under']} | {w['wrong']} | {w['seconds_per_child']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("zoos", nargs="*", default=["/work/zoos/vthr", "/work/zoos/wild"])
    ap.add_argument("--splits", default="train,val,test", help="splits whose children are walked")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--detector", help="also walk with this detector (ancestree lineage train ZOO -o FILE)")
    args = ap.parse_args()
    results = [run(z, tuple(args.splits.split(",")), args.detector) for z in args.zoos]
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
