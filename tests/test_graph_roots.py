"""Which model is a tree's root: a prior on the root in the arborescence, and the tree-wide direction vote
that sets it (the oldest model is older than every member, not only than its nearest neighbour)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ancestree.fingerprint import fingerprint
from ancestree.graph import GraphRecovery
from ancestree.graph.arborescence import minimum_arborescence
from ancestree.graph.vectors import arch_key
from tests.conftest import write_hf_folder

NAMES = [f"layer{i}.weight" for i in range(3)]


@pytest.mark.parametrize(("root_cost", "edges"), [
    ({0: 0.0, 1: 0.5, 2: 0.5}, [(0, 1), (1, 2)]),
    ({0: 0.5, 1: 0.5, 2: 0.0}, [(1, 0), (2, 1)]),
    ({0: 0.5, 1: 0.0, 2: 0.5}, [(1, 0), (1, 2)]),
])
def test_root_cost_decides_the_root_of_a_symmetric_chain(root_cost: dict, edges: list) -> None:
    """Both directions of a chain cost the same: only the root prior tells the root."""
    both = [(0, 1, 1.0), (1, 0, 1.0), (1, 2, 1.0), (2, 1, 1.0)]
    assert sorted(minimum_arborescence([0, 1, 2], both, root_cost)) == sorted(edges)


def test_root_cost_never_adds_a_second_root_and_edge_costs_still_count() -> None:
    # two components: each gets one root, whatever the priors
    edges = [(0, 1, 1.0), (1, 0, 1.0), (2, 3, 1.0), (3, 2, 1.0)]
    got = minimum_arborescence([0, 1, 2, 3], edges, {0: 0.3, 1: 0.0, 2: 0.0, 3: 0.3})
    assert sorted(got) == [(1, 0), (2, 3)]
    # a prior smaller than an edge's extra cost does not turn the edge round
    assert minimum_arborescence([0, 1], [(0, 1, 1.0), (1, 0, 2.0)], {0: 0.5, 1: 0.0}) == [(0, 1)]
    assert minimum_arborescence([0, 1], [(0, 1, 1.0), (1, 0, 2.0)], {0: 1.5, 1: 0.0}) == [(1, 0)]


def _fan(tmp_path: Path) -> list:
    """A root and five fine-tunes that share a drift and each add sparse heavy-tailed moves (kurtosis rises,
    as in the zoos' fine-tunes): siblings lie nearer each other than the root."""
    rng = np.random.default_rng(0)

    def sparse(scale: float) -> np.ndarray:
        return scale * rng.standard_t(3, (48, 48)) * (rng.random((48, 48)) < 0.03)

    root = {n: rng.standard_normal((48, 48)) for n in NAMES}
    drift = {n: sparse(3.0) + 0.3 * rng.standard_normal((48, 48)) for n in NAMES}
    models = {"root": root, **{f"ft{k}": {n: root[n] + drift[n] + sparse(1.5) for n in NAMES} for k in range(5)}}
    return [fingerprint(write_hf_folder(tmp_path / name, {k: v.astype(np.float32) for k, v in w.items()}), model_id=name)
            for name, w in models.items()]


def test_root_vote_costs_nothing_for_the_oldest_model_and_scales_with_the_tree(tmp_path: Path) -> None:
    fps = _fan(tmp_path)
    rec = GraphRecovery(use_declared=False).fit(fps)
    graph = rec.graph_.graph
    assert [n for n in graph if graph.in_degree(n) == 0] == ["root"]
    gv = rec.vectors_[arch_key(fps[0])]
    core = list(range(len(fps)))
    costs = rec._root_costs(gv, core, {})
    assert costs[0] == 0.0 and all(costs[i] > 0 for i in core[1:])  # the root is older than every fine-tune
    # the vote weighs like the direction terms of one edge per member: n − 1 times the direction weight
    doubled = GraphRecovery(use_declared=False, direction_weight=2 * rec.direction_weight).fit(fps)._root_costs(gv, core, {})
    assert all(doubled[i] == pytest.approx(2 * costs[i]) for i in core)
    assert rec._root_costs(gv, core, {1: 0}).keys() == set(core) - {1}  # a forced child is never a root
    assert GraphRecovery(root_vote=False).fit(fps)._root_costs(gv, core, {}) == {}
