"""Keeping one index file up to date: models re-uploaded under their name, aliases, messages, pipes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ancestree.cli.main import run
from ancestree.errors import BadInputError
from ancestree.fingerprint import fingerprint
from ancestree.index import Atlas, IndexStore
from ancestree.index.atlas import Outcome
from conftest import small_tensors, write_hf_folder


def test_output_piped_into_head_exits_quietly(tmp_path: Path) -> None:
    """`ancestree index ls | head -1`: the reader goes away after one line; no complaint, status 0 or 141."""
    fp = fingerprint(write_hf_folder(tmp_path / "m", small_tensors()), model_id="m")
    with IndexStore(tmp_path / "big.db") as store:  # ~110 KB of table: more than a pipe holds
        for i in range(1200):
            fp.id = f"org/a-model-with-a-long-name-{i:05d}"
            store.add_model(fp, str(tmp_path / "m"), f"hash{i}", None, None)
    proc = subprocess.Popen([sys.executable, "-m", "ancestree", "index", "ls", "--db", str(tmp_path / "big.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # what `head -1` reads, then it closes the pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(30) in (0, 141) and err == "", err


def fine_tunes(root: Path, name: str, seed: int, children: int, side: int = 32) -> list[tuple[str, Path]]:
    """``(name, folder)`` of a root model and ``children`` fine-tune-like copies of it (root + 5 % noise)."""
    rng = np.random.default_rng(seed)
    base = {f"layer.{i}.weight": rng.standard_normal((side, side)).astype(np.float32) for i in range(3)}
    out = [(name, write_hf_folder(root / name, base))]
    for c in range(children):
        tensors = {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
        out.append((f"{name}-ft{c}", write_hf_folder(root / f"{name}-ft{c}", tensors)))
    return out


def consistent(atlas: Atlas) -> dict[str, int | None]:
    """Checks the atlas holds together (every model placed, each tree's size and root right); returns the trees."""
    rows = atlas.ls()
    tree_of = {r["name"]: r["tree"] for r in rows}
    assert all(r["placed"] and r["tree"] is not None for r in rows), rows
    for t in atlas.store.trees():
        members = [n for n, tree in tree_of.items() if tree == t["id"]]
        assert t["size"] == len(members) and (t["root"] is None or t["root"] in members), t
    for e in atlas.edges("recovered"):
        assert tree_of[e.parent] == tree_of[e.child], e
    return tree_of


def test_a_model_reuploaded_under_its_name_is_updated(tmp_path: Path) -> None:
    items = fine_tunes(tmp_path / "hub", "a", 1, 2) + fine_tunes(tmp_path / "hub", "b", 2, 1)
    heard: list[Outcome] = []
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(items)
        assert {e.parent for e in atlas.edges("recovered") if e.child.startswith("a-ft")} <= {"a", "a-ft0", "a-ft1"}
        assert atlas.show("a")["children"]  # the fine-tunes hang below a's weights
        # `a` is uploaded again with other weights: new ones, related to nothing indexed
        rng = np.random.default_rng(9)
        write_hf_folder(tmp_path / "hub" / "a", {f"layer.{i}.weight": rng.standard_normal((32, 32)).astype(np.float32)
                                                 for i in range(3)})
        report = atlas.add(items, on_model=heard.append)
        assert report.updated == ["a"] and report.added == [] and len(report.skipped) == len(items) - 1
        assert [o.status for o in heard].count("updated") == 1 and report.summary()["updated"] == 1
        assert sorted(r["name"] for r in atlas.ls()) == sorted(n for n, _ in items)  # no second `a@...`
        fresh = fingerprint(tmp_path / "hub" / "a", model_id="a")
        assert atlas.model("a")["content_key"] == fresh.content_key
        shown = atlas.show("a")
        assert shown["parents"] == [] and shown["children"] == [] and shown["lineage"] == ["a"]
        tree_of = consistent(atlas)
        assert tree_of["a-ft0"] == tree_of["a-ft1"] != tree_of["a"]  # the children, re-examined, stay together
        edges = {(e.parent, e.child, e.relation) for e in atlas.edges("recovered")}
    with Atlas(tmp_path / "fresh.db") as atlas:  # what an index made from the files as they are now says
        atlas.add(items)
        assert {(e.parent, e.child, e.relation) for e in atlas.edges("recovered")} == edges


def test_a_name_reuploaded_as_a_copy_becomes_an_alias(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    items = fine_tunes(tmp_path / "hub", "a", 4, 2)
    db = str(tmp_path / "atlas.db")
    with Atlas(db) as atlas:
        atlas.add(items)
    # a genuine duplicate (the same files under another name) is skipped: its line and the summary agree
    shutil.copytree(tmp_path / "hub" / "a-ft0", tmp_path / "hub" / "copy")
    monkeypatch.chdir(tmp_path / "hub")  # models named as given: a, a-ft0, ...
    with pytest.raises(SystemExit):
        run(["index", "add", *(name for name, _ in items), "copy", "--db", db])
    out, err = capsys.readouterr()
    assert "added 0, updated 0, skipped 4 already indexed" in out
    assert [line.split()[0] for line in err.splitlines()] == ["skipped"] * 4, err
    assert "skipped  copy  (the very same files as a-ft0)" in err
    # `a` uploaded again as a copy of its fine-tune a-ft1: indexed once, under a-ft1; a's children placed again
    shutil.copy(tmp_path / "hub" / "a-ft1" / "model.safetensors", tmp_path / "hub" / "a" / "model.safetensors")
    with Atlas(db) as atlas:
        report = atlas.add(items)
        assert report.updated == ["a"] and sorted(r["name"] for r in atlas.ls()) == ["a-ft0", "a-ft1"]
        with pytest.raises(BadInputError, match="indexed as a-ft1"):
            atlas.show("a")
        consistent(atlas)
        assert atlas.store.trees()[0]["size"] == 2


def test_a_reuploaded_name_leaves_its_old_files_to_the_copy_that_holds_them(tmp_path: Path) -> None:
    """``a2`` holds the very same files as ``a`` (indexed as an alias of it). When ``a`` is uploaded again
    with other weights, the old files are still there under ``a2``: they stay indexed under that name, with
    their place in the graph and their children (the alias was dropped with ``a``'s old content)."""
    items = fine_tunes(tmp_path / "hub", "a", 5, 2)
    shutil.copytree(tmp_path / "hub" / "a", tmp_path / "hub" / "a2")
    items.append(("a2", tmp_path / "hub" / "a2"))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(items)
        assert atlas.store.alias_of("a2") == "a"
        children = sorted(c["child"] for c in atlas.show("a")["children"])
        write_hf_folder(tmp_path / "hub" / "a", small_tensors(11))  # other weights under the name `a`
        report = atlas.add(items)
        assert report.updated == ["a"] and report.added == []
        assert sorted(r["name"] for r in atlas.ls()) == ["a", "a-ft0", "a-ft1", "a2"]
        assert atlas.store.alias_of("a2") is None
        assert atlas.model("a2")["content_key"] == fingerprint(tmp_path / "hub" / "a2").content_key
        assert sorted(c["child"] for c in atlas.show("a2")["children"]) == children and children
        assert atlas.show("a")["children"] == []
        consistent(atlas)
        assert atlas.add(items).skipped == [n for n, _ in items]  # nothing left to do


def test_declared_bases_resolve_as_tree_resolves_them(tmp_path: Path) -> None:
    """A card's ``base_model: org/base`` names the model indexed as ``base``, also when ``base`` holds the very
    same files as a model indexed before it (an alias), and when two names end in ``/base`` (the first, as in
    `tree`)."""
    from ancestree.graph.metadata import declared_parents

    hub = tmp_path / "hub"
    (_, base_dir), (_, ft) = fine_tunes(hub, "base", 5, 1)
    shutil.copytree(base_dir, hub / "aaa-mirror")  # indexed first: `base` becomes its alias
    write_hf_folder(hub / "child", small_tensors(6), {"base_model": "org/base"})
    write_hf_folder(hub / "runs" / "x" / "base-ft0", small_tensors(7))  # a second name ending in /base-ft0
    write_hf_folder(hub / "kid", small_tensors(8), {"base_model": "org/base-ft0"})
    items = [("aaa-mirror", hub / "aaa-mirror"), ("base", base_dir), ("base-ft0", ft), ("runs/x/base-ft0", hub / "runs" / "x" / "base-ft0")]
    fps = [fingerprint(p, model_id=n) for n, p in [*items, ("child", hub / "child"), ("kid", hub / "kid")]]
    tree = declared_parents(fps)
    assert tree == {"child": ["base"], "kid": ["base-ft0"]}
    for batches in ([items + [("child", hub / "child"), ("kid", hub / "kid")]],  # one run
                    [[("child", hub / "child"), ("kid", hub / "kid"), *items[:1]], items[1:]]):  # the bases later
        db = tmp_path / f"atlas{len(batches)}.db"
        with Atlas(db) as atlas:
            for batch in batches:
                atlas.add(batch)
            declared = {e.child: e.parent for e in atlas.edges("declared")}
            assert declared == {"child": "aaa-mirror", "kid": "base-ft0"}, batches  # base: the same files as aaa-mirror
            assert atlas.show("child")["parents"] == [{"parent": "aaa-mirror", "child": "child", "relation": "unknown",
                                                       "confidence": 1.0, "source": "declared"}]


def test_a_card_naming_an_alias_is_linked_even_when_placement_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``c``'s card names ``b2``, which turns up in a later run holding the very same files as ``b``. The
    declared edge b -> c is written with the alias: a run stopped during placement (Ctrl-C) lost it for
    good, since the next run skips ``b2`` as indexed."""
    import ancestree.index.atlas as atlas_module

    hub = tmp_path / "hub"
    base = small_tensors(21)
    write_hf_folder(hub / "b", base)
    write_hf_folder(hub / "c", {k: v + np.float32(0.05) * v for k, v in base.items()}, {"base_model": "b2"})
    db = tmp_path / "atlas.db"
    with Atlas(db) as atlas:
        atlas.add(scan=[hub])
    write_hf_folder(hub / "b2", base)

    def stopped(store):
        raise KeyboardInterrupt

    monkeypatch.setattr(atlas_module, "place", stopped)
    with Atlas(db) as atlas, pytest.raises(KeyboardInterrupt):
        atlas.add(scan=[hub])
    monkeypatch.undo()
    with Atlas(db) as atlas:
        assert atlas.add(scan=[hub]).skipped == ["b", "b2", "c"]
        assert [(e.parent, e.child) for e in atlas.edges("declared")] == [("b", "c")]


@pytest.mark.parametrize("mirror", ["aaa-mirror/a", "zzz-mirror/a"])
def test_a_card_follows_the_name_it_declares_when_that_name_is_uploaded_again(tmp_path: Path, mirror: str) -> None:
    """``b``'s card declares ``org/a``; ``mirror`` holds the very same files as ``org/a`` (indexed first, or
    as an alias of it). When ``org/a`` is uploaded again with other weights, the card names the new ``org/a``:
    ``b`` has that one declared parent, not also the old files' holder, after the add and after a rebuild."""
    hub = tmp_path / "hub"
    base = small_tensors(21)
    write_hf_folder(hub / "org" / "a", base)
    shutil.copytree(hub / "org" / "a", hub / mirror)
    write_hf_folder(hub / "b", {k: v + np.float32(0.05) * v for k, v in base.items()}, {"base_model": "org/a"})
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[hub])
        first = "aaa-mirror/a" if mirror.startswith("aaa") else "org/a"  # the name indexed; the other is its alias
        assert [(e.parent, e.child) for e in atlas.edges("declared")] == [(first, "b")]
        write_hf_folder(hub / "org" / "a", small_tensors(11))
        atlas.add(scan=[hub])
        assert sorted(r["name"] for r in atlas.ls()) == sorted(["b", mirror, "org/a"])
        assert [(e.parent, e.child) for e in atlas.edges("declared")] == [("org/a", "b")]
        assert [p["parent"] for p in atlas.show("b")["parents"] if p["source"] == "declared"] == ["org/a"]
        atlas.rebuild()
        assert [(e.parent, e.child) for e in atlas.edges("declared")] == [("org/a", "b")]


def test_a_classifier_added_later_is_placed_below_its_base(tmp_path: Path) -> None:
    """A fine-tune given a task head arrives after its base and a sibling: the index places it by the same
    architecture groups as `tree` (it was another architecture, a tree of its own)."""
    rng = np.random.default_rng(8)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_t(5, size=shape) * 0.05).astype(np.float32)

    base = {"wte.weight": w(300, 48), **{f"h.{i}.{k}.weight": w(48, 48) for i in range(4) for k in ("q", "v", "o")}}

    def tune(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: v + np.float32(0.01) * rng.standard_normal(v.shape).astype(np.float32) for k, v in state.items()}

    write_hf_folder(tmp_path / "hub" / "base", base)
    write_hf_folder(tmp_path / "hub" / "sibling", tune(base))
    write_hf_folder(tmp_path / "hub" / "classifier", tune(base) | {"score.weight": w(3, 48)})
    with Atlas(tmp_path / "a.db") as atlas:
        atlas.add([("base", tmp_path / "hub" / "base"), ("sibling", tmp_path / "hub" / "sibling")])
        atlas.add([("classifier", tmp_path / "hub" / "classifier")])
        recovered = {frozenset((e.parent, e.child)) for e in atlas.edges("recovered")}
    # noise is not training: the direction of these two edges means nothing, the pairs do
    assert recovered == {frozenset(("base", "sibling")), frozenset(("base", "classifier"))}, recovered


def test_cards_naming_each_other_give_no_cycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``a``'s card names its own fine-tune ``b`` as base, ``b``'s names ``a``. `index export --edges all`
    wrote both declared edges, a cycle `eval` refuses to read; `show a` gave the lineage a <- b (its child).
    The declared edge against the recovered one is left out and named; the rest is one edge per pair."""
    from ancestree.graph.model_graph import ModelGraph
    from ancestree.web.app import AtlasReader

    hub = tmp_path / "hub"
    base = small_tensors(21)
    write_hf_folder(hub / "a", base, {"base_model": "b"})
    rng = np.random.default_rng(5)
    for name in ("b", "c"):  # two fine-tunes: the weights say which way is down
        write_hf_folder(hub / name, {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()},
                        {"base_model": "a"})
    db = tmp_path / "atlas.db"
    with Atlas(db) as atlas:
        atlas.add(scan=[hub])
        recovered = {(e.parent, e.child) for e in atlas.edges("recovered")}
        (root,) = {"a", "b", "c"} - {child for _, child in recovered}
        assert len(recovered) == 2 and atlas.show(root)["lineage"] == [root]  # its declared base is below it
        agreed = {(e.parent, e.child) for e in atlas.edges("declared")} & recovered
        assert agreed and all([(p["parent"], p["source"]) for p in atlas.show(child)["parents"]] == [(parent, "declared+recovered")]
                              for parent, child in agreed)
    for edges in ("all", "declared"):
        with pytest.raises(SystemExit) as exit_:
            run(["index", "export", "--db", str(db), "--edges", edges, "-o", str(tmp_path / f"{edges}.json")])
        err = capsys.readouterr().err
        graph = ModelGraph.load(tmp_path / f"{edges}.json")  # refuses a cycle
        assert exit_.value.code in (0, None) and "would close a cycle" in err
        assert len(graph.notes) == 1 and len(graph.edges()) == 2
    for edges in ("all", "declared"):  # the page's graph is what export writes, tree ids included
        payload = AtlasReader(db).graph(edges)
        assert len({(e["parent"], e["child"]) for e in payload["edges"]}) == len(payload["edges"]) == 2
        assert len(payload["notes"]) == 1
        exported = json.loads((tmp_path / f"{edges}.json").read_text())
        assert {m["id"]: m["tree"] for m in payload["models"]} == {m["id"]: m["tree"] for m in exported["models"]}


def test_a_cache_repository_whose_revision_moves_is_indexed_by_what_it_names(tmp_path: Path) -> None:
    """``index add --scan`` skipped a model whose files were indexed under any name: a Hugging Face cache
    repository whose refs/main moved back to an older snapshot kept the newer weights under its name, and
    one moved forward left the old snapshot indexed under no name (it needed a second run)."""
    hub = tmp_path / "hub"
    repo = hub / "models--org--m"
    (repo / "refs").mkdir(parents=True)
    rng = np.random.default_rng(3)
    base = small_tensors(21)
    write_hf_folder(repo / "snapshots" / "aaaa", base)
    (repo / "refs" / "main").write_text("aaaa")
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[hub])
        write_hf_folder(repo / "snapshots" / "bbbb", {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
                                                      for k, v in base.items()})
        (repo / "refs" / "main").write_text("bbbb")  # a download moved main forward
        atlas.add(scan=[hub])
        assert sorted(r["name"] for r in atlas.ls()) == ["models--org--m", "models--org--m/snapshots/aaaa"]
        forward = atlas.model("models--org--m")["file_hash"]
        (repo / "refs" / "main").write_text("aaaa")  # and back
        atlas.add(scan=[hub])
        names = dict(atlas.store.names())
        assert names["models--org--m"] == "models--org--m/snapshots/aaaa"  # the very same files: one model, two names
        assert [r["name"] for r in atlas.ls() if r["file_hash"] == forward] == ["models--org--m/snapshots/bbbb"]


def test_one_name_given_twice_stays_two_models_run_after_run(tmp_path: Path) -> None:
    """Two paths of one name in one run are kept as ``m`` and ``m@hash``; the next run took the second for a
    re-upload of ``m`` and dropped the first (and the run after added it back)."""
    write_hf_folder(tmp_path / "m", small_tensors(1))
    write_hf_folder(tmp_path / "other" / "m", small_tensors(2))
    with Atlas(tmp_path / "atlas.db") as atlas:
        names = []
        for _ in range(3):
            report = atlas.add([("m", tmp_path / "m")], scan=[tmp_path / "other"])
            names.append(sorted(r["name"] for r in atlas.ls()))
            assert not report.updated, report
        assert len(names[0]) == 2 and names[0][0] == "m" and names[0][1].startswith("m@") and names == [names[0]] * 3


def test_show_leaves_out_a_declared_edge_that_closes_a_longer_cycle(tmp_path: Path) -> None:
    """Recovered a -> b -> c and a's card naming c: export left the declared c -> a out, `show a` listed c
    as a's declared parent (it checked the edges touching a, which see cycles of two only)."""
    from ancestree.index.store import Edge

    for seed, name in enumerate("abc"):
        write_hf_folder(tmp_path / "hub" / name, small_tensors(seed + 1))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        store = atlas.store
        with store.transaction() as cur:
            store.replace_recovered(["a", "b", "c"], [Edge("a", "b", "finetune", 0.9), Edge("b", "c", "finetune", 0.9)],
                                    [("a", ["a", "b", "c"])], cur)
            store.replace_declared([Edge("c", "a", "unknown", 1.0, "declared")], cur)
        exported = {(p, c) for p, c, _ in atlas.graph("all").edges()}
        assert exported == {("a", "b"), ("b", "c")}
        assert atlas.show("a")["parents"] == [] and atlas.show("c")["children"] == []
        # through a merge's less confident parent: a -> m (0.9) and c -> m (0.6), b -> c, b's card naming m
        write_hf_folder(tmp_path / "hub" / "m", small_tensors(9))
        atlas.add(scan=[tmp_path / "hub"])
        with store.transaction() as cur:
            store.replace_recovered(["a", "b", "c", "m"], [Edge("a", "m", "merge", 0.9), Edge("c", "m", "merge", 0.6),
                                                           Edge("b", "c", "finetune", 0.9)], [("a", ["a", "b", "c", "m"])], cur)
            store.replace_declared([Edge("m", "b", "unknown", 1.0, "declared")], cur)
        assert ("m", "b") not in {(p, c) for p, c, _ in atlas.graph("all").edges()}
        assert atlas.show("b")["parents"] == [] and atlas.show("m")["children"] == []
        assert atlas.show("b")["lineage"] == ["b"]


def test_a_ring_of_cards_is_left_out_alike_by_show_and_export(tmp_path: Path) -> None:
    """Three cards naming each other in a ring (a -> b -> c -> a) and no recovered edge among them: export left
    out whichever declared edge came last in its order, while `show` listed all three (it saw cycles of two
    only), so the two disagreed. Every edge of the ring is left out now, by both, in any order."""
    from ancestree.index.store import Edge

    for seed, name in enumerate("abcd"):
        write_hf_folder(tmp_path / "hub" / name, small_tensors(seed + 1))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        store = atlas.store
        ring = [Edge("a", "b", "unknown", 1.0, "declared"), Edge("b", "c", "unknown", 1.0, "declared"),
                Edge("c", "a", "unknown", 1.0, "declared"), Edge("c", "d", "unknown", 1.0, "declared")]
        for order in (ring, ring[::-1]):
            with store.transaction() as cur:
                store.replace_recovered(list("abcd"), [], [(m, [m]) for m in "abcd"], cur)
                store.replace_declared(order, cur)
            for source in ("all", "declared"):
                graph = atlas.graph(source)
                assert {(p, c) for p, c, _ in graph.edges()} == {("c", "d")}, source
                assert sorted(n["model"] for n in graph.notes) == ["a", "b", "c"]
            shown = {m: atlas.show(m) for m in "abcd"}
            assert [e["parent"] for e in shown["d"]["parents"]] == ["c"] and shown["d"]["lineage"] == ["d", "c"]
            assert all(not shown[m]["parents"] for m in "abc") and [e["child"] for e in shown["c"]["children"]] == ["d"]
            assert all(shown[m]["lineage"] == [m] for m in "abc")


def test_show_of_a_base_with_many_declared_children_reads_its_lineage_once(tmp_path: Path) -> None:
    """The cycle check of `show` searched the base's ancestors once per declared child (40 006 queries for
    10 000 children, paid by every /api/model request for that base)."""
    write_hf_folder(tmp_path / "hub" / "base", small_tensors(21))
    for i in range(12):  # cards only: their weights are unrelated, so the edges are declared alone
        write_hf_folder(tmp_path / "hub" / f"ft{i}", small_tensors(100 + i), {"base_model": "base"})
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        queries: list[str] = []
        atlas.store.conn.set_trace_callback(queries.append)
        shown = atlas.show("base")
        atlas.store.conn.set_trace_callback(None)
        assert len(shown["children"]) == 12 and len(queries) < 12, queries


def test_show_at_the_end_of_a_long_chain_of_cards_reads_each_ancestor_once(tmp_path: Path) -> None:
    """Each step of `show`'s declared lineage searched the ancestors of the step's base anew: at the end of a
    chain of 400 cards, 160 803 queries (a second per request); and it stopped at a base left out of the
    graph even when the model declared another one that is kept."""
    from ancestree.index.store import Edge

    for name in ("a", "x", "y", "z"):
        write_hf_folder(tmp_path / "hub" / name, small_tensors(len(name) + ord(name[0])))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        store = atlas.store
        chain = [f"c{i:03d}" for i in range(300)]
        fp = store.fingerprints(["a"])[0]
        for name in chain:  # model rows of their own (the fingerprint of one stands in: no file is read)
            fp.id = name
            store.add_model(fp, str(tmp_path / "hub" / "a"), f"hash-{name}", None, None)
        declared = [Edge(p, c, "unknown", 1.0, "declared") for p, c in zip(chain, chain[1:])]
        declared += [Edge("x", "a", "unknown", 1.0, "declared"), Edge("a", "x", "unknown", 1.0, "declared"),
                     Edge("y", "a", "unknown", 1.0, "declared")]  # a's card names x and y; x's names a
        with store.transaction() as cur:
            store.replace_recovered(["a", "x", "y", "z", *chain], [], [(m, [m]) for m in ["a", "x", "y", "z", *chain]], cur)
            store.replace_declared(declared, cur)
        queries: list[str] = []
        store.conn.set_trace_callback(queries.append)
        shown = atlas.show(chain[-1])
        store.conn.set_trace_callback(None)
        assert shown["lineage"] == chain[::-1] and len(queries) < 10 * len(chain), len(queries)
        assert {(p, c) for p, c, _ in atlas.graph("all").edges() if "c" not in p} == {("y", "a")}
        assert atlas.show("a")["lineage"] == ["a", "y"] and [e["parent"] for e in atlas.show("a")["parents"]] == ["y"]


def test_combine_edges_does_not_depend_on_the_order_of_its_edges() -> None:
    """The store hands edges over sorted by name, so only a direct call can shuffle them."""
    import random

    from ancestree.index.atlas import combine_edges
    from ancestree.index.store import Edge

    edges = [Edge("r", "a", "finetune", 0.9), Edge("a", "b", "finetune", 0.9), Edge("b", "a", "unknown", 1.0, "declared"),
             Edge("r", "a", "unknown", 1.0, "declared"), Edge("p", "q", "unknown", 1.0, "declared"),
             Edge("q", "s", "unknown", 1.0, "declared"), Edge("s", "p", "unknown", 1.0, "declared"),
             Edge("s", "t", "unknown", 1.0, "declared"), Edge("b", "c", "unknown", 1.0, "declared")]
    first = combine_edges(edges)
    for seed in range(20):
        shuffled = edges[:]
        random.Random(seed).shuffle(shuffled)
        kept, notes = combine_edges(shuffled)
        assert sorted(kept, key=repr) == sorted(first[0], key=repr)
        assert sorted(map(repr, notes)) == sorted(map(repr, first[1]))
    assert {(e.parent, e.child, e.source) for e in first[0]} == {
        ("r", "a", "declared+recovered"), ("a", "b", "recovered"), ("s", "t", "declared"), ("b", "c", "declared")}


def test_an_alias_that_becomes_a_model_forgets_it_was_an_alias(tmp_path: Path) -> None:
    """``copy`` of ``orig`` is indexed as its alias, then changed (a model of its own), then ``orig`` is
    re-uploaded: the stale alias row handed ``copy``'s name to orig's row, a UNIQUE failure (exit 1) that
    stopped every later run. A cache repository whose refs/main went a -> b -> a -> d -> a was skipped as
    holding d's weights by the same stale row."""
    rng = np.random.default_rng(4)
    base = small_tensors(21)

    def tuned() -> dict:
        return {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) if v.dtype == np.float32 else v for k, v in base.items()}

    hub = tmp_path / "hub"
    write_hf_folder(hub / "orig", base)
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[hub])
        shutil.copytree(hub / "orig", hub / "copy")
        atlas.add(scan=[hub])
        write_hf_folder(hub / "copy", tuned())
        atlas.add(scan=[hub])
        write_hf_folder(hub / "orig", tuned())
        report = atlas.add(scan=[hub])
        assert report.updated == ["orig"] and sorted(r["name"] for r in atlas.ls()) == ["copy", "orig"]
        assert atlas.store.alias_of("copy") is None
        atlas.add(scan=[hub])  # and the next run too


def test_a_second_writer_at_once_is_told_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two `index add` runs on one index at once interleaved their transactions: one died of a UNIQUE
    failure (exit 1). The second says another run is writing (exit 2) and leaves the index alone."""
    from ancestree.index.atlas import sole_writer

    write_hf_folder(tmp_path / "hub" / "a", small_tensors(1))
    db = tmp_path / "atlas.db"
    with Atlas(db) as atlas:
        atlas.add(scan=[tmp_path / "hub"])
    write_hf_folder(tmp_path / "hub" / "b", small_tensors(2))
    with sole_writer(db):  # what a run in progress holds
        with pytest.raises(SystemExit) as exit_:
            run(["index", "add", "--scan", str(tmp_path / "hub"), "--db", str(db)])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "another `index add` or `index rebuild` is writing this index" in err, err
        with Atlas(db) as atlas, pytest.raises(BadInputError, match="is writing this index"):
            atlas.rebuild()
    with Atlas(db) as atlas:
        assert sorted(r["name"] for r in atlas.ls()) == ["a"]
        atlas.add(scan=[tmp_path / "hub"])  # free again
        assert sorted(r["name"] for r in atlas.ls()) == ["a", "b"]


def test_a_moved_model_is_read_from_where_its_files_are(tmp_path: Path) -> None:
    """A model folder moved within the scanned hub became an alias of itself and the model kept its old, gone
    path (text search and anything reading it dropped the model)."""
    write_hf_folder(tmp_path / "hub" / "m", small_tensors(1))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        (tmp_path / "hub" / "moved").mkdir()
        (tmp_path / "hub" / "m").rename(tmp_path / "hub" / "moved" / "m")
        atlas.add(scan=[tmp_path / "hub"])
        assert Path(atlas.model("m")["path"]) == (tmp_path / "hub" / "moved" / "m").resolve()
        assert atlas.store.alias_of("moved/m") == "m"


def test_a_model_whose_files_left_is_read_from_a_copy_indexed_before_as_its_alias(tmp_path: Path) -> None:
    """A model with a byte-identical copy (indexed as its alias) whose own folder was deleted kept its gone
    path: the copy was skipped by its stat as a known alias, so nothing read the model from there."""
    write_hf_folder(tmp_path / "hub" / "m", small_tensors(1))
    shutil.copytree(tmp_path / "hub" / "m", tmp_path / "hub" / "z-copy")
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        assert atlas.store.alias_of("z-copy") == "m"
        shutil.rmtree(tmp_path / "hub" / "m")
        atlas.add(scan=[tmp_path / "hub"])
        assert Path(atlas.model("m")["path"]) == (tmp_path / "hub" / "z-copy").resolve()
        atlas.add(scan=[tmp_path / "hub"])  # and stays there, skipped by its stat
        assert Path(atlas.model("m")["path"]) == (tmp_path / "hub" / "z-copy").resolve()


def test_a_model_with_an_alias_keeps_its_name_when_its_files_are_touched_or_come_back(tmp_path: Path) -> None:
    """A model with a byte-identical copy (its alias): touching its weight file, or moving its folder away and
    back, had it fingerprinted again as a re-upload, and its row was handed to the alias's name (the model
    was listed as `z-copy` from then on)."""
    import os

    hub = tmp_path / "hub"
    write_hf_folder(hub / "m", small_tensors(1))
    shutil.copytree(hub / "m", hub / "z-copy")
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[hub])
        weights = next((hub / "m").glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # touched
        report = atlas.add(scan=[hub])
        assert [r["name"] for r in atlas.ls()] == ["m"] and not report.updated and atlas.store.alias_of("z-copy") == "m"
        shutil.move(hub / "m", tmp_path / "away")
        atlas.add(scan=[hub])
        assert Path(atlas.model("m")["path"]) == (hub / "z-copy").resolve()  # read from its copy meanwhile
        shutil.move(tmp_path / "away", hub / "m")  # back as it was
        report = atlas.add(scan=[hub])
        assert [r["name"] for r in atlas.ls()] == ["m"] and not report.updated and atlas.store.alias_of("z-copy") == "m"
        assert Path(atlas.model("m")["path"]) == (hub / "m").resolve()  # and from its own folder again
        report = atlas.add(scan=[hub])
        assert len(report.skipped) == 2 and Path(atlas.model("m")["path"]) == (hub / "m").resolve()


def test_touching_the_second_model_of_a_name_given_twice_keeps_both(tmp_path: Path) -> None:
    """`m` given on the command line and found again by a scan is two models, `m` and `m@hash`; touching the
    second's weights took it for `m` re-uploaded as a copy of `m@hash`: `m` was removed, added back by the
    next run, removed by the one after."""
    import os

    write_hf_folder(tmp_path / "m", small_tensors(1))
    write_hf_folder(tmp_path / "other" / "m", small_tensors(2))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add([("m", tmp_path / "m")], scan=[tmp_path / "other"])
        before = sorted(r["name"] for r in atlas.ls())
        weights = next((tmp_path / "other" / "m").glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
        for _ in range(3):
            report = atlas.add([("m", tmp_path / "m")], scan=[tmp_path / "other"])
            assert sorted(r["name"] for r in atlas.ls()) == before and not report.updated and not report.added


def test_a_reuploaded_model_does_not_hand_its_old_files_to_an_alias_that_is_gone(tmp_path: Path) -> None:
    """`m` re-uploaded with other weights hands its old row to a copy of its old files (an alias); a copy whose
    folder was deleted got it all the same: a model listed at a path that no longer exists."""
    hub = tmp_path / "hub"
    write_hf_folder(hub / "m", small_tensors(1))
    shutil.copytree(hub / "m", hub / "z1")
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[hub])
        shutil.rmtree(hub / "z1")
        shutil.rmtree(hub / "m")
        write_hf_folder(hub / "m", small_tensors(2))
        report = atlas.add(scan=[hub])
        assert report.updated == ["m"] and [r["name"] for r in atlas.ls()] == ["m"] and atlas.store.alias_of("z1") is None


def test_one_name_at_two_identical_folders_stays_read_from_the_first(tmp_path: Path) -> None:
    """`m` on the command line and a byte-identical `m` in a scanned folder are one model; it is read from
    where it was first indexed, run after run (switching to a copy is for a model whose folder left)."""
    write_hf_folder(tmp_path / "m", small_tensors(1))
    shutil.copytree(tmp_path / "m", tmp_path / "other" / "m")
    with Atlas(tmp_path / "atlas.db") as atlas:
        for _ in range(3):
            atlas.add([("m", tmp_path / "m")], scan=[tmp_path / "other"])
            assert [(r["name"], Path(r["path"])) for r in atlas.ls()] == [("m", (tmp_path / "m").resolve())]


def test_a_card_edited_after_indexing_is_read_again(tmp_path: Path) -> None:
    """The index skipped a model by a stat of its weight files: a base_model added to its card later was
    never read (not by add, not by rebuild)."""
    write_hf_folder(tmp_path / "hub" / "base", small_tensors(1))
    write_hf_folder(tmp_path / "hub" / "child", small_tensors(2))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        assert atlas.model("child")["declared_base"] is None
        (tmp_path / "hub" / "child" / "README.md").write_text("---\nbase_model: base\n---\n")
        report = atlas.add(scan=[tmp_path / "hub"])
        assert not report.added and not report.updated  # the weights are as indexed: nothing fingerprinted anew
        assert atlas.model("child")["declared_base"] == "base"
        assert [(e.parent, e.child) for e in atlas.edges("declared")] == [("base", "child")]
        # the stored fingerprint the recovery reads its prior from says so too
        assert atlas.store.fingerprints(["child"])[0].declared.base_model == "base"


def test_scanned_folders_that_are_models_are_two_models(tmp_path: Path) -> None:
    """`index add --scan MODEL` named the model "." (the scan id `tree` gives it): a second such folder was
    taken for a re-upload of "." and replaced the first."""
    for name, seed in (("m1", 1), ("m2", 2)):
        write_hf_folder(tmp_path / name, small_tensors(seed))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "m1"])
        report = atlas.add(scan=[tmp_path / "m2"])
        assert not report.updated and sorted(r["name"] for r in atlas.ls()) == ["m1", "m2"]


def test_the_page_graph_is_one_reading_of_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/api/graph read the models twice (once for the tree ids, once for the list): a model committed by an
    `index add` in between was in one reading only, a KeyError and HTTP 500 (40 of 5 760 requests)."""
    from ancestree.web.app import AtlasReader

    write_hf_folder(tmp_path / "hub" / "a", small_tensors(1))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
    reader = AtlasReader(tmp_path / "atlas.db")
    store = reader.atlas.store
    rows, calls = store.models(), []

    def growing(*args):  # each reading sees one model more, as an `add` committing meanwhile would make it
        calls.append(1)
        return [*rows, *({**rows[0], "name": f"new{i}", "id": 100 + i} for i in range(len(calls) - 1))]

    monkeypatch.setattr(store, "models", growing)
    payload = reader.graph("recovered")  # one reading: every model listed has its tree id
    assert [m["id"] for m in payload["models"]] == ["a"] and calls == [1]


def test_card_rereads_change_only_the_model_the_card_belongs_to(tmp_path: Path) -> None:
    """Byte-identical copies whose cards name other bases: the alias's card was compared with the model's and
    written over it, and back on the next run, run after run. One name given to two models: an edit of the
    second's card landed on the first."""
    write_hf_folder(tmp_path / "hub" / "base1", small_tensors(1))
    write_hf_folder(tmp_path / "hub" / "base2", small_tensors(2))
    write_hf_folder(tmp_path / "hub" / "a", small_tensors(3), {"base_model": "base1"})
    write_hf_folder(tmp_path / "hub" / "b", small_tensors(3), {"base_model": "base2"})  # a's weights
    write_hf_folder(tmp_path / "other" / "a", small_tensors(4))  # another model scanned as "a"
    hub_a, other_a = str(tmp_path / "hub" / "a"), str(tmp_path / "other" / "a")  # "a" below both: named with the folder
    with Atlas(tmp_path / "atlas.db") as atlas:
        for _ in range(3):
            report = atlas.add(scan=[tmp_path / "hub", tmp_path / "other"])
            assert not report.redeclared and atlas.model(hub_a)["declared_base"] == "base1"
        (tmp_path / "other" / "a" / "README.md").write_text("---\nbase_model: base2\n---\n")
        report = atlas.add(scan=[tmp_path / "hub", tmp_path / "other"])
        assert list(report.redeclared) == [other_a] and atlas.model(other_a)["declared_base"] == "base2"
        assert atlas.model(hub_a)["declared_base"] == "base1"


def test_a_second_name_of_one_folder_survives_a_touch_and_names_are_listed_once(tmp_path: Path) -> None:
    """One folder indexed as `m` and again as `c` (an alias at the same path): touching its weights and adding
    `m` again wrote `m` over `c`'s alias row (`c` was no longer known), and listed `m` as an alias of itself;
    a name found at a second path was listed twice."""
    import os

    write_hf_folder(tmp_path / "m", small_tensors(1))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add([("m", tmp_path / "m")])
        atlas.add([("c", tmp_path / "m")])
        weights = next((tmp_path / "m").glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
        report = atlas.add([("m", tmp_path / "m")])
        assert not report.updated and not report.added
        assert atlas.store.alias_of("c") == "m" and atlas.store.names() == [("m", "m"), ("c", "m")]
        shutil.copytree(tmp_path / "m", tmp_path / "copy")
        atlas.add([("c", tmp_path / "copy")])  # `c` is found at a second path: still one name
        assert atlas.store.alias_of("c") == "m" and atlas.store.names() == [("m", "m"), ("c", "m")]


def _as_if_an_older_version_stored(atlas: Atlas) -> None:
    """Rewrite the index's fingerprints with the previous version number, as an older ancestree left them."""
    from dataclasses import replace

    from ancestree.fingerprint import FINGERPRINT_VERSION, from_bytes, to_bytes

    with atlas.store.transaction() as cur:
        for model, blob in cur.execute("SELECT model, fingerprint FROM prints").fetchall():
            old = replace(from_bytes(blob)[0], version=FINGERPRINT_VERSION - 1)
            cur.execute("UPDATE prints SET fingerprint = ?, embedding = embedding WHERE model = ?", (to_bytes([old]), model))
        cur.execute("DELETE FROM meta WHERE key = 'fingerprints'")


@pytest.mark.parametrize("then", ["add a new model", "rebuild"])
def test_fingerprints_stored_by_an_older_version_are_computed_again(tmp_path: Path, then: str) -> None:
    """A newer ancestree reads some formats otherwise (GGUF query/key rows, bitsandbytes scales), so it bumps
    the fingerprint version: an index made before could not be rebuilt, and adding a model to one of its
    trees failed on the stored fingerprints. Every stale model is fingerprinted again from its path (once),
    placed again, its aliases kept; one whose files are gone is named and keeps its old fingerprint."""
    write_hf_folder(tmp_path / "hub" / "a", small_tensors(1))
    write_hf_folder(tmp_path / "hub" / "b", small_tensors(2))
    shutil.copytree(tmp_path / "hub" / "a", tmp_path / "hub" / "a-copy")
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        edges = {(e.parent, e.child) for e in atlas.edges("recovered")}
        _as_if_an_older_version_stored(atlas)
        assert [name for _, name, _ in atlas.store.stale_prints()] == ["a", "b"]
        if then == "rebuild":
            atlas.rebuild()
        else:
            write_hf_folder(tmp_path / "c", small_tensors(3))
            report = atlas.add([("c", tmp_path / "c")])
            assert report.updated == ["a", "b"] and report.added == ["c"] and not report.bad
        assert not atlas.store.stale_prints() and atlas.store.alias_of("a-copy") == "a"
        assert {(e.parent, e.child) for e in atlas.edges("recovered")} >= edges and all(r["placed"] for r in atlas.ls())
        report = atlas.add(scan=[tmp_path / "hub"])
        assert not report.updated and not report.added  # once only
        _as_if_an_older_version_stored(atlas)
        shutil.rmtree(tmp_path / "hub" / "b")  # files gone: named once, its old fingerprint used, the index working
        result = atlas.rebuild()
        assert len(result.kept_old) == 1 and result.kept_old[0].startswith("b: fingerprinted by an older ancestree")
        write_hf_folder(tmp_path / "d", small_tensors(5))
        report = atlas.add([("d", tmp_path / "d")])
        assert report.added == ["d"] and not report.bad and all(r["placed"] for r in atlas.ls())


def test_a_name_found_again_at_an_earlier_path_names_the_model_there(tmp_path: Path) -> None:
    """`x` found holding a's files, then b's elsewhere, then a's again (a cache repository whose refs/main
    moved back): the alias row of the first path was updated in place, kept its old place in the order,
    and `x` stayed b's."""
    import os

    write_hf_folder(tmp_path / "a", small_tensors(1))
    write_hf_folder(tmp_path / "b", small_tensors(2))
    shutil.copytree(tmp_path / "a", tmp_path / "px1")
    shutil.copytree(tmp_path / "b", tmp_path / "px2")
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add([("a", tmp_path / "a"), ("b", tmp_path / "b")])
        atlas.add([("x", tmp_path / "px1")])
        assert atlas.store.alias_of("x") == "a"
        atlas.add([("x", tmp_path / "px2")])
        assert atlas.store.alias_of("x") == "b"
        weights = next((tmp_path / "px1").glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
        atlas.add([("x", tmp_path / "px1")])
        assert atlas.store.alias_of("x") == "a" and ("x", "a") in atlas.store.names() and ("x", "b") not in atlas.store.names()


def test_a_stale_model_whose_files_changed_is_refreshed_as_a_re_upload(tmp_path: Path) -> None:
    """Refreshing an older version's fingerprint from a path that now holds other files stored the new
    files' fingerprint under the old file hash (a later add of the old files took them for this model)."""
    write_hf_folder(tmp_path / "hub" / "a", small_tensors(1))
    write_hf_folder(tmp_path / "hub" / "b", small_tensors(2))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        old_hash = atlas.model("b")["file_hash"]
        _as_if_an_older_version_stored(atlas)
        shutil.rmtree(tmp_path / "hub" / "b")
        write_hf_folder(tmp_path / "hub" / "b", small_tensors(4))
        atlas.rebuild()
        assert atlas.model("b")["file_hash"] != old_hash and not atlas.store.stale_prints()
        report = atlas.add(scan=[tmp_path / "hub"])
        assert not report.updated and not report.added


def test_reading_an_index_an_older_version_made_says_how_to_refresh_it(tmp_path: Path) -> None:
    """`index ls`/`show`/`export` never refresh (they only read): they showed an older version's graph
    without a word."""
    import subprocess
    import sys

    write_hf_folder(tmp_path / "hub" / "a", small_tensors(1))
    db = tmp_path / "atlas.db"
    with Atlas(db) as atlas:
        atlas.add(scan=[tmp_path / "hub"])
        _as_if_an_older_version_stored(atlas)

    def ls() -> str:
        return subprocess.run([sys.executable, "-m", "ancestree", "index", "ls", "--db", str(db)], capture_output=True,
                              text=True, timeout=120).stderr

    assert "made by an older ancestree" in ls()
    with Atlas(db) as atlas:
        atlas.rebuild()
    assert ls() == ""


def test_a_second_scanned_folder_with_the_same_relative_names_adds_its_models(tmp_path: Path) -> None:
    """`index add --scan A`, later `--scan B` with the same relative names (two zoos, two organisations'
    `checkpoint-500`): B's models were taken for re-uploads of A's ("updated ... its files changed") and A's
    left the index, though their files never changed. They are other models, named with their folder in
    front as one run's scan of both folders names them; a changed file in B is B's re-upload."""
    for folder, seed in (("A", 1), ("B", 2)):
        fine_tunes(tmp_path / folder, "m", seed, 2)
    with Atlas(tmp_path / "atlas.db") as atlas:
        first = atlas.add(scan=[tmp_path / "A"])
        second = atlas.add(scan=[tmp_path / "B"])
        assert sorted(first.added) == ["m", "m-ft0", "m-ft1"] and not second.updated
        assert sorted(second.added) == ["B/m", "B/m-ft0", "B/m-ft1"]
        assert atlas.model("m")["path"] == str((tmp_path / "A" / "m").resolve())
        assert not atlas.add(scan=[tmp_path / "B"]).added  # read again: the same models, skipped
        rng = np.random.default_rng(9)
        write_hf_folder(tmp_path / "B" / "m-ft1", {f"layer.{i}.weight": rng.standard_normal((32, 32)).astype(np.float32)
                                                   for i in range(3)})
        third = atlas.add(scan=[tmp_path / "B"])
        assert third.updated == ["B/m-ft1"] and not third.added
        assert len(atlas.ls()) == 6 and atlas.model("m-ft1")["path"] == str((tmp_path / "A" / "m-ft1").resolve())
        # a third folder of the same name below another one: as many folders in front as make the name free
        fine_tunes(tmp_path / "y" / "B", "m", 3, 0)
        fourth = atlas.add(scan=[tmp_path / "y" / "B"])
        assert fourth.added == ["y/B/m"] and not fourth.updated and len(atlas.ls()) == 7
        consistent(atlas)


def test_a_name_held_by_an_alias_is_not_taken_by_another_model_under_another_folder(tmp_path: Path) -> None:
    """`--scan A` finds `z`, a copy of `m` (an alias); a later `--scan B` finds another model named `z`. It took
    the name, and the alias row went: a card naming `z` then meant B's model though A's copy was still in
    place. It is `B/z`, as a model's name would be, and `z` stays `m`'s alias."""
    (name, root), = fine_tunes(tmp_path / "A", "m", 1, 0)
    shutil.copytree(root, tmp_path / "A" / "z")
    fine_tunes(tmp_path / "B", "z", 2, 0)
    with Atlas(tmp_path / "atlas.db") as atlas:
        first = atlas.add(scan=[tmp_path / "A"])
        assert first.added == ["m"] and first.skipped == ["z"]
        second = atlas.add(scan=[tmp_path / "B"])
        assert second.added == ["B/z"] and not second.updated
        assert atlas.store.alias_of("z") == "m" and dict(atlas.store.names())["B/z"] == "B/z"
        assert not atlas.add(scan=[tmp_path / "A"]).added and not atlas.add(scan=[tmp_path / "B"]).added
        assert atlas.store.alias_of("z") == "m"
        consistent(atlas)


def test_a_card_edited_after_a_chmod_is_read_and_a_renamed_name_is_taken_for_the_run(tmp_path: Path) -> None:
    """From a review: (1) a model whose files only had their change time moved (chmod; every model once after
    the stat key took the inode and change time) was remembered through an alias row of its own path, whose
    card the index never reads again: a later edit of its `base_model` was ignored. (2) A new model renamed
    away from an alias name (`z` -> `B/z`) was not taken in the run under its new name: another model found
    as `B/z` in the same run replaced it."""
    import os

    for name, seed in (("a", 1), ("b", 2), ("child", 3)):
        write_hf_folder(tmp_path / "zoo" / name, small_tensors(seed))
    (tmp_path / "zoo" / "child" / "README.md").write_text("---\nbase_model: a\n---\n")
    weights = next((tmp_path / "zoo" / "child").glob("*.safetensors"))
    with Atlas(tmp_path / "atlas.db") as atlas:
        atlas.add(scan=[tmp_path / "zoo"])
        os.chmod(weights, 0o640)
        assert not atlas.add(scan=[tmp_path / "zoo"]).added
        (tmp_path / "zoo" / "child" / "README.md").write_text("---\nbase_model: b\n---\n")
        atlas.add(scan=[tmp_path / "zoo"])
        assert atlas.store.model("child")["declared_base"] == "b"

    (tmp_path / "A").mkdir()
    write_hf_folder(tmp_path / "A" / "m", small_tensors(4))
    shutil.copytree(tmp_path / "A" / "m", tmp_path / "A" / "z")
    write_hf_folder(tmp_path / "X" / "B" / "z", small_tensors(5))
    write_hf_folder(tmp_path / "Y" / "B" / "z", small_tensors(6))
    with Atlas(tmp_path / "second.db") as atlas:
        atlas.add(scan=[tmp_path / "A"])
        second = atlas.add(scan=[tmp_path / "X" / "B", tmp_path / "Y"])
        assert not second.updated and len(second.added) == 2
        paths = {Path(r["path"]) for r in atlas.store.models()}
        assert {(tmp_path / "X" / "B" / "z").resolve(), (tmp_path / "Y" / "B" / "z").resolve()} <= paths
