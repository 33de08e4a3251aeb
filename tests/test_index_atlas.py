"""The atlas on the tiny zoo: incremental placement agrees with a full recovery, the CLI, and Dask ingestion."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ancestree.cli.main import run
from ancestree.errors import BadInputError
from ancestree.fingerprint import fingerprint_many
from ancestree.graph import GraphRecovery
from ancestree.index import Atlas
from ancestree.io import scan_models


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        run(args)
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


@pytest.fixture(scope="module")
def tiny_tree(tiny_zoo: Path) -> dict:
    """What `ancestree tree --scan ZOO` recovers: the same recovery over freshly computed fingerprints."""
    fps = fingerprint_many(list(scan_models(tiny_zoo)), progress=False)
    return GraphRecovery().fit(fps).graph_.to_dict()


def test_incremental_index_agrees_with_tree(tiny_atlas: Path, tiny_tree: dict) -> None:
    with Atlas(tiny_atlas, read_only=True) as atlas:
        names = sorted(r["name"] for r in atlas.ls())
        assert names == sorted(m["id"] for m in tiny_tree["models"])
        assert len(atlas.store.runs()) == 2  # built in two batches: the second one placed incrementally
        for name in names:
            shown = atlas.show(name)
            recovered = {(e["parent"], e["relation"]) for e in shown["parents"] if "recovered" in e["source"]}
            expected = {(e["parent"], e["relation"]) for e in tiny_tree["edges"] if e["child"] == name}
            assert recovered == expected, name
            # the lineage path climbs recovered edges up to a root
            path = shown["lineage"]
            for child, parent in zip(path, path[1:]):
                assert any(e["parent"] == parent and e["child"] == child for e in tiny_tree["edges"])
            assert not [e for e in tiny_tree["edges"] if e["child"] == path[-1]]
        # trees: the same partition of models
        by_tree: dict[int, set[str]] = {}
        for r in atlas.ls():
            by_tree.setdefault(r["tree"], set()).add(r["name"])
        truth: dict[int, set[str]] = {}
        for m in tiny_tree["models"]:
            truth.setdefault(m["tree"], set()).add(m["id"])
        assert sorted(map(sorted, by_tree.values())) == sorted(map(sorted, truth.values()))


def test_adding_is_incremental_and_skips_known(tiny_zoo: Path, tiny_atlas: Path, tmp_path: Path) -> None:
    db = tmp_path / "copy.db"
    shutil.copy(tiny_atlas, db)
    with Atlas(db) as atlas:
        assert atlas.add(scan=[tiny_zoo]).added == []  # every model is known by its files' stat
        edges_before = {(e.parent, e.child) for e in atlas.edges("recovered")}
        tree_before = {r["name"]: r["tree"] for r in atlas.ls()}
        # the same files at another path: recognised by their hash, only remembered as an alias
        model = next(p for _, p in scan_models(tiny_zoo) if (p / "config.json").exists())
        copy = shutil.copytree(model, tmp_path / "copied-model")
        report = atlas.add([copy])
        assert report.added == [] and report.skipped == [str(copy)]
        with pytest.raises(BadInputError, match=r"indexed as m\d+ \(the very same files\)"):
            atlas.show(str(copy))
        # a new fine-tune-like model (a root's weights, each tensor scaled) joins one tree, re-examining only it
        root = sorted(atlas.ls(), key=lambda r: -r["parameters"])[0]
        new = _perturbed_copy(Path(root["path"]), tmp_path / "new-child")
        report = atlas.add([new])
        assert report.added == [str(new)]
        placement = report.placement
        assert placement.trees_touched == 1 and placement.members < len(atlas.ls())
        shown = atlas.show(str(new))
        assert shown["tree"] is not None and shown["parents"], shown
        # the new model joined one old tree whole; every other tree and its edges stayed as they were
        joined = {r["name"] for r in atlas.ls() if r["tree"] == shown["tree"]} - {str(new)}
        assert len({tree_before[n] for n in joined}) == 1
        assert joined == {n for n, t in tree_before.items() if t == tree_before[next(iter(joined))]}
        untouched = {(p, c) for p, c in edges_before if c not in joined}
        assert untouched <= {(e.parent, e.child) for e in atlas.edges("recovered")}
        assert all(r["tree"] == tree_before[r["name"]] for r in atlas.ls() if r["name"] in tree_before and r["name"] not in joined)


def _perturbed_copy(model: Path, out: Path) -> Path:
    """A copy of a safetensors model folder with every float tensor moved by 2% noise (fixed seed)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    shutil.copytree(model, out)
    weights = out / "model.safetensors"
    tensors = load_file(str(weights))
    rng = np.random.default_rng(7)
    for name, value in tensors.items():
        if value.dtype.kind == "f" and value.size > 1:
            tensors[name] = (value + 0.02 * value.std() * rng.standard_normal(value.shape)).astype(value.dtype)
    save_file(tensors, str(weights))
    readme = out / "README.md"
    if readme.exists():
        readme.unlink()  # no declared base: placement must come from the weights
    return out


def _assert_same_tree_ids(db: Path, exported: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """`index export` numbers trees as `index ls` and `index show` do (the index's own tree ids)."""
    code, out, _ = cli(["index", "ls", "--db", str(db), "--format", "json"], capsys)
    listed = {row["name"]: row["tree"] for row in json.loads(out)}
    assert code == 0 and {m["id"]: m["tree"] for m in exported["models"]} == listed
    some = exported["models"][0]
    code, out, _ = cli(["index", "show", some["id"], "--db", str(db), "--format", "json"], capsys)
    assert json.loads(out)["tree"] == some["tree"]


def test_cli_show_ls_export_rebuild(tiny_atlas: Path, tiny_tree: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "cli.db"
    shutil.copy(tiny_atlas, db)
    child = next(e for e in tiny_tree["edges"] if e["relation"] == "finetune")
    code, out, _ = cli(["index", "show", child["child"], "--db", str(db), "--format", "json"], capsys)
    shown = json.loads(out)
    assert code == 0 and child["parent"] in [e["parent"] for e in shown["parents"]]
    assert shown["lineage"][:2] == [child["child"], child["parent"]] or child["parent"] in shown["lineage"]
    code, out, _ = cli(["index", "ls", "--db", str(db), "--format", "json"], capsys)
    assert code == 0 and len(json.loads(out)) == len(tiny_tree["models"])
    code, out, _ = cli(["index", "export", "--db", str(db), "--format", "json"], capsys)
    exported = json.loads(out)
    assert {(e["parent"], e["child"]) for e in exported["edges"]} == {(e["parent"], e["child"]) for e in tiny_tree["edges"]}
    with Atlas(db, read_only=True) as atlas:  # never over an indexed model's weights (it wrote JSON over them)
        weights = next(Path(atlas.model(child["child"])["path"]).glob("*.safetensors"))
    before = weights.read_bytes()
    code, _, err = cli(["index", "export", "--db", str(db), "-o", str(weights)], capsys)
    assert code == 2 and "inside the input folder" in err and weights.read_bytes() == before
    _assert_same_tree_ids(db, exported, capsys)
    for fmt in ("graphml", "dot", "mermaid", "html"):  # the package's writers, on the atlas's graph
        code, _, _ = cli(["index", "export", "--db", str(db), "--format", fmt, "-o", str(tmp_path / f"g.{fmt}")], capsys)
        text = (tmp_path / f"g.{fmt}").read_text()
        assert code == 0 and all(m["id"] in text for m in tiny_tree["models"]), fmt
    import networkx as nx

    assert nx.read_graphml(tmp_path / "g.graphml").number_of_edges() == len(tiny_tree["edges"])
    from ancestree.index.store import Edge

    with Atlas(db) as atlas:  # scramble the stored graph (one chain by name): rebuild must recover it again
        names = sorted(r["name"] for r in atlas.ls())
        with atlas.store.transaction() as cur:
            atlas.store.replace_recovered(names, [Edge(a, b, "finetune", 0.5) for a, b in zip(names, names[1:])],
                                          [(names[0], names)], cur)
    code, out, _ = cli(["index", "rebuild", "--db", str(db), "--format", "json"], capsys)
    assert code == 0 and json.loads(out)["models"] == len(tiny_tree["models"])
    code, out, _ = cli(["index", "export", "--db", str(db), "--format", "json"], capsys)
    _assert_same_tree_ids(db, json.loads(out), capsys)  # a rebuild makes new tree rows: export follows them
    with Atlas(db, read_only=True) as atlas:
        assert {(e.parent, e.child, e.relation) for e in atlas.edges("recovered")} == {
            (e["parent"], e["child"], e["relation"]) for e in tiny_tree["edges"]}
    code, _, err = cli(["index", "show", "no/such/model", "--db", str(db)], capsys)
    assert code == 2 and "no such model" in err and "Traceback" not in err
    code, _, err = cli(["index", "ls", "--db", str(tmp_path / "missing.db")], capsys)
    assert code == 2 and "no such index" in err


@pytest.mark.slow
def test_dask_ingestion_matches_local(tiny_zoo: Path, tiny_atlas: Path, tmp_path: Path) -> None:
    from distributed import LocalCluster

    from ancestree.index.ingest import ingest_dask
    from conftest import small_tensors, write_hf_folder

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Atlas(tmp_path / "dask.db") as atlas:
            report = atlas.add(scan=[tiny_zoo], dask=cluster.scheduler_address)
            assert not report.bad and len(report.added) == len(list(scan_models(tiny_zoo)))
            got = {r["name"]: r["content_key"] for r in atlas.ls()}
            edges = {(e.parent, e.child, e.relation) for e in atlas.edges("recovered")}
            # an index an older version made is fingerprinted again by the workers too (it was read in this process)
            from test_index_updates import _as_if_an_older_version_stored

            _as_if_an_older_version_stored(atlas)
            again = atlas.add(dask=cluster.scheduler_address)
            assert sorted(again.updated) == sorted(got) and not again.bad and not atlas.store.stale_prints()
            assert all(r["placed"] for r in atlas.ls()) and {r["name"]: r["content_key"] for r in atlas.ls()} == got
        # two runs at once on one cluster, models of the same names: each gets its own (the task keys were
        # alike, and one index stored the other hub's models)
        runs = {}
        for hub, seed in (("a", 1), ("b", 2)):
            runs[hub] = [(f"m{i}", str(write_hf_folder(tmp_path / hub / f"m{i}", small_tensors(10 * seed + i)))) for i in range(3)]
        gen_a, gen_b = (ingest_dask(runs[h], set(), cluster.scheduler_address) for h in ("a", "b"))
        first_a, first_b = next(gen_a), next(gen_b)  # both runs' tasks submitted before either is done
        for hub, results in (("a", [first_a, *gen_a]), ("b", [first_b, *gen_b])):
            assert sorted(r.path for r in results) == sorted(path for _, path in runs[hub]), hub
    with Atlas(tiny_atlas, read_only=True) as local:
        assert got == {r["name"]: r["content_key"] for r in local.ls()}
        assert edges == {(e.parent, e.child, e.relation) for e in local.edges("recovered")}


def test_export_of_all_edges_keeps_the_recovered_relation_of_a_declared_edge(tiny_atlas: Path, tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`index export --edges all` kept the declared edge (relation unknown, confidence 1) where a card and
    the recovery agree, and the JSON said nowhere where an edge came from."""
    db = tmp_path / "all.db"
    shutil.copy(tiny_atlas, db)
    with Atlas(db, read_only=True) as atlas:
        recovered = {(e.parent, e.child): e.relation for e in atlas.edges("recovered")}
        declared = {(e.parent, e.child) for e in atlas.edges("declared")}
    both = declared & set(recovered)
    assert both  # the tiny zoo's cards agree with the recovery
    code, out, _ = cli(["index", "export", "--db", str(db), "--format", "json", "--edges", "all"], capsys)
    exported = json.loads(out)
    edges = {(e["parent"], e["child"]): e for e in exported["edges"]}
    assert code == 0 and all(edges[k]["source"] == "declared+recovered" and edges[k]["relation"] == recovered[k] for k in both)
    assert all(edges[k]["source"] == "declared" for k in declared - both)
    assert all(edges[k]["source"] == "recovered" for k in set(recovered) - both)
    # numbered as `index ls` numbers them (it was from 0 by components); the tiny zoo's cards join no two trees
    _assert_same_tree_ids(db, exported, capsys)
