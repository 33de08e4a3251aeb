"""Weights-only parent detection on a small real family (tests/test_lineage_family.py)."""

from __future__ import annotations

import json

import pytest

from ancestree.errors import BadInputError
from ancestree.lineage import WeightsRanker, rank_parents
from ancestree.lineage.ancestors import rank_ancestors
from ancestree.lineage.permute import align_units
from test_lineage_family import build_family, lineage_family  # noqa: F401 - the session fixture

FINETUNES = ["A1", "A2", "A3", "B1", "B2", "A11", "A12", "A21", "A111"]
GENERATION = {"A": 0, "B": 0, "A1": 1, "A2": 1, "A3": 1, "B1": 1, "B2": 1, "A11": 2, "A12": 2, "A21": 2, "A111": 3}


def _candidates(fam: dict, child: str) -> list[str]:
    """Every fine-tuned or root model that is not the child itself nor one of its descendants (the task)."""
    parent = fam["parent"]

    def descends(x: str, y: str) -> bool:
        while x in parent:
            x = parent[x]
            if x == y:
                return True
        return False

    return [str(fam["paths"][n]) for n in GENERATION if n != child and not descends(n, child)]


@pytest.mark.parametrize("child", FINETUNES)
def test_weights_pick_the_true_parent_of_fine_tunes(lineage_family: dict, child: str) -> None:
    fam = lineage_family
    result = WeightsRanker().rank(str(fam["paths"][child]), _candidates(fam, child))
    assert result.parent == str(fam["paths"][fam["parent"][child]])
    assert abs(sum(c.probability for c in result.ranking) + result.p_none - 1) < 1e-9


@pytest.mark.parametrize("child", ["A1-int8", "A1-pruned", "A1-permuted", "A-lora"])
def test_weights_survive_quantization_pruning_permutation_and_lora(lineage_family: dict, child: str) -> None:
    fam = lineage_family
    result = WeightsRanker().rank(str(fam["paths"][child]), _candidates(fam, "A1") + [str(fam["paths"]["A1"])])
    assert result.parent == str(fam["paths"][fam["parent"][child]])
    if child != "A-lora":  # a copy of A1: essentially no distance left once aligned / on the survivors
        assert result.ranking[0].evidence["residual"] < 0.02


def test_unit_alignment_is_what_makes_permuted_children_work(lineage_family: dict) -> None:
    paths = lineage_family["paths"]
    with_align = WeightsRanker().evidence(*map(_open, (paths["A1-permuted"], paths["A1"])))
    without = WeightsRanker(align_units=False).evidence(*map(_open, (paths["A1-permuted"], paths["A1"])))
    assert with_align["residual"] < 1e-4 and with_align["permuted_layers"] == 2  # fc1 and fc2
    assert without["residual"] > 0.5


def test_align_units_leaves_unpermuted_models_alone(lineage_family: dict) -> None:
    m = _open(lineage_family["paths"]["A11"])
    values = {n: m.read(n) for n in m.tensors}
    aligned, permuted = align_units(values, {n: _open(lineage_family["paths"]["A1"]).read(n) for n in m.tensors})
    assert permuted == 0 and all(aligned[n] is values[n] for n in values)


def test_none_when_the_parent_and_its_tree_are_missing(lineage_family: dict) -> None:
    paths = lineage_family["paths"]
    present = WeightsRanker().rank(str(paths["B1"]), [str(paths[n]) for n in ("A", "A1", "A2", "B")])
    removed = WeightsRanker().rank(str(paths["B1"]), [str(paths[n]) for n in ("A", "A1", "A2", "A11")])
    assert present.parent == str(paths["B"]) and present.p_none < 0.05
    assert removed.parent is None and removed.p_none > 0.95


def test_other_architecture_is_incomparable_not_unlikely(lineage_family: dict) -> None:
    paths = lineage_family["paths"]
    result = rank_parents(str(paths["A1"]), [str(paths["A"]), str(paths["CNN"])])
    assert [c.candidate for c in result.ranking] == [str(paths["A"])]
    assert str(paths["CNN"]) in result.incomparable and "architecture" in result.incomparable[str(paths["CNN"])]


def test_ancestors_walk_up_three_generations(lineage_family: dict) -> None:
    paths = lineage_family["paths"]
    cands = [str(paths[n]) for n in ("B", "A", "A1", "A11", "B1")]
    result = rank_ancestors(WeightsRanker().rank, str(paths["A111"]), cands, older=None)  # distances alone
    gens = {c.candidate: c.generations for c in result.ranking}
    assert gens == {str(paths["A11"]): 1, str(paths["A1"]): 2, str(paths["A"]): 3, str(paths["B"]): None, str(paths["B1"]): None}


def test_ancestors_walk_stops_at_the_oldest_ancestor(lineage_family: dict) -> None:
    """A child of the oldest ancestor is one fine-tune from it, as a parent would be: on distances alone the
    walk goes on to the root's other children; the direction check stops it at the root. Steps above the
    first rank without the recovered graph: on this family the graph calls A2 the root's parent, and it
    would put A2 on top where the check, drawing on the same statistics, lets it through."""
    paths = lineage_family["paths"]
    cands = [str(paths[n]) for n in ("A", "A1", "A2", "A3", "B")]
    want = {str(paths["A1"]): 1, str(paths["A"]): 2}

    def chain(result) -> dict:
        return {c.candidate: c.generations for c in result.ranking if c.generations}

    plain = chain(rank_ancestors(WeightsRanker().rank, str(paths["A11"]), cands, older=None))
    assert len(plain) > 2 and all(plain[c] == g for c, g in want.items())
    assert chain(rank_parents(str(paths["A11"]), cands, ancestors=True)) == want


def test_ancestors_walk_leaves_copies_of_an_ancestor_out(lineage_family: dict, tmp_path) -> None:
    """The parent's fp16 and pruned copies are one fine-tune from the grandparent, as the parent is: the walk
    took them for generations above the parent."""
    import shutil

    from safetensors.numpy import load_file, save_file

    paths = lineage_family["paths"]
    fp16 = tmp_path / "A1-fp16"
    shutil.copytree(paths["A1"], fp16)
    for f in fp16.glob("*.safetensors"):
        save_file({k: v.astype("float16") for k, v in load_file(f).items()}, str(f))
    for copy in (fp16, paths["A1-pruned"]):
        result = rank_parents(str(paths["A11"]), [str(paths["A1"]), str(copy), str(paths["A"]), str(paths["B"])], ancestors=True)
        assert {c.candidate: c.generations for c in result.ranking if c.generations} == {str(paths["A1"]): 1, str(paths["A"]): 2}


def test_ancestors_walk_reads_fingerprints_through_the_cache(lineage_family: dict, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The walk's direction and copy checks fingerprinted every candidate afresh, a cache given or not."""
    import ancestree.fingerprint.compute as compute

    paths = lineage_family["paths"]
    cands = [str(paths[n]) for n in ("A1", "A1-pruned", "A", "B")]
    fresh: list[str] = []
    real = compute._fingerprint_open
    monkeypatch.setattr(compute, "_fingerprint_open", lambda model, store, spec: (store is None and fresh.append(model.id)) or real(model, store, spec))
    rank_parents(str(paths["A11"]), cands, ancestors=True, cache=tmp_path / "cache")
    fresh.clear()
    rank_parents(str(paths["A11"]), cands, ancestors=True, cache=tmp_path / "cache")
    assert fresh == []


def test_cli_json_contract_and_bad_input(lineage_family: dict, tmp_path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from ancestree.cli.main import run

    paths = lineage_family["paths"]
    monkeypatch.setenv("ANCESTREE_CACHE", str(tmp_path / "cache"))
    args = ["parent", str(paths["A11"]), "--candidates", str(paths["A"]), str(paths["A1"]), str(paths["CNN"]), "--format", "json"]
    import ancestree.fingerprint.compute as compute

    outputs, computed = [], []
    for _ in range(2):  # the second run reads the child's and candidates' fingerprints from the cache
        calls = []
        monkeypatch.setattr(compute, "compute_fingerprint", lambda m, *a, real=compute.compute_fingerprint, **k:
                            calls.append(m.id) or real(m, *a, **k))
        with pytest.raises(SystemExit) as exc:  # the console script's entry point: several paths after one --candidates
            run(args)
        assert exc.value.code == 0
        outputs.append(json.loads(capsys.readouterr().out))
        computed.append(len(calls))
    assert computed == [4, 0]  # the child and the three candidates, then none
    out = outputs[0]
    assert outputs[1] == out
    assert set(out) >= {"child", "parent", "ranking"} and out["parent"] == str(paths["A1"])
    assert all(set(r) == {"candidate", "score", "probability"} for r in out["ranking"])
    assert out["incomparable"][0]["candidate"] == str(paths["CNN"])

    with pytest.raises(SystemExit) as exc:
        run(["parent", str(paths["A11"]), "--candidates", str(tmp_path / "missing")])
    assert exc.value.code == 2


def _open(path):
    from ancestree.io import load_model

    return load_model(path)


def test_nan_candidate_is_incomparable_and_a_spiked_child_still_ranked(tmp_path) -> None:
    from test_tree_cli import _damaged_family

    fam = _damaged_family(tmp_path / "fam")
    result = rank_parents(fam / "spiked", [fam / "base", fam / "diverged", fam / "ft0"])
    assert result.parent == str(fam / "base")
    assert "NaN or infinite" in result.incomparable[str(fam / "diverged")]


def test_constant_models_are_incomparable_not_scored_nan(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """A candidate of all ones or zeros was scored NaN (NaN probabilities, invalid JSON) and could be named
    the parent; a child of zeros had a parent at score 94. Neither holds evidence of lineage."""
    import numpy as np
    from safetensors.numpy import save_file

    from ancestree.cli.main import run

    rng = np.random.default_rng(0)
    base = {f"l{i}.weight": (0.1 * rng.standard_normal((64, 64))).astype(np.float32) for i in range(6)}
    files = {"base": base, "ft": {k: v + 0.002 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()},
             "ones": {k: np.ones_like(v) for k, v in base.items()}, "zeros": {k: np.zeros_like(v) for k, v in base.items()}}
    for name, state in files.items():
        save_file(state, str(tmp_path / f"{name}.safetensors"))
    path = {name: str(tmp_path / f"{name}.safetensors") for name in files}
    result = rank_parents(path["base"], [path["ones"], path["zeros"], path["ft"]])
    assert result.parent == path["ft"] and set(result.incomparable) == {path["ones"], path["zeros"]}
    assert rank_parents(path["zeros"], [path["base"], path["ft"]]).parent is None
    with pytest.raises(SystemExit):
        run(["parent", path["ft"], "--candidates", path["base"], path["ones"], "--format", "json"])
    out = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert out["parent"] == path["base"] and [r["candidate"] for r in out["incomparable"]] == [path["ones"]]
    # one layer zeroed (pruned away) leaves the rest to compare: no NaN kurtosis, ranked below the parent
    save_file({**base, "l0.weight": np.zeros_like(base["l0.weight"])}, str(tmp_path / "one-zeroed.safetensors"))
    result = rank_parents(path["ft"], [str(tmp_path / "one-zeroed.safetensors"), path["base"]])
    assert result.parent == path["base"] and all(np.isfinite(c.score) for c in result.ranking), result
    # a model of vectors only is compared on its vectors (not "every weight matrix is constant")
    vectors = {f"v{i}": (0.1 * rng.standard_normal(4096)).astype(np.float32) for i in range(4)}
    save_file(vectors, str(tmp_path / "vb.safetensors"))
    save_file({k: v + 0.002 * rng.standard_normal(v.shape).astype(np.float32) for k, v in vectors.items()}, str(tmp_path / "vf.safetensors"))
    assert rank_parents(tmp_path / "vf.safetensors", [tmp_path / "vb.safetensors"]).parent is not None


def test_the_recovered_graph_tells_the_grandparent_from_a_sibling(lineage_family: dict) -> None:
    """A12's parent A1 is missing; its sibling A11 (a fine-tune of A1 too) is as near as the grandparent A, and
    pair evidence alone picks it. Tree recovery over all the candidates hangs A11 and A12 below A, so the
    ranking with that evidence picks A."""
    paths = lineage_family["paths"]
    cands = [str(paths[n]) for n in ("A", "B", "A2", "A3", "B1", "B2", "A11", "A21", "A111")]
    alone = WeightsRanker(tree=False).rank(str(paths["A12"]), cands)
    ranked = WeightsRanker().rank(str(paths["A12"]), cands)
    assert alone.ranking[0].candidate == str(paths["A11"])
    assert ranked.ranking[0].candidate == str(paths["A"])
    top = ranked.ranking[0].evidence
    assert top["recovered_parent"] == 1.0 and top["recovered_link"] == 1.0


@pytest.mark.parametrize("child,cands,parent", [
    ("A11", ["A1-permuted", "A", "B", "A2"], "A1-permuted"),  # the parent matched only after re-aligning units
    ("A1-permuted", ["A", "A2", "A3", "B"], "A"),
    ("A11", ["A1"], "A1"),  # one or two candidates: a lone edge's direction is often wrong
    ("A12", ["A1", "A11"], "A1"),
])
def test_the_graph_abstains_where_it_cannot_see(lineage_family: dict, child: str, cands: list[str], parent: str) -> None:
    """Fingerprints compare unit by unit, so a permuted child's parent is invisible to the graph; and a set of
    one or two candidates says little about where the child branched off. The graph then abstains (its
    features are 1 for every candidate) and the pair evidence decides, with the usual none threshold."""
    paths = lineage_family["paths"]
    result = WeightsRanker().rank(str(paths[child]), [str(paths[c]) for c in cands])
    assert result.parent == str(paths[parent]) and result.p_none < 0.05
    assert all(c.evidence.get("recovered_parent", 1.0) == 1.0 for c in result.ranking)


def test_a_candidate_given_twice_is_refused_and_copies_score_alike(lineage_family: dict, tmp_path) -> None:
    """The same candidate twice split the probability with itself; a byte-identical copy of the parent scored
    10 points below the parent, as the graph hung the copy below it and named only the first the parent."""
    import shutil

    paths = lineage_family["paths"]
    with pytest.raises(BadInputError, match="given twice among the candidates"):
        rank_parents(paths["A11"], [str(paths["A1"]), str(paths["A2"]), str(paths["A1"]) + "/"])
    weights = next(paths["A1"].glob("*.safetensors"))  # a folder and its own weight file, either order
    for cands in ([paths["A1"], paths["A2"], weights], [weights, paths["A2"], paths["A1"]]):
        with pytest.raises(BadInputError, match="given twice among the candidates"):
            rank_parents(paths["A11"], [str(c) for c in cands])
    import numpy as np
    from safetensors.numpy import load_file

    beside = tmp_path / "A1-beside"  # another model's weights kept in a candidate's folder: two candidates
    shutil.copytree(paths["A1"], beside)
    np.savez(beside / "other.npz", **load_file(next(paths["A2"].glob("*.safetensors"))))
    assert rank_parents(paths["A11"], [str(beside), str(beside / "other.npz"), str(paths["A"])]).parent == str(beside)
    copy = tmp_path / "A1-copy"
    shutil.copytree(paths["A1"], copy)
    result = WeightsRanker().rank(str(paths["A11"]), [str(paths["A1"]), str(paths["A2"]), str(copy), str(paths["A"])])
    scores = {c.candidate: c.score for c in result.ranking}
    assert result.parent in (str(paths["A1"]), str(copy)) and scores[str(paths["A1"])] == scores[str(copy)]


def test_the_childs_own_weights_are_no_candidate(lineage_family: dict, tmp_path) -> None:
    """The child's weight file reached through a symlink is the child itself (refused by name); a byte-identical
    copy of the child (the same download in two caches) is a copy, not a parent: it is set aside as
    incomparable with the reason, and the true parent is found (it came out with probability 0 before)."""
    import shutil

    paths = lineage_family["paths"]
    link = tmp_path / "link.safetensors"
    link.symlink_to(paths["A11"] / "model.safetensors")
    with pytest.raises(BadInputError, match="among its own candidates"):
        rank_parents(str(paths["A11"]), [str(link), str(paths["A1"])])
    copy = tmp_path / "copy"
    shutil.copytree(paths["A11"], copy)
    result = rank_parents(str(paths["A11"]), [str(copy), str(paths["A1"]), str(paths["A"]), str(paths["B"])])
    assert result.parent == str(paths["A1"])
    assert "the child's own weights" in result.incomparable[str(copy)]
    # the same weights converted to a PyTorch checkpoint (its own tensor order), and a checkpoint kept in a folder
    # below the child's (a Trainer run: run/checkpoint-500/), which is a candidate like any other
    import torch
    from safetensors.torch import load_file

    state = load_file(str(paths["A11"] / "model.safetensors"))
    torch.save(dict(reversed(list(state.items()))), tmp_path / "A11.bin")
    run = tmp_path / "run"
    shutil.copytree(paths["A11"], run)
    shutil.copytree(paths["A1"], run / "checkpoint-500")
    result = rank_parents(str(run), [str(tmp_path / "A11.bin"), str(run / "checkpoint-500"), str(paths["A"]), str(paths["B"])])
    assert "the child's own weights" in result.incomparable[str(tmp_path / "A11.bin")]
    assert result.parent == str(run / "checkpoint-500")


def test_the_childs_own_coarser_copy_is_no_candidate(lineage_family: dict, tmp_path) -> None:
    """The child's own float16 release among the candidates was ranked its parent at probability 1.0 (the
    tree puts it below the child, as a quantized copy); it is set aside with the reason, the parent found."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    paths = lineage_family["paths"]
    (tmp_path / "A11-fp16").mkdir()
    state = load_file(str(paths["A11"] / "model.safetensors"))
    save_file({k: v.astype(np.float16) for k, v in state.items()}, str(tmp_path / "A11-fp16" / "model.safetensors"))
    copy = str(tmp_path / "A11-fp16")
    result = rank_parents(str(paths["A11"]), [copy, str(paths["A1"]), str(paths["A"]), str(paths["B"])])
    assert result.parent == str(paths["A1"]) and "cast to float16" in result.incomparable[copy]
    result = rank_parents(copy, [str(paths["A11"]), str(paths["A1"]), str(paths["A"])])  # the other way round: its parent
    assert result.parent == str(paths["A11"]) and not result.incomparable
    # a parent released in bfloat16 and a child moved from it by 0.1 % (within three of its rounding steps, so
    # a rounding-step test took it for the child's own copy): the parent, not a copy
    import ml_dtypes

    rng = np.random.default_rng(0)
    base = load_file(str(paths["A1"] / "model.safetensors"))
    for name, values in {"A1-bf16": {k: v.astype(ml_dtypes.bfloat16) for k, v in base.items()},
                         "light": {k: v + 0.001 * v.std() * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}}.items():
        (tmp_path / name).mkdir()
        save_file(values, str(tmp_path / name / "model.safetensors"))
    result = rank_parents(str(tmp_path / "light"), [str(tmp_path / "A1-bf16"), str(paths["A"]), str(paths["B"])])
    assert result.parent == str(tmp_path / "A1-bf16") and not result.incomparable
    # a child whose backbone stayed frozen (saved in float32 from the bfloat16 parent, one tensor trained) sits
    # on the parent's grid: it cannot be told from its own cast, so its parent is not set aside
    frozen = {k: v.astype(ml_dtypes.bfloat16).astype(np.float32) for k, v in base.items()}
    last = sorted(frozen)[-1]
    frozen[last] = frozen[last] + 0.01 * frozen[last].std() * rng.standard_normal(frozen[last].shape).astype(np.float32)
    (tmp_path / "frozen").mkdir()
    save_file(frozen, str(tmp_path / "frozen" / "model.safetensors"))
    result = rank_parents(str(tmp_path / "frozen"), [str(tmp_path / "A1-bf16"), str(paths["A"]), str(paths["B"])])
    assert result.parent == str(tmp_path / "A1-bf16") and not result.incomparable
    # a float16 release that keeps one tensor in float32 (`_keep_in_fp32_modules`) is still the child's cast
    kept = {k: (v if k == last else v.astype(np.float16)) for k, v in state.items()}
    (tmp_path / "A11-mixed").mkdir()
    save_file(kept, str(tmp_path / "A11-mixed" / "model.safetensors"))
    result = rank_parents(str(paths["A11"]), [str(tmp_path / "A11-mixed"), str(paths["A1"]), str(paths["A"])])
    assert result.parent == str(paths["A1"]) and "cast to float16" in result.incomparable[str(tmp_path / "A11-mixed")]
    # a pruned child's zeros sit on every grid: its own cast is still known by its other entries
    pruned = {k: np.where(np.abs(v) < np.quantile(np.abs(v), 0.6), 0, v).astype(np.float32) for k, v in state.items()}
    for name, values in {"pruned": pruned, "pruned-bf16": {k: v.astype(ml_dtypes.bfloat16) for k, v in pruned.items()}}.items():
        (tmp_path / name).mkdir()
        save_file(values, str(tmp_path / name / "model.safetensors"))
    result = rank_parents(str(tmp_path / "pruned"), [str(tmp_path / "pruned-bf16"), str(paths["A11"]), str(paths["A"])])
    assert "cast to bfloat16" in result.incomparable[str(tmp_path / "pruned-bf16")]


def test_ancestors_walk_continues_while_an_ancestor_is_likely() -> None:
    """The walk's rule, on rankings written out by hand: the child's ranking gives its parent 0.35 and its
    grandparent 0.2 against 0.4 for "none" (the detector splits probability between ancestors so). "None"
    is the single most probable answer, yet an ancestor is more likely than not: the walk goes on."""
    from ancestree.lineage.result import CandidateScore, Ranking

    table = {"child": ({"P": 0.35, "G": 0.2, "U": 0.05}, 0.4), "P": ({"G": 0.7, "U": 0.1}, 0.2), "G": ({"U": 0.3}, 0.7)}

    def rank(model: str, candidates: list[str]) -> Ranking:
        probs, p_none = table[model]
        scored = sorted((CandidateScore(c, probs[c], probs[c]) for c in candidates), key=lambda c: -c.score)
        return Ranking(model, "by hand", scored, p_none, {})

    assert rank("child", ["P", "G", "U"]).parent is None
    result = rank_ancestors(rank, "child", ["P", "G", "U"], older=None)
    assert {c.candidate: c.generations for c in result.ranking} == {"P": 1, "G": 2, "U": None}
    table["child"] = ({"P": 0.3, "G": 0.15, "U": 0.05}, 0.5)  # an ancestor no likelier than none: no walk
    assert all(c.generations is None for c in rank_ancestors(rank, "child", ["P", "G", "U"], older=None).ranking)


def test_gains_alike_in_every_model_do_not_make_an_unrelated_model_a_parent(tmp_path) -> None:
    """Two transformer-like models of other seeds share only their LayerNorm gains (ones) and zero biases.
    Those dominated the residual (0.34 for two freshly initialised GPT-2s), so each was called the other's
    parent at 0.76; the residual pools the matrices, as pair evidence does."""
    import numpy as np
    from safetensors.numpy import save_file

    def model(seed: int):
        rng = np.random.default_rng(seed)
        tensors = {}
        for i in range(2):
            tensors[f"h.{i}.attn.weight"] = (rng.standard_normal((64, 192)) * 0.02).astype(np.float32)
            tensors[f"h.{i}.mlp.weight"] = (rng.standard_normal((64, 256)) * 0.02).astype(np.float32)
            for ln in ("ln_1", "ln_2"):
                tensors[f"h.{i}.{ln}.weight"] = np.ones(64, np.float32)
                tensors[f"h.{i}.{ln}.bias"] = np.zeros(64, np.float32)
        tensors["wte.weight"] = (rng.standard_normal((500, 64)) * 0.02).astype(np.float32)
        path = tmp_path / f"seed{seed}.safetensors"
        save_file(tensors, str(path))
        return str(path)

    a, b = model(1), model(2)
    for child, candidate in ((a, b), (b, a)):
        ranking = WeightsRanker().rank(child, [candidate])
        assert ranking.parent is None and ranking.p_none > 0.9, ranking.to_dict(with_evidence=True)


def test_a_merge_child_names_both_parents(tmp_path) -> None:
    """The parents of a merge split the probability nearly evenly and `parent` named one of them by a hair
    (a model soup of two Qwen2 fine-tunes: 0.502 against 0.497). The recovered graph over the child and the
    candidates finds it an exact combination, and the ranking says so; a plain fine-tune is no merge."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(9)
    base = {f"l{i}.weight": (rng.standard_t(5, size=(48, 48)) * 0.05).astype(np.float32) for i in range(4)}

    def tune(state, scale=0.01):
        return {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in state.items()}

    ft1, ft2 = tune(base), tune(base)
    models = {"base": base, "ft1": ft1, "ft2": ft2, "soup": {k: (ft1[k] + ft2[k]) / 2 for k in base},
              "ft3": tune(ft1), "stranger": {k: (rng.standard_normal(v.shape) * 0.05).astype(np.float32) for k, v in base.items()}}
    for name, state in models.items():
        save_file(state, str(tmp_path / f"{name}.safetensors"))
    path = {m: str(tmp_path / f"{m}.safetensors") for m in models}
    soup = WeightsRanker().rank(path["soup"], [path[m] for m in ("ft1", "ft2", "base", "stranger")])
    assert sorted(soup.merge_of) == sorted([path["ft1"], path["ft2"]]) and soup.to_dict()["merge_of"]
    plain = WeightsRanker().rank(path["ft3"], [path[m] for m in ("ft1", "ft2", "base", "stranger")])
    assert plain.merge_of == [] and "merge_of" not in plain.to_dict() and plain.parent == path["ft1"]
    walked = rank_parents(path["soup"], [path[m] for m in ("ft1", "ft2", "base", "stranger")], ancestors=True)
    assert {c.candidate: c.generations for c in walked.ranking}.items() >= {path["ft1"]: 1, path["ft2"]: 1}.items()
    alone = WeightsRanker().rank(path["soup"], [path["ft1"], path["ft2"]])  # its two parents only: the graph abstains
    assert sorted(alone.merge_of) == sorted([path["ft1"], path["ft2"]])
    far = {k: (base[k] + models["stranger"][k]) / 2 for k in base}  # a merge the ranking calls "none of these"
    save_file(far, str(tmp_path / "far.safetensors"))
    ranking = WeightsRanker().rank(str(tmp_path / "far.safetensors"), [path[m] for m in ("base", "stranger", "ft1")])
    assert ranking.parent is not None or ranking.merge_of == []  # never "no parent" and "a merge of these" at once
