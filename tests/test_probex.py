"""ProbeX tree experts on a small real zoo: two MLP trees fine-tuned on random named classes.

Every model here is really trained (ancestree's zoo recipes); thresholds are fixed and can fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ancestree.probex import ProbeXExperts, search
from ancestree.probex.evaluate import evaluate
from ancestree.probex.model import OURS, with_overrides
from ancestree.probex.router import Router

N_CLASSES, HELD_OUT = 16, 3
#: Held out (never in a train-split model): classes whose colour, pattern and shape each occur in some seen
#: class. Zero-shot from text can only work by such composition; a never-seen word ("blue") names nothing.
HELD = ("red plain square", "orange dotted cross", "yellow striped diamond")
FINETUNES = 36  # per tree: 24 train, 6 val, 6 test


def _write(folder: Path, state, config) -> None:
    from ancestree.zoo.save import write_json, write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder, state)
    write_json(folder / "config.json", config)


@pytest.fixture(scope="module")
def probex_zoo(tmp_path_factory) -> Path:
    """Two trees (independent MLP roots) × 36 fine-tunes on 8 of 16 classes; held-out classes only in val/test."""
    from ancestree.zoo.architectures import make_config
    from ancestree.zoo.data import class_names
    from ancestree.zoo.recipes import TrainSpec, finetune, pretrain

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("probex-zoo")
    config = make_config("ancestree-mlp", N_CLASSES, hidden_size=32, num_layers=2)
    vocab = class_names("shapes", N_CLASSES)
    held = list(HELD)
    seen = [c for c in vocab if c not in held]
    assert len(held) == HELD_OUT and set(held) <= set(vocab)
    rng = np.random.default_rng(7)
    models = []
    for t in range(2):
        root, _ = pretrain(config, "shapes", TrainSpec(steps=150, lr=0.05, n_per_class=20), seed=11 + t)
        _write(out / f"t{t}" / "root", root, config)
        models.append({"id": f"t{t}/root", "tree": t, "classes": vocab, "split": "root"})
        for i in range(FINETUNES):
            split = ("train",) * 4 + ("val", "test")
            split = split[i % 6]
            k = N_CLASSES // 2  # a random half, as in Model-J: membership chance is ~50%
            classes = rng.choice(seen if split == "train" else vocab, size=k, replace=False).tolist()
            if split != "train" and not set(classes) & set(held):
                classes[0] = held[i % HELD_OUT]
            spec = TrainSpec(steps=40, lr=float(10 ** rng.uniform(-2, -1.3)), n_per_class=15)
            _, states, _ = finetune(config, root, "shapes", sorted(set(classes)), spec, seed=100 * t + i)
            _write(out / f"t{t}" / f"ft{i:02d}", states[-1], config)
            models.append({"id": f"t{t}/ft{i:02d}", "tree": t, "classes": sorted(set(classes)), "split": split})
    foreign, _ = pretrain(config, "shapes", TrainSpec(steps=150, lr=0.05, n_per_class=20), seed=99)
    _write(out.parent / f"{out.name}-foreign", foreign, config)
    (out / "truth.json").write_text(json.dumps({"models": models, "edges": []}))
    return out


@pytest.fixture(scope="module")
def fitted(probex_zoo: Path, tmp_path_factory) -> tuple[ProbeXExperts, Path]:
    out = tmp_path_factory.mktemp("experts")
    config = with_overrides(OURS, epochs=150, r_u=32, r_v=32, r_t=64)
    given = Router()
    experts = ProbeXExperts(config, sweep_epochs=40, resume_dir=out, progress=False, router=given).fit(probex_zoo)
    assert given.trees == [] and experts.router is not given  # a setting: fitting left the object given as it was
    experts.save(out)
    return experts, out


def test_router_finds_both_trees_and_refuses_a_foreign_model(fitted, probex_zoo):
    experts, _ = fitted
    assert len(experts.router.trees) == 2 and len(experts.experts) == 2
    assert sorted(t.name.split("/")[0] for t in experts.router.trees) == ["t0", "t1"]
    for tree in experts.router.trees:  # no oracle was used, yet every tree is pure
        assert len({m.split("/")[0] for m in tree.members}) == 1
    foreign = probex_zoo.parent / f"{probex_zoo.name}-foreign"
    assert experts.predict(foreign) == {"model": str(foreign), "tree": None, "classes": []}


def test_expert_beats_chance_and_zero_shot_beats_chance(fitted, probex_zoo):
    experts, _ = fitted
    foreign = probex_zoo.parent / f"{probex_zoo.name}-foreign"
    scores = evaluate(experts, str(probex_zoo), "test", foreign=[str(foreign)])
    assert scores["router_accuracy"] == 1.0
    assert scores["foreign_refused"] == "1/1"
    # element-wise membership: the majority answer per class scores ~0.5 here; the expert must do clearly better
    assert scores["membership_accuracy"] >= scores["membership_chance"] + 0.15, scores
    # zero-shot over 3 unseen class names: chance ~0.55 (a test model holds 1-3 of them)
    assert scores["zero_shot_models"] >= 8
    assert scores["zero_shot_top1"] >= scores["zero_shot_chance"] + 0.2, scores


def test_zero_shot_search_ranks_the_models_trained_on_an_unseen_class_first(fitted, probex_zoo):
    """`search --classes`: for each held-out class name, with the other two as the alternatives, the val and
    test models trained on it score above those that were not (an inverted or constant score passed before)."""
    import json

    from sklearn.metrics import roc_auc_score

    experts, _ = fitted
    truth = json.loads((probex_zoo / "truth.json").read_text())
    unseen = {m["id"]: set(m["classes"]) for m in truth["models"] if m["split"] in ("val", "test")}
    labels, scores = [], []
    for name in HELD:
        found = experts.search(name, [(m, probex_zoo / m) for m in unseen], classes=[c for c in HELD if c != name])
        for r in found["results"]:
            labels.append(name in unseen[r["model"]])
            scores.append(r["score"])
    assert len(scores) == 3 * len(unseen) and 0 < sum(labels) < len(labels)
    auroc = roc_auc_score(labels, scores)
    assert auroc >= 0.75, auroc  # 0.5 at random


def test_a_sentence_naming_a_seen_class_searches_as_that_class(fitted, probex_zoo):
    """On model-j "red striped circle" found ten right models in its top ten and "a model that knows red
    striped circles" six (the base rate is four): the sentence was embedded near several classes. A query
    naming a class the experts know, plural or in a sentence, is now that class; others are matched by meaning."""
    import json

    from ancestree.probex.experts import named_class

    assert named_class("A model that knows Red  Striped Circles", ["red striped circle", "red striped"]) == "red striped circle"
    assert named_class("a red striped circ", ["red striped circle"]) == "a red striped circ"
    # a review's false matches: other words before the class, or two classes, leave the query to its meaning
    for query in ("dark red striped circle", "not red striped circles", "non-red striped circle",
                  "blue plain squares and red striped circles", "red striped circle detector"):
        assert named_class(query, ["red striped circle", "blue plain square"]) == query
    experts, _ = fitted
    truth = json.loads((probex_zoo / "truth.json").read_text())
    seen = next(c for m in truth["models"] if m["split"] == "train" for c in m["classes"] if c not in HELD)
    models = [(m["id"], probex_zoo / m["id"]) for m in truth["models"] if m["split"] in ("val", "test")]
    bare = experts.search(seen, models)["results"]
    assert experts.search(f"models trained on {seen}s", models)["results"] == bare
    # with `--classes`, the class the sentence names is no rival of it (every score was 0.5), and an alternative
    # given by the user is scored as given, not as the known class it contains
    other = next(c for c in HELD if c != seen)
    rivals = experts.search(f"models trained on {seen}s", models, classes=[seen, other])["results"]
    assert rivals == experts.search(seen, models, classes=[other])["results"] and len({r["score"] for r in rivals}) > 1


def test_a_query_unlike_every_known_class_is_ranked_with_a_note_saying_so(fitted, probex_zoo, capsys):
    """Text that means nothing the experts know ("the stock market", gibberish) still got a confident
    ranking with nothing to say it matched nothing; class words and related unseen names get no note."""
    from ancestree.cli.main import run

    experts, out = fitted
    models = [(m, probex_zoo / "t0" / m) for m in ("ft03", "ft04")]
    for query in ("the stock market", "sentiment of movie reviews", "zxq vlorp"):
        found = experts.search(query, models)
        assert len(found["results"]) == 2 and "unlike every class the experts were trained on" in found["note"], query
    for query in ("red striped circle", "models trained on red striped circles", "striped shapes", "a dark blue hexagon",
                  *HELD):
        assert "note" not in experts.search(query, models), query
    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "search", "the stock market", "--experts", str(out), "--in", str(probex_zoo / "t0"), "--format", "json"])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0 and "note" in json.loads(captured.out)
    assert captured.err.startswith("note: the query is unlike every class") and captured.err.count("\n") == 1


def test_the_search_function_warns_of_what_the_method_returns_beside_the_ranking(fitted, probex_zoo):
    """`probex.search()` returns the ranking only: a mistyped path was left out and a meaningless query ranked
    with nothing said (the method returns both as "damaged" and "note"). A lone path was read letter by letter."""
    _, out = fitted
    model = probex_zoo / "t0" / "ft03"
    with pytest.warns(UserWarning) as caught:
        found = search("the stock market", out, [model, probex_zoo / "t0" / "nothing-here"])
    messages = [str(w.message) for w in caught]
    assert [r["model"] for r in found] == [str(model)]
    assert any("nothing-here" in m and "left out" in m for m in messages) and any("unlike every class" in m for m in messages)
    with pytest.raises(TypeError, match="takes a list"):
        search("red striped circle", out, str(model))
    with pytest.raises(TypeError, match="takes a list"):
        ProbeXExperts.load(out).search("red striped circle", [("m", model)], classes="blue dotted square")


def test_unfitted_experts_and_unknown_settings_are_refused():
    """An object never fitted answered "no expert fits" and saved an empty folder; a misspelt preset was a bare
    KeyError and a misspelt clustering quietly took the other one."""
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        ProbeXExperts().predict("any")
    for kwargs in ({"config": "Ours"}, {"clustering": "Graph"}, {"sweep": "Ridge"}):
        with pytest.raises(ValueError, match="must be"):
            ProbeXExperts(**kwargs)


def test_save_load_round_trip_and_resume(fitted, probex_zoo):
    experts, out = fitted
    loaded = ProbeXExperts.load(out)
    model = probex_zoo / "t1" / "ft05"
    assert loaded.predict(model) == experts.predict(model)
    a = experts.search("red striped circle", [("m", model)])
    assert loaded.search("red striped circle", [("m", model)]) == a
    # the one-call function other code uses (ids are the paths as given)
    assert search("red striped circle", out, {"m": model}) == a["results"]
    assert [r["model"] for r in search("orange dotted cross", out, [model])] == [str(model)]
    for folder in out.glob("expert-*"):  # tensors only: loadable without unpickling code
        torch.load(folder / "weights.pt", weights_only=True)
    # resumable: a second fit with the same folder reuses the trained experts instead of training again
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("expert-*/weights.pt")}
    again = ProbeXExperts(experts.config, sweep_epochs=40, resume_dir=out, progress=False)
    again.fit(probex_zoo)
    assert again.predict(model) == experts.predict(model)
    assert stamp and stamp == {p: p.stat().st_mtime_ns for p in out.glob("expert-*/weights.pt")}


def test_searching_saved_experts_writes_nothing_into_their_folder(fitted, probex_zoo, tmp_path):
    """Each new query was added to the experts folder's text cache and the file written again: `serve` let
    remote clients grow it without bound, and answered 500 where the folder could not be written. Queries
    are encoded in memory; the folder is only read."""
    import shutil

    _, out = fitted
    folder = tmp_path / "experts"
    shutil.copytree(out, folder)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*") if p.is_file()}
    model = probex_zoo / "t1" / "ft05"
    first = search("a model that knows purple dotted rings", folder, {"m": model})
    assert search("a model that knows purple dotted rings", folder, {"m": model}) == first
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*") if p.is_file()} == before


def test_cli_json_matches_the_contract(fitted, probex_zoo, capsys):
    from ancestree.cli.main import run

    _, out = fitted
    model = str(probex_zoo / "t0" / "ft03")
    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "predict", model, "--experts", str(out), "--format", "json"])
    assert exit_info.value.code == 0
    record = json.loads(capsys.readouterr().out)
    assert set(record) == {"model", "tree", "classes"} and record["model"] == model
    assert isinstance(record["tree"], str) and len(record["classes"]) >= N_CLASSES - HELD_OUT - 1
    probs = [c["probability"] for c in record["classes"]]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert all(set(c) == {"name", "probability"} for c in record["classes"])

    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "search", "red striped circle", "--experts", str(out), "--in", str(probex_zoo / "t0"),
             "--classes", "blue dotted square", "--format", "json"])
    assert exit_info.value.code == 0
    found = json.loads(capsys.readouterr().out)
    assert set(found) == {"query", "results"} and found["query"] == "red striped circle"
    assert len(found["results"]) == FINETUNES + 1
    scores = [r["score"] for r in found["results"]]
    assert scores == sorted(scores, reverse=True) and all(set(r) == {"model", "score"} for r in found["results"])

    # several names after one --classes (as the contract writes it) mean the same as repeating the flag
    ranked = []
    for argv in (["--classes", "blue dotted square", "green plain ring"],
                 ["--classes", "blue dotted square", "--classes", "green plain ring"]):
        with pytest.raises(SystemExit) as exit_info:
            run(["probex", "search", "red striped circle", "--experts", str(out), "--in", str(probex_zoo / "t0"), *argv,
                 "--format", "json"])
        assert exit_info.value.code == 0
        ranked.append(json.loads(capsys.readouterr().out)["results"])
    assert ranked[0] == ranked[1] != found["results"]

    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "predict", model, "--experts", str(probex_zoo)])
    assert exit_info.value.code == 2


def test_router_splits_a_graph_tree_by_layout() -> None:
    """Regression: a tree of the graph also holds the same weights under other names (an ONNX export, a
    PEFT adapter's update); stacking their sketches with the originals crashed `probex train` on the tiny
    zoo. Given clusters are split by architecture, and each model routes within its own layout."""
    from ancestree.probex.router import Router

    rng = np.random.default_rng(0)
    root = rng.normal(size=64).astype(np.float32)
    sketches = {f"ft{i}": root + 0.05 * rng.normal(size=64).astype(np.float32) for i in range(4)}
    sketches["export"] = np.concatenate([root, root])  # another layout of the same tree
    archs = {m: ("onnx" if m == "export" else "safetensors") for m in sketches}
    router = Router().fit(sketches, archs, clusters={m: 0 for m in sketches})
    assert sorted(len(t.members) for t in router.trees) == [1, 4]
    assert router.route(sketches["ft1"], "safetensors").members == ["ft0", "ft1", "ft2", "ft3"]
    assert router.route(np.concatenate([root, root]), "onnx").members == ["export"]


def test_router_refuses_unrelated_weights_near_the_centroid_of_a_wide_tree(tmp_path) -> None:
    """A tree of long chains (as the graph clusters model-j's CNN tree: 171 models) has members far from its
    centroid, 1.53 there, beyond the ≈ 1.41 of unrelated weights: its radius let Gaussian noise, a constant
    model and another seed's models in, their classes predicted at 0.95-0.99. A model now belongs to the tree
    of its nearest member within the clustering threshold; the saved router keeps the members' sketches."""
    from ancestree.probex.router import MEMBERS_KEY, Router

    rng = np.random.default_rng(0)
    root = rng.normal(size=256)
    walk = [root]
    for _ in range(8):  # eight chains of twelve fine-tunes drifting away from the root
        for _ in range(12):
            walk.append((walk[-1] if len(walk) % 12 != 1 else root) + 0.5 * rng.normal(size=256))
    sketches = {f"m{i:03d}": w.astype(np.float32) for i, w in enumerate(walk)}
    router = Router().fit(sketches, dict.fromkeys(sketches, "cnn"), clusters=dict.fromkeys(sketches, 0))
    (tree,) = router.trees
    assert tree.radius > 1.45  # members lie farther from the centroid than unrelated weights do
    unrelated = rng.normal(size=256) * np.linalg.norm(tree.centroid) / 16.0
    constant = np.full(256, 0.01, np.float32)
    assert max(tree.distance(unrelated), tree.distance(constant)) < router.limit(tree)  # what the centroid rule accepted
    assert router.route(unrelated.astype(np.float32), "cnn") is None
    assert router.route(constant, "cnn") is None
    relative = (walk[-1] + 0.5 * rng.normal(size=256)).astype(np.float32)  # the next fine-tune down a chain
    assert router.route(relative, "cnn") is tree
    # saved and loaded as `probex train` / `predict` do: the members' sketches travel with the centroid
    saved = {tree.name: torch.as_tensor(tree.centroid), tree.name + MEMBERS_KEY: torch.as_tensor(tree.sketches)}
    torch.save(saved, tmp_path / "router.pt")
    loaded = {k: v.numpy() for k, v in torch.load(tmp_path / "router.pt", weights_only=True).items()}
    again = Router.from_json(json.loads(json.dumps(router.to_json())), loaded)
    assert again.route(unrelated.astype(np.float32), "cnn") is None and again.route(relative, "cnn").name == tree.name


def test_a_damaged_model_is_named_not_scored(fitted, probex_zoo, tmp_path, capsys):
    """One NaN entry in a layer (a diverged or damaged checkpoint): `predict` refuses it by name (exit 2), a
    `search` over a folder holding it ranks the others and names it as skipped, never a NaN score."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from ancestree.cli.main import run

    _, out = fitted
    folder = tmp_path / "models"
    shutil.copytree(probex_zoo / "t0" / "ft03", folder / "good")
    shutil.copytree(probex_zoo / "t0" / "ft03", folder / "damaged")
    weights = next((folder / "damaged").glob("*.safetensors"))
    state = load_file(weights)
    name = next(n for n, v in state.items() if v.ndim == 2)
    state[name][1, 2] = np.inf
    save_file(state, str(weights))
    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "predict", str(folder / "damaged"), "--experts", str(out), "--format", "json"])
    assert exit_info.value.code == 2
    assert f"damaged: NaN or infinite values in layer {name}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "search", "red striped circle", "--experts", str(out), "--in", str(folder), "--format", "json"])
    assert exit_info.value.code == 0
    captured = capsys.readouterr()
    found = json.loads(captured.out)
    assert [r["model"] for r in found["results"]] == ["good"] and list(found["damaged"]) == ["damaged"]
    assert "warning: damaged: NaN or infinite values" in captured.err


def test_training_leaves_a_damaged_model_out(probex_zoo, tmp_path):
    """A train-split model with an infinite weight would turn the tree's expert NaN; it is left out, by name."""
    import shutil

    from safetensors.numpy import load_file, save_file

    zoo = tmp_path / "zoo"
    shutil.copytree(probex_zoo, zoo)
    weights = next((zoo / "t1" / "ft00").glob("*.safetensors"))
    state = load_file(weights)
    state[next(n for n, v in state.items() if v.ndim == 2)][0, 0] = np.nan
    save_file(state, str(weights))
    config = with_overrides(OURS, epochs=5, r_u=8, r_v=8, r_t=16)
    experts = ProbeXExperts(config, sweep_epochs=5, cache_dir=tmp_path / "cache", progress=False).fit(zoo)
    assert list(experts.skipped_) == ["t1/ft00"] and "NaN or infinite" in experts.skipped_["t1/ft00"]
    assert len(experts.experts) == 2
    for tree in ("t0", "t1"):
        probs = [c["probability"] for c in experts.predict(zoo / tree / "ft01")["classes"]]
        assert probs and np.all(np.isfinite(probs))


def test_truth_with_odd_classes_or_splits_is_refused_by_name(probex_zoo, tmp_path):
    """`classes` given as one string was read letter by letter; an unknown split trained no expert and said
    so only by "0 experts"."""
    import shutil

    from ancestree.errors import BadInputError
    from ancestree.probex.experts import read_zoo

    zoo = tmp_path / "zoo"
    shutil.copytree(probex_zoo, zoo)
    shutil.copytree(probex_zoo / "t0" / "ft03", tmp_path / "outside")  # a model folder beside the zoo
    truth = json.loads((zoo / "truth.json").read_text())
    for change, problem in (({"classes": "red plain cross"}, "classes must be a list of names"),
                            ({"classes": [1, 2]}, "classes must be a list of names"),
                            ({"split": "training"}, "has split 'training'"),
                            # found by a dogfood round: read from outside the zoo, and read twice
                            ({"id": "../outside"}, "names no folder below the zoo"),
                            ({"id": truth["models"][4]["id"]}, "is listed twice")):
        edited = {**truth, "models": [{**truth["models"][3], **change}, *truth["models"][4:]]}
        (zoo / "truth.json").write_text(json.dumps(edited))
        with pytest.raises(BadInputError, match=problem):
            read_zoo(zoo)


def test_training_again_over_a_damaged_expert_retrains_it(fitted, probex_zoo, tmp_path):
    """An expert cut off on disk (an interrupted copy, a full disk) in the folder a training resumes from was
    an internal error; it is trained again."""
    import shutil

    _, out = fitted
    folder = tmp_path / "experts"
    shutil.copytree(out, folder)
    weights = next(folder.glob("expert-*/weights.pt"))
    weights.write_bytes(weights.read_bytes()[:300])
    config = with_overrides(OURS, epochs=5, r_u=8, r_v=8, r_t=16)
    again = ProbeXExperts(config, sweep_epochs=5, resume_dir=folder, progress=False).fit(probex_zoo)
    assert len(again.experts) == 2 and weights.stat().st_size > 300


def test_a_clip_text_encoder_moved_away_is_named(tmp_path):
    """Experts trained with `--text-encoder clip:FOLDER` load it when a query needs encoding; the folder gone
    was an internal error (OSError from the loader)."""
    from ancestree.errors import BadInputError
    from ancestree.probex.text import ClipTextEncoder

    with pytest.raises(BadInputError, match="gone-clip: no such CLIP folder"):
        ClipTextEncoder(tmp_path / "gone-clip").encode(["red plain square"])


@pytest.mark.parametrize("emptied", ["router.pt", "weights.pt"])
def test_an_experts_file_emptied_is_named(emptied, fitted, probex_zoo, tmp_path, capsys):
    """An empty router.pt or weights.pt made torch raise EOFError, which click turned into a silent exit 1."""
    import shutil

    from ancestree.cli.main import run

    _, out = fitted
    folder = tmp_path / "experts"
    shutil.copytree(out, folder)
    target = folder / "router.pt" if emptied == "router.pt" else next(folder.glob("expert-*/weights.pt"))
    target.write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "predict", str(probex_zoo / "t0" / "ft03"), "--experts", str(folder)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "damaged ProbeX experts folder" in err and str(folder) in err, err


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PAYLOAD_RAN",))


@pytest.mark.parametrize("damage", ["router threshold not a number", "expert layer renamed", "weights.pt runs code"])
def test_an_experts_folder_edited_by_hand_is_named(damage, fitted, probex_zoo, tmp_path, capsys, monkeypatch):
    """A word for a number in experts.json (TypeError at the first comparison) and a layer name the layout
    lacks (KeyError) were internal errors, exit 1; a pickle that would run code was refused, with torch's page
    of advice on stderr and the one-line message cut mid-sentence."""
    import pickle
    import shutil

    from ancestree.cli.main import run

    _, out = fitted
    folder = tmp_path / "experts"
    shutil.copytree(out, folder)
    monkeypatch.chdir(tmp_path)
    if damage == "router threshold not a number":
        meta = json.loads((folder / "experts.json").read_text())
        meta["router"]["threshold"] = "high"
        (folder / "experts.json").write_text(json.dumps(meta))
    elif damage == "expert layer renamed":
        for path in folder.glob("expert-*/expert.json"):
            meta = json.loads(path.read_text())
            meta["layers"] = ["no.such.layer"] * len(meta["layers"])
            path.write_text(json.dumps(meta))
    else:
        for path in folder.glob("expert-*/weights.pt"):
            path.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(SystemExit) as exit_info:
        run(["probex", "predict", str(probex_zoo / "t0" / "ft03"), "--experts", str(folder)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "damaged ProbeX experts folder" in err and str(folder) in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "PAYLOAD_RAN").exists(), err


def test_a_damaged_layer_cache_is_filled_again(probex_zoo, tmp_path):
    """The layer cache is only a cache: files cut short (here all of them) are read again from the models."""
    from ancestree.probex.layers import LayerCache

    cache = LayerCache(tmp_path / "cache")
    first = cache.add_all({"m": probex_zoo / "t0" / "ft03"}, progress=False)["m"]
    whole = (cache.root / f"{first['key']}.npz").read_bytes()
    (cache.root / f"{first['key']}.npz").write_bytes(whole[:100])
    (cache.root / "index.json").write_text("{cut")
    again = LayerCache(tmp_path / "cache").add_all({"m": probex_zoo / "t0" / "ft03"}, progress=False)["m"]
    assert again == first and (cache.root / f"{first['key']}.npz").read_bytes() == whole


def test_fit_without_folders_leaves_nothing_in_temp(probex_zoo, tmp_path, monkeypatch):
    """With no cache or resume folder the layer and text caches live in a temporary folder the experts own:
    it is removed with them (each fit left a probex-* folder of layer files in /tmp for good)."""
    import gc
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = with_overrides(OURS, epochs=5, r_u=8, r_v=8, r_t=16)
    experts = ProbeXExperts(config, sweep_epochs=5, progress=False).fit(probex_zoo)
    assert experts.predict(probex_zoo / "t0" / "ft01")["classes"]  # the cache serves reads after fit
    assert [p.name.startswith("probex-") for p in tmp_path.iterdir()] == [True]
    del experts
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_a_copy_with_its_tensors_in_another_order_has_the_same_expert(fitted, probex_zoo, tmp_path):
    """An int8 copy of the zoo's is written with its tensors in another order than its original: the layout
    key hashed them in file order, so the copy matched no tree ("no expert"). An experts folder written with
    the older keys is refused by name rather than routing nothing."""
    import shutil

    from safetensors.numpy import load_file, save_file

    from ancestree.errors import BadInputError

    experts, out = fitted
    model = probex_zoo / "t0" / "ft03"
    state = load_file(next(model.glob("*.safetensors")))
    (tmp_path / "reordered").mkdir()
    # safetensors orders a file's tensors by dtype, then name: matrices in fp16 go after the fp32 vectors
    save_file({k: v.astype(np.float16) if v.ndim == 2 else v for k, v in state.items()}, str(tmp_path / "reordered" / "model.safetensors"))
    shutil.copy(model / "config.json", tmp_path / "reordered")
    assert experts.predict(tmp_path / "reordered", "m")["tree"] == experts.predict(model, "m")["tree"] is not None
    old = tmp_path / "old"
    shutil.copytree(out, old)
    meta = json.loads((old / "experts.json").read_text())
    del meta["key_version"]
    (old / "experts.json").write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match="older ancestree"):
        ProbeXExperts.load(old)


def test_an_expert_saved_before_the_logistic_readout_can_be_saved_again(tmp_path):
    """Its row namer has no `coef`/`intercept`: saving it again (a `resume_dir` run, a load and save) turned
    None into a tensor and failed."""
    from ancestree.probex.naming import RowNamer

    old = RowNamer.restore({"layer": "fc", "sharpness": 10.0, "quality": 0.5},
                           {"ref": np.ones((3, 4)), "rows": np.arange(2), "text_seen": np.ones((2, 5))})
    state = {k: torch.as_tensor(v) for k, v in old.state().items()}
    again = RowNamer.restore({"layer": "fc", "sharpness": 10.0, "quality": 0.5}, {k: v.numpy() for k, v in state.items()})
    assert again.fitted and again.coef is None and sorted(state) == ["ref", "rows", "text_seen"]
