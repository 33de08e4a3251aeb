"""Parent-detection tasks drawn from a zoo with known truth (for training, calibration and benchmarks).

A task is a child, a set of candidates, and the right answer: the nearest ancestor among the candidates
(``generations`` up), or None when no ancestor is among them. As in Neural Lineage, the candidates of a
``k``-generation task are the child's ancestor ``k`` up and distractors of the same architecture drawn
first from that ancestor's generation (its siblings, cousins and other families' models), never the
child's own descendants and never a closer ancestor. A "none" task replaces the ancestor by one more
distractor, so no ancestor at all is left among the candidates.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ancestree.errors import BadInputError


@dataclass(frozen=True)
class Task:
    child: str
    candidates: tuple[str, ...]
    truth: str | None
    generations: int  # how far up the sought ancestor is (also for none tasks: the level the distractors came from)
    variant: str = "plain"

    @property
    def truth_index(self) -> int | None:
        return None if self.truth is None else self.candidates.index(self.truth)


@dataclass
class Zoo:
    """What tasks need of a zoo: folders, parents, generations, splits and architectures."""

    root: Path
    models: dict[str, dict[str, Any]]
    parents: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> Zoo:
        from ancestree.graph.model_graph import load_zoo_truth

        folder = Path(folder)
        truth = load_zoo_truth(folder)
        models = {m["id"]: m for m in truth["models"]}
        parents: dict[str, list[str]] = defaultdict(list)
        for e in truth["edges"]:
            try:
                parents[e["child"]].append(e["parent"])
            except KeyError as exc:
                raise BadInputError(folder / "truth.json", f"malformed truth.json (an edge has no {exc})") from None
        lacking = next((mid for mid, m in models.items() if m.get("split") not in ("train", "val", "test")), None)
        if lacking is not None:
            raise BadInputError(folder / "truth.json", f"model {lacking} has no split (train, val or test): parent "
                                                       "detection needs a zoo made by `ancestree zoo make`")
        for mid, m in models.items():
            config = json.loads((folder / mid / "config.json").read_text()) if (folder / mid / "config.json").is_file() else {}
            m["arch_key"] = json.dumps({k: v for k, v in config.items() if k != "num_labels"}, sort_keys=True)
            m["relation"] = next((e["relation"] for e in truth["edges"] if e["child"] == mid), None)
        return cls(folder, models, dict(parents))

    def path(self, mid: str) -> str:
        return str(self.root / mid)

    def ancestors(self, mid: str) -> list[str]:
        """Ancestors nearest first along first parents."""
        out = []
        while self.parents.get(mid):
            mid = self.parents[mid][0]
            out.append(mid)
        return out

    def descendants(self, mid: str) -> set[str]:
        children: dict[str, list[str]] = defaultdict(list)
        for c, ps in self.parents.items():
            for p in ps:
                children[p].append(c)
        out, stack = set(), [mid]
        while stack:
            for c in children[stack.pop()]:
                if c not in out:
                    out.add(c)
                    stack.append(c)
        return out


def make_tasks(zoo: Zoo, splits: tuple[str, ...] = ("test",), generations: tuple[int, ...] = (1, 2, 3),
               n_candidates: int = 10, none: bool = True, candidate_splits: tuple[str, ...] | None = None,
               relations: tuple[str, ...] = ("finetune",), seed: int = 0, older: bool = False) -> list[Task]:
    """Tasks for children of ``splits`` (candidates from ``candidate_splits``, default every split).

    ``older``: also, for each task whose ancestor has ancestors of its own, a task (variant ``"older"``) with
    them among the candidates too; the answer stays the nearest ancestor. An ``--ancestors`` walk asks this
    at every step, and a ranker that never saw an older ancestor beside the sought one splits its belief
    between them."""
    rng = np.random.default_rng(seed)
    shuffle_older = np.random.default_rng([seed, 1])  # its own stream: the plain tasks stay as they were
    tasks = []
    for cid, m in sorted(zoo.models.items()):
        if m["split"] not in splits or m.get("relation") not in relations:
            continue
        ancestors = zoo.ancestors(cid)
        excluded = {cid, *ancestors, *zoo.descendants(cid)}
        pool = [o for o, om in zoo.models.items() if o not in excluded and om["arch_key"] == m["arch_key"]
                and om.get("relation") in (None, "finetune")
                and (candidate_splits is None or om["split"] in candidate_splits)]
        for k in generations:
            if len(ancestors) < k:
                continue
            level = zoo.models[ancestors[k - 1]]["generation"]
            same = [o for o in pool if zoo.models[o]["generation"] == level]
            other = [o for o in pool if zoo.models[o]["generation"] != level]
            picks = list(rng.permutation(same)) + list(rng.permutation(other))
            distract = [zoo.path(o) for o in picks[: n_candidates]]
            if len(distract) < n_candidates:
                continue
            target = zoo.path(ancestors[k - 1])
            cands = distract[: n_candidates - 1] + [target]
            order = rng.permutation(len(cands))
            tasks.append(Task(zoo.path(cid), tuple(cands[i] for i in order), target, k))
            if none:
                tasks.append(Task(zoo.path(cid), tuple(distract[i] for i in rng.permutation(n_candidates)), None, k))
            elders = [zoo.path(a) for a in ancestors[k:]][: n_candidates - 1]
            if older and elders:
                cands = [target, *elders, *distract[: n_candidates - 1 - len(elders)]]
                order = shuffle_older.permutation(len(cands))
                tasks.append(Task(zoo.path(cid), tuple(cands[i] for i in order), target, k, "older"))
    return tasks
