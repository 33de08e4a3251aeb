"""Bad input the CLI layer must refuse before any work: outputs that would overwrite an input, model cards that
cannot be parsed; and ``--scan`` given more than once.

Every case builds small real models in ``tmp_path`` and runs the real entry point, ``ancestree.cli.main.run``,
in-process, as ``tests/test_bad_input.py`` does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ancestree.cli.main import run
from conftest import small_tensors, write_hf_folder


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands that cache fingerprints do it under tmp_path, never in the user's cache."""
    monkeypatch.setenv("ANCESTREE_CACHE", str(tmp_path / "cache"))


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _finetune(tensors: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """A small fine-tune: every float tensor nudged by 2 % noise, integer buffers kept."""
    rng = np.random.default_rng(seed)
    return {k: v + 0.02 * rng.standard_normal(v.shape).astype(v.dtype) if v.dtype == np.float32 else v
            for k, v in tensors.items()}


def _family(root: Path) -> Path:
    """``root/zoo`` holding three related model folders (a base and two fine-tunes) and ``truth.json``."""
    base = small_tensors(0)
    zoo = root / "zoo"
    for name, tensors in (("base", base), ("ft1", _finetune(base, 1)), ("ft2", _finetune(base, 2))):
        write_hf_folder(zoo / name, tensors)
    (zoo / "truth.json").write_text(json.dumps({"models": [{"id": m} for m in ("base", "ft1", "ft2")], "edges": []}))
    return zoo


def _files(root: Path) -> dict[str, str]:
    """Every file below ``root`` (caches left out) with a hash of its bytes: what a refused command must not change."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "cache" not in p.relative_to(root).parts}


def _index(zoo: Path) -> Path:
    db = zoo.parent / "atlas.db"
    with pytest.raises(SystemExit) as exit_info:
        run(["index", "add", "--scan", str(zoo), "--db", str(db), "-q", "--format", "json"])
    assert exit_info.value.code in (0, None)
    return db


def _single_files(zoo: Path) -> tuple[Path, Path]:
    """Two bare weight files (copies of the base's and a fine-tune's weights) beside the zoo."""
    a, b = zoo.parent / "a.safetensors", zoo.parent / "b.safetensors"
    a.write_bytes((zoo / "base" / "model.safetensors").read_bytes())
    b.write_bytes((zoo / "ft1" / "model.safetensors").read_bytes())
    return a, b


#: name -> (argv from the zoo folder, the file a careless output would replace); each must exit 2 untouched.
OVERWRITES: dict[str, Callable[[Path], list[str]]] = {
    "tree -o one of the files": lambda z: ["tree", *map(str, _single_files(z)), "--format", "json",
                                           "-o", str(z.parent / "b.safetensors")],
    "tree --png one of the files": lambda z: ["tree", *map(str, _single_files(z)), "--png", str(z.parent / "a.safetensors")],
    "tree -o inside a model folder": lambda z: ["tree", str(z / "base"), str(z / "ft1"), "--format", "json",
                                                "-o", str(z / "ft1" / "model.safetensors")],
    "tree -o a new file inside a model folder": lambda z: ["tree", str(z / "base"), str(z / "ft1"), "-o",
                                                           str(z / "ft1" / "graph.json")],
    "tree -o by a relative detour": lambda z: ["tree", str(z / "base"), str(z / "ft1"), "-o",
                                               str(z / "ft2" / ".." / "ft1" / "model.safetensors")],
    "tree -o through a symlink": lambda z: ["tree", str(z / "base"), str(z / "ft1"), "-o", str(_link(z))],
    "tree --scan -o inside a found model": lambda z: ["tree", "--scan", str(z), "-o", str(z / "ft2" / "config.json")],
    "fingerprint -o the input": lambda z: ["fingerprint", str(_single_files(z)[0]), "--format", "json",
                                           "-o", str(z.parent / "a.safetensors")],
    "fingerprint --scan -o inside a found model": lambda z: ["fingerprint", "--scan", str(z), "--format", "json",
                                                             "-o", str(z / "base" / "model.safetensors")],
    "compare -o the second model": lambda z: ["compare", *map(str, _single_files(z)), "-o", str(z.parent / "b.safetensors")],
    "parent -o a candidate": lambda z: ["parent", str(z / "ft1"), "-c", str(z / "base"), str(z / "ft2"),
                                        "-o", str(z / "ft2" / "model.safetensors")],
    "index export -o the index": lambda z: ["index", "export", "--db", str(_index(z)), "-o", str(z.parent / "atlas.db")],
    "index add --db inside a model": lambda z: ["index", "add", str(z / "base"), "--db", str(z / "base" / "atlas.db")],
    "lineage train -o the zoo's truth": lambda z: ["lineage", "train", str(z), "-o", str(z / "truth.json")],
    "probex train -o inside a model": lambda z: ["probex", "train", str(z), "-o", str(z / "ft1" / "experts")],
}


def _link(zoo: Path) -> Path:
    """A symlink beside the zoo that points at a model's weights."""
    link = zoo.parent / "link.safetensors"
    link.symlink_to(zoo / "ft1" / "model.safetensors")
    return link


@pytest.mark.parametrize("case", list(OVERWRITES), ids=lambda c: c.replace(" ", "-"))
def test_output_that_is_an_input_is_refused_before_any_work(case: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    zoo = _family(tmp_path)
    argv = OVERWRITES[case](zoo)
    capsys.readouterr()  # what building the inputs printed (an index add)
    before = _files(tmp_path)
    status, out, err = _run(argv, capsys)
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert "is one of the inputs" in err or "inside the input folder" in err, err
    assert out == ""
    assert _files(tmp_path) == before  # no input replaced, nothing new written


def test_output_beside_the_inputs_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The check refuses inputs only: an output in the scanned folder, outside every model, is written."""
    zoo = _family(tmp_path)
    status, _, err = _run(["tree", "--scan", str(zoo), "-o", str(zoo / "graph.json")], capsys)
    assert status == 0, err
    assert {m["id"] for m in json.loads((zoo / "graph.json").read_text())["models"]} == {"base", "ft1", "ft2"}


BAD_CARDS = {
    "invalid YAML": "---\nbase_model: [unclosed\nlicense: mit\n---\n# notes\n",
    "a list": "---\n- a\n- b\n---\n# list front matter\n",
    "a plain string": "---\njust text\n---\n",
    "a python tag": "---\nbase_model: !!python/name:os.system\n---\n",
    # 300 bytes that expand to 531,441 strings: the card is written back in full, which expanded them
    "a billion laughs": "---\na: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcde", "bcdef")) + "tags: *f\n---\n",
}


@pytest.mark.parametrize("card", list(BAD_CARDS), ids=lambda c: c.replace(" ", "-"))
def test_write_cards_refuses_an_unparsable_card_before_writing_anything(card: str, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Every folder gets a bad card in turn; each run exits 2 naming that README.md, prints nothing and writes
    no card at all (the other folders' cards would have been written: the good run below shows it)."""
    zoo = _family(tmp_path)
    refused = 0
    for bad in ("base", "ft1", "ft2"):
        for name in ("base", "ft1", "ft2"):
            (zoo / name / "README.md").unlink(missing_ok=True)
        (zoo / bad / "README.md").write_text(BAD_CARDS[card])
        before = _files(tmp_path)
        status, out, err = _run(["tree", "--scan", str(zoo), "--write-cards", "--format", "json"], capsys)
        if status == 0:  # this folder came out as the root: its card is not read, nor written
            assert _files(tmp_path) != before  # ... but the two others' are
            continue
        assert status == 2, err
        assert len(err.strip().splitlines()) == 1 and "internal error" not in err, err
        assert str(zoo / bad / "README.md") in err and "front matter" in err, err
        assert out == ""
        assert _files(tmp_path) == before
        refused += 1
    assert refused == 2  # the two models that are not the root


def test_write_cards_with_good_cards_writes_every_non_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from huggingface_hub import ModelCard

    zoo = _family(tmp_path)
    for name in ("base", "ft1", "ft2"):
        (zoo / name / "README.md").write_text("---\nlicense: mit\n---\n# notes\n")
    status, out, err = _run(["tree", "--scan", str(zoo), "--write-cards", "--format", "json"], capsys)
    assert status == 0, err
    edges = json.loads(out)["edges"]
    assert len(edges) == 2
    for e in edges:
        card = ModelCard.load(zoo / e["child"] / "README.md")
        assert card.data.base_model == e["parent"] and card.data.license == "mit"


@pytest.mark.parametrize("failing", [0, 1])
def test_write_cards_failing_on_one_card_changes_none(failing: int, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A card that cannot be replaced when its turn comes (an immutable file, a full disk) left the cards
    before it rewritten and those after it not, with an internal error; now none changes."""
    import os

    import ancestree.atomic as atomic

    zoo = _family(tmp_path)
    for name in ("base", "ft1", "ft2"):
        (zoo / name / "README.md").write_text("---\nlicense: mit\n---\n# notes\n")
    before, replaced = _files(tmp_path), []

    def replace(src, dst):
        if Path(dst).name == "README.md" and Path(dst).is_file():  # a card's turn (restores write new files)
            replaced.append(dst)
            if len(replaced) == failing + 1:  # once: putting the old cards back must work
                raise PermissionError(1, "Operation not permitted")
        os.rename(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    status, out, err = _run(["tree", "--scan", str(zoo), "--write-cards", "--format", "json"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "README.md" in err and "no file" in err, err
    assert _files(tmp_path) == before and not [p for p in tmp_path.rglob("*.part")]


def test_write_cards_that_cannot_put_a_card_back_says_where_its_old_file_is(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The file system turns read-only after the first card: the rollback cannot rename either. The old card
    is kept beside the new one and named (it crashed with a bare OSError, leaving no trace of the old card)."""
    import os

    import ancestree.atomic as atomic

    zoo = _family(tmp_path)
    for name in ("base", "ft1", "ft2"):
        (zoo / name / "README.md").write_text(f"---\nlicense: mit\n---\n# notes of {name}\n")
    cards = []

    def replace(src, dst):
        if Path(dst).name == "README.md" and Path(dst).is_file() or Path(src).name.startswith(".README.md"):
            cards.append(dst)
            if len(cards) > 1:  # read-only from now on
                raise OSError(30, "Read-only file system")
        os.rename(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    status, _, err = _run(["tree", "--scan", str(zoo), "--write-cards", "--format", "json"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "could not be put back" in err, err
    changed = Path(cards[0])
    kept = [p for p in changed.parent.iterdir() if p.name.startswith(".README.md.")]
    assert len(kept) == 1 and kept[0].read_text().endswith(f"# notes of {changed.parent.name}\n") and kept[0].name in err


@pytest.mark.parametrize("command", ["tree", "fingerprint"])
def test_scan_may_be_repeated(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    zoo = _family(tmp_path)
    team_a, team_b = tmp_path / "team_a", tmp_path / "team_b"
    team_a.mkdir()
    team_b.mkdir()
    (zoo / "base").rename(team_a / "base")
    (zoo / "ft1").rename(team_b / "ft1")
    status, out, err = _run([command, "--scan", str(team_a), "--scan", str(team_b), "--format", "json"], capsys)
    assert status == 0, err
    records = json.loads(out)
    ids = {m["id"] for m in (records["models"] if command == "tree" else records)}
    assert ids == {"base", "ft1"}
    # two runs that each keep a "final" model: both named with their folder in front, not refused; a folder
    # scanned twice (or inside another scanned one) gives each model once
    import shutil

    shutil.copytree(team_b / "ft1", team_a / "ft1")
    status, out, err = _run([command, "--scan", str(team_a), "--scan", str(team_b), "--scan", str(team_b),
                             "--format", "json"], capsys)
    assert status == 0, err
    records = json.loads(out)
    ids = {m["id"] for m in (records["models"] if command == "tree" else records)}
    assert ids == {"base", f"{team_a.as_posix()}/ft1", f"{team_b.as_posix()}/ft1"}


def test_fingerprint_output_must_be_an_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`fingerprint -o x.json` wrote an npz archive under a .json name; the name is refused before any work."""
    zoo = _family(tmp_path)
    status, out, err = _run(["fingerprint", str(zoo / "base"), "-o", str(tmp_path / "prints.json")], capsys)
    assert status == 2 and "prints.json: --output takes a .npz file" in err and not (tmp_path / "prints.json").exists()
    assert _run(["fingerprint", str(zoo / "base"), "-o", str(tmp_path / "prints.npz")], capsys)[0] == 0


def test_eval_of_json_nested_too_deeply_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """json's decoder recurses per level: 100,000 nested brackets were an internal error (RecursionError)."""
    zoo = _family(tmp_path)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    status, out, err = _run(["eval", str(deep), str(zoo / "truth.json")], capsys)
    assert status == 2 and "deep.json: JSON nested too deeply" in err and "internal" not in err


def test_brackets_in_model_names_are_printed_as_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Folder names are printed everywhere; rich read "sweep[lr=1e-4]" as a style (shown as "sweep") and
    "runs[/b]" as a closing tag (an internal error in tree, index add and index ls)."""
    zoo = _family(tmp_path)
    (zoo / "base").rename(zoo / "sweep[lr=1e-4]")
    (zoo / "runs[").mkdir()
    (zoo / "ft2").rename(zoo / "runs[" / "b]")
    status, out, err = _run(["tree", "--scan", str(zoo), "--format", "text"], capsys)
    assert status == 0, err
    assert "sweep[lr=1e-4]" in out and "runs[/b]" in out
    db = tmp_path / "atlas.db"
    assert _run(["index", "add", "--scan", str(zoo), "--db", str(db)], capsys)[0] == 0
    status, out, err = _run(["index", "ls", "--db", str(db)], capsys)
    assert status == 0 and "runs[/b]" in out and "sweep[lr=1e-4]" in out, err


# -- eval: a relation is part of every edge --------------------------------------------------------------
def _graph_file(path: Path, edges: list[dict]) -> Path:
    path.write_text(json.dumps({"models": [{"id": m} for m in "abc"], "edges": edges}), encoding="utf-8")
    return path


@pytest.mark.parametrize("bare_side", ["predicted", "truth"])
def test_eval_refuses_edges_without_a_relation(bare_side: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No silent relation accuracy of 0: the file whose edges lack ``relation`` is named, exit 2."""
    full = _graph_file(tmp_path / "full.json", [{"parent": "a", "child": "b", "relation": "finetune"},
                                                {"parent": "a", "child": "c", "relation": "quantized"}])
    bare = _graph_file(tmp_path / "bare.json", [{"parent": "a", "child": "b", "relation": "finetune"},
                                                {"parent": "a", "child": "c"}])
    argv = ["eval", str(bare), str(full)] if bare_side == "predicted" else ["eval", str(full), str(bare)]
    code, out, err = _run(argv, capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert str(bare) in err and "'relation'" in err and "a -> c" in err


def test_eval_scores_an_unknown_relation_as_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = _graph_file(tmp_path / "truth.json", [{"parent": "a", "child": "b", "relation": "finetune"},
                                                  {"parent": "a", "child": "c", "relation": "quantized"}])
    pred = _graph_file(tmp_path / "pred.json", [{"parent": "a", "child": "b", "relation": "finetune"},
                                                {"parent": "a", "child": "c", "relation": "unknown"}])
    code, out, _ = _run(["eval", str(pred), str(truth), "--format", "json"], capsys)
    scores = json.loads(out)
    assert code == 0 and scores["edge_f1"] == 1.0 and scores["relation_accuracy"] == 0.5


@pytest.mark.parametrize("column", ["fingerprint", "embedding"])
def test_a_damaged_index_row_is_named(column: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fingerprint blob cut short made `index rebuild` stop on "internal error: BadZipFile" (an empty one
    silently, through click's EOFError abort); an embedding cut short, `index add` on a ValueError."""
    import sqlite3

    db = _index(_family(tmp_path))
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE prints SET {column} = substr({column}, 1, 10)")
    extra = write_hf_folder(tmp_path / "extra", _finetune(small_tensors(0), 9))
    argv = ["index", "rebuild", "--db", str(db)] if column == "fingerprint" else ["index", "add", str(extra), "--db", str(db), "-q"]
    status, _, err = _run(argv, capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(db) in err and "internal error" not in err, err


def test_index_add_indexes_what_it_reads_and_exits_2_naming_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable input (a file cut short, an empty folder) left `index add` at exit 0, its message
    wrapped over three lines; the readable inputs are still indexed and committed."""
    zoo = _family(tmp_path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((zoo / "ft1" / "model.safetensors").read_bytes()[:300])
    (tmp_path / "empty").mkdir()
    (tmp_path / "drop").mkdir()  # an empty --scan folder is one more unreadable input, not the end of the batch
    db = tmp_path / "a.db"
    status, _, err = _run(["index", "add", str(zoo / "base"), str(cut), str(tmp_path / "empty"), "--scan", str(tmp_path / "drop"),
                           "--db", str(db), "-q"], capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 3 and str(cut) in lines[0] and str(tmp_path / "empty") in lines[1], err
    assert str(tmp_path / "drop") in lines[2], err
    status, out, _ = _run(["index", "ls", "--db", str(db), "--format", "json"], capsys)
    assert status == 0 and [row["path"] for row in json.loads(out)] == [str((zoo / "base").resolve())]


@pytest.mark.parametrize("method", ["ours", "mother"])
def test_tree_skip_unreadable_leaves_a_damaged_model_out_and_names_it(method: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """One damaged upload stopped a whole `tree --scan` (exit 2, no graph); with --skip-unreadable it is
    named on stderr and the others get their graph. Without the flag it still stops; all damaged: exit 2."""
    zoo = _family(tmp_path)
    (zoo / "cut").mkdir()
    (zoo / "cut" / "model.safetensors").write_bytes((zoo / "ft1" / "model.safetensors").read_bytes()[:300])
    argv = ["tree", "--scan", str(zoo), "-f", "json", "--method", method] + (["--trees", "1"] if method == "mother" else [])
    status, out, err = _run(argv, capsys)
    assert status == 2 and out == "" and "cut" in err, err
    status, out, err = _run(argv + ["--skip-unreadable"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert status == 0 and len(lines) == 1 and "cut" in lines[0], err
    graph = json.loads(out)
    assert sorted(m["id"] for m in graph["models"]) == ["base", "ft1", "ft2"]
    assert graph["edges"] or method == "mother"  # MoTHer compares square matrices only: these models have none
    status, out, err = _run(["tree", str(zoo / "cut"), "--skip-unreadable", "-f", "json"], capsys)
    assert status == 2 and out == "" and "no readable models" in err.splitlines()[-1], err


def test_a_sharded_model_missing_a_shard_is_one_unreadable_model_of_a_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The scan itself read the sharding index to tell a model folder: a missing shard stopped every scan
    (`tree --skip-unreadable`, `index add --scan`: no index at all) instead of naming that one model."""
    zoo = _family(tmp_path)
    sharded = zoo / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text("{}")
    index = {"metadata": {}, "weight_map": {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    (sharded / "model-00001-of-00002.safetensors").write_bytes((zoo / "ft1" / "model.safetensors").read_bytes())
    status, out, err = _run(["tree", "--scan", str(zoo), "-f", "json", "--skip-unreadable"], capsys)
    assert status == 0 and "skipped:" in err and "does not exist" in err, err
    assert sorted(m["id"] for m in json.loads(out)["models"]) == ["base", "ft1", "ft2"]
    status, _, err = _run(["index", "add", "--scan", str(zoo), "--db", str(tmp_path / "a.db"), "-q"], capsys)
    assert status == 2 and "does not exist" in err, err
    status, out, _ = _run(["index", "ls", "--db", str(tmp_path / "a.db"), "--format", "json"], capsys)
    assert sorted(row["name"] for row in json.loads(out)) == ["base", "ft1", "ft2"]
