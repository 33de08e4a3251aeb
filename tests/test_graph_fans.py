"""Fans drawn as chains: a child moves up to its grandparent only when that explains it better as one update."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ancestree.fingerprint import fingerprint
from ancestree.graph.fans import lift_to_grandparents, update_fit
from tests.conftest import write_hf_folder

NAMES = [f"layer{i}.weight" for i in range(3)]


def _low_rank(rng: np.random.Generator, rank: int, scale: float) -> np.ndarray:
    return scale * (rng.standard_normal((48, rank)) @ rng.standard_normal((rank, 48))) / np.sqrt(48 * rank)


def _prints(tmp_path: Path, models: dict[str, dict[str, np.ndarray]]) -> dict:
    return {name: fingerprint(write_hf_folder(tmp_path / name, {k: v.astype(np.float32) for k, v in w.items()}), model_id=name)
            for name, w in models.items()}


def test_a_sibling_sharing_the_update_is_nearer_but_the_parent_fits_better(tmp_path: Path) -> None:
    """Siblings share a rank-2 move (one task) and add moves of their own almost as large: the sibling is a few
    per cent nearer the child than the parent is, yet the child minus the parent is the simpler difference
    (one update), while the child minus the sibling sums two."""
    rng = np.random.default_rng(0)
    parent = {n: rng.standard_normal((48, 48)) for n in NAMES}
    shared = {n: _low_rank(rng, 2, 0.5) for n in NAMES}
    child = {n: parent[n] + shared[n] + _low_rank(rng, 3, 0.45) for n in NAMES}
    sibling = {n: parent[n] + 0.97 * shared[n] + _low_rank(rng, 3, 0.45) for n in NAMES}
    fps = _prints(tmp_path, {"p": parent, "c": child, "s": sibling})
    dist = {k: np.sqrt(sum(np.sum((child[n] - m[n]) ** 2) for n in NAMES)) for k, m in (("p", parent), ("s", sibling))}
    assert dist["s"] < dist["p"]  # distances alone hang the child below its sibling
    assert update_fit(fps["c"], fps["p"]) > update_fit(fps["c"], fps["s"])
    order = [fps["p"], fps["s"], fps["c"]]
    assert lift_to_grandparents({1: 0, 2: 1}, order, lambda g, q, c, r: True) == {2: 0}
    assert lift_to_grandparents({1: 0, 2: 1}, order, lambda g, q, c, r: False) == {}


def test_a_true_chain_keeps_its_parent(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = {n: rng.standard_normal((48, 48)) for n in NAMES}
    middle = {n: root[n] + _low_rank(rng, 3, 0.4) for n in NAMES}
    child = {n: middle[n] + _low_rank(rng, 3, 0.4) for n in NAMES}
    fps = _prints(tmp_path, {"g": root, "q": middle, "c": child})
    assert update_fit(fps["c"], fps["q"]) > update_fit(fps["c"], fps["g"])
    assert lift_to_grandparents({1: 0, 2: 1}, [fps["g"], fps["q"], fps["c"]], lambda g, q, c, r: True) == {}


def test_a_fan_of_three_drawn_as_a_chain_is_lifted_in_rounds(tmp_path: Path) -> None:
    """A learning-rate sweep (0.5, 1, 2 times one move, each with a move of its own) drawn as p → a → b → c.
    Weighed against grandparents only, the first round lifts b to p and c to a (its grandparent); the second
    weighs p against a for c, and lifts it again. One pass would leave c below its sibling a. Weighed
    against the root above as well, c goes to p in the first round."""
    rng = np.random.default_rng(1)
    parent = {n: rng.standard_normal((48, 48)) for n in NAMES}
    shared = {n: _low_rank(rng, 2, 0.5) for n in NAMES}
    sweep = {k: {n: parent[n] + f * shared[n] + _low_rank(rng, 3, 0.4) for n in NAMES}
             for k, f in (("a", 0.5), ("b", 1.0), ("c", 2.0))}
    fps = _prints(tmp_path, {"p": parent, **sweep})
    order = [fps[k] for k in "pabc"]
    weighed = []

    def grandparents_only(g: int, q: int, c: int, is_root: bool) -> bool:
        weighed.append((g, q, c))
        return not is_root

    assert lift_to_grandparents({1: 0, 2: 1, 3: 2}, order, grandparents_only) == {2: 0, 3: 0}
    assert weighed.index((1, 2, 3)) < weighed.index((0, 1, 3))  # c weighed against a, then against p
    weighed.clear()
    assert lift_to_grandparents({1: 0, 2: 1, 3: 2}, order, lambda g, q, c, is_root: weighed.append((g, q, c, is_root)) is None) == {2: 0, 3: 0}
    assert weighed[:3] == [(0, 1, 2, False), (1, 2, 3, False), (0, 2, 3, True)]  # c: a and the root p in round one


def test_the_root_of_a_wide_fan_drawn_as_a_deep_chain_is_weighed_by_every_child(tmp_path: Path) -> None:
    """Six fine-tunes of one base sharing a drift, drawn as a chain b → f0 → f1 → ... → f5: every child is
    weighed against the base above it (not only against its grandparent, a sibling as bad as its parent)
    and all of them end below it."""
    rng = np.random.default_rng(2)
    base = {n: rng.standard_normal((48, 48)) for n in NAMES}
    drift = {n: _low_rank(rng, 2, 0.6) for n in NAMES}
    fans = {f"f{k}": {n: base[n] + drift[n] + _low_rank(rng, 3, 0.45) for n in NAMES} for k in range(6)}
    fps = _prints(tmp_path, {"b": base, **fans})
    order = [fps[k] for k in ["b", *fans]]
    roots_weighed = set()

    def movable(g: int, q: int, c: int, is_root: bool) -> bool:
        if is_root:
            roots_weighed.add((g, c))
        return True

    assert lift_to_grandparents({k: k - 1 for k in range(1, 7)}, order, movable) == {k: 0 for k in range(2, 7)}
    assert roots_weighed == {(0, c) for c in range(3, 7)}  # f1's grandparent is the base itself
    assert all(update_fit(fps[f"f{k}"], fps["b"]) > update_fit(fps[f"f{k}"], fps[f"f{k - 1}"]) for k in range(1, 6))


def test_batched_effective_ranks_equal_one_at_a_time() -> None:
    from ancestree.relate.update import effective_rank, effective_ranks, scaled_residual, scaled_residuals

    rng = np.random.default_rng(3)
    stack = np.stack([_low_rank(rng, r, 1.0) for r in (1, 4, 16)] + [np.zeros((48, 48))])
    batched = effective_ranks(stack)
    assert np.allclose(batched[:3], [effective_rank(m) for m in stack[:3]]) and np.isnan(batched[3])
    assert effective_rank(stack[3]) is None and np.isnan(effective_ranks(stack[:, :5])).all()
    c, p = rng.standard_normal((3, 100)), rng.standard_normal((3, 100))
    one = [scaled_residual(a, b) for a, b in zip(c, p)]
    assert np.allclose(scaled_residuals(c, p), np.sum(one, axis=0))


def test_batched_update_fits_equal_one_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Fits of many pairs at once (several sketch shapes, chunked) equal the fits of one pair at a time."""
    import ancestree.graph.fans as fans

    rng = np.random.default_rng(4)
    shapes = {"a.weight": (48, 48), "b.weight": (48, 20), "c.weight": (6, 6), "d.bias": (48,)}
    base = {n: rng.standard_normal(s) for n, s in shapes.items()}
    models = {f"m{k}": {n: v + (0.3 * k) * rng.standard_normal(v.shape) for n, v in base.items()} for k in range(5)}
    fps = _prints(tmp_path, models)
    pairs = [(fps[f"m{i}"], fps[f"m{j}"]) for i in range(5) for j in range(5) if i != j]
    monkeypatch.setattr(fans, "FIT_CHUNK", 7)  # several chunks
    batched = fans.update_fits(pairs)
    single = [fans._update_fits([pair])[0] for pair in pairs]
    assert all(b is not None for b in batched) and np.allclose(batched, single, rtol=1e-12)
    assert fans.update_fits([(fps["m0"], _prints(tmp_path / "other", {"x": {"z.weight": base["a.weight"][:5, :7]}})["x"])]) == [None]
