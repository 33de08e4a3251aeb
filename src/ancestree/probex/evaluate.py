"""Scores of fitted experts on a zoo's held-out models: routing, class membership, zero-shot, retrieval.

* router accuracy: a model is routed right when its tree's members are (by majority) of the model's true
  tree; a model sent nowhere counts as wrong;
* membership accuracy: the element-wise accuracy over the expert's known classes (threshold 0.5), the ProbeX
  metric; ``chance`` is the accuracy of always answering the more frequent bit per class;
* zero-shot top-1: for models trained on classes no training model saw, the best of those *unseen* class
  prompts is one of the model's classes;
* retrieval hit@k: for each unseen class as a text query, one of the k best-ranked models was trained on it
  (scores are the query's softmax share among the unseen class prompts, as ``search --classes`` does).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from ancestree.probex.experts import ProbeXExperts, ZooModel, elementwise_accuracy, logit_scale, read_zoo


def _majority_tree(experts: ProbeXExperts, truth_tree: dict[str, Any], tree_name: str) -> Any:
    members = next(t.members for t in experts.router.trees if t.name == tree_name)
    return Counter(truth_tree[m] for m in members if m in truth_tree).most_common(1)[0][0]


def evaluate(experts: ProbeXExperts, zoo: str, split: str = "test", foreign: Sequence[str] = ()) -> dict[str, Any]:
    """All scores on the ``split`` models of ``zoo``; ``foreign`` paths are models that must be refused."""
    models = read_zoo(zoo)
    truth_tree = {m.id: m.tree for m in models}
    seen_by_tree = {name: set(e.classes) for name, e in experts.experts.items()}
    tests = [m for m in models if m.split == split and m.classes]
    routed, rows = 0, []
    for m in tests:
        expert, layers = experts.route(m.path, m.id)
        if expert is None:
            continue
        routed += _majority_tree(experts, truth_tree, expert.tree) == m.tree
        rows.append((m, expert, layers))
    refused = sum(experts.route(p)[0] is None for p in foreign)
    out: dict[str, Any] = {
        "models": len(tests),
        "router_accuracy": routed / max(len(tests), 1),
        "foreign_refused": f"{refused}/{len(foreign)}",
    }
    out.update(_membership(rows))
    out.update(_zero_shot(experts, rows, models, seen_by_tree))
    return out


def _membership(rows) -> dict[str, float]:
    hits: float = 0
    chance_hits: float = 0
    bits = 0
    for m, expert, layers in rows:
        y = np.isin(expert.classes, m.classes).astype(np.float32)
        p = expert.predict_proba(layers)
        hits += elementwise_accuracy(p, y) * y.size
        freq = np.asarray([expert.class_rates.get(c, 0.0) for c in expert.classes])
        chance_hits += float(((freq >= 0.5) == (y >= 0.5)).sum())
        bits += y.size
    return {"membership_accuracy": hits / max(bits, 1), "membership_chance": chance_hits / max(bits, 1)}


def _zero_shot(experts: ProbeXExperts, rows, models: list[ZooModel], seen_by_tree) -> dict[str, float]:
    all_classes = sorted({c for m in models for c in m.classes})
    top1, n, chance = 0, 0, 0.0
    per_query: dict[str, list[tuple[float, bool]]] = {}
    for m, expert, layers in rows:
        unseen = [c for c in all_classes if c not in seen_by_tree[expert.tree]]
        truth = [c for c in unseen if c in m.classes]
        if not unseen:
            continue
        cos = experts.text_scores(expert, layers, unseen)
        share = np.exp(cos * logit_scale(expert) - (cos * logit_scale(expert)).max())
        share /= share.sum()
        if truth:
            top1 += unseen[int(np.argmax(cos))] in truth
            chance += len(truth) / len(unseen)
            n += 1
        for c, s in zip(unseen, share):
            per_query.setdefault(c, []).append((float(s), c in m.classes))
    hits = {1: 0, 5: 0}
    queries = [c for c, v in per_query.items() if any(t for _, t in v)]
    for c in queries:
        ranked = sorted(per_query[c], key=lambda v: -v[0])
        for k in hits:
            hits[k] += any(t for _, t in ranked[:k])
    q = max(len(queries), 1)
    return {
        "zero_shot_models": n,
        "zero_shot_top1": top1 / max(n, 1),
        "zero_shot_chance": chance / max(n, 1),
        "retrieval_queries": len(queries),
        "retrieval_recall@1": hits[1] / q,
        "retrieval_recall@5": hits[5] / q,
    }
