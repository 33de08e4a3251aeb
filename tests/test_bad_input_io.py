"""Hostile or odd inputs to the io layer: model cards, PEFT configs, sparse/meta tensors, symlinked scans.

Every input is written here, small, in ``tmp_path``; the CLI runs in-process through its real entry point.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ancestree.cli.main import run
from ancestree.errors import BadInputError
from ancestree.io import load_model
from conftest import small_tensors, write_hf_folder


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def _carded(tmp_path: Path, front: str, name: str = "model") -> Path:
    """A model folder whose README.md has ``front`` as its YAML front matter."""
    folder = write_hf_folder(tmp_path / name, small_tensors())
    (folder / "README.md").write_text(f"---\n{front}\n---\n# a model\n", encoding="utf-8")
    return folder


def _laughs(levels: int) -> str:
    """A "billion laughs": ``levels`` lists of 9 aliases each, 9**levels strings once expanded."""
    names = "abcdefghijkl"[:levels]
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    lines += [f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]" for prev, cur in zip(names, names[1:])]
    return "\n".join(lines + [f"base_model: *{names[-1]}"])


# -- model cards -------------------------------------------------------------------------------------------
def test_card_billion_laughs_is_neither_expanded_nor_declared(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _carded(tmp_path, _laughs(6))  # 531,441 strings if expanded: a 3 MB repr before the fix
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING), load_model(folder) as model:
        assert model.meta.declared_base_model is None
    assert time.perf_counter() - start < 5
    assert "base_model is a list holding a list" in caplog.text and "README.md" in caplog.text


@pytest.mark.parametrize("value, kind", [("{org: name}", "a mapping"), ("true", "a boolean"), ("3", "a number"),
                                         ("[[org/a], org/b]", "a list holding a list"), ("[org/a, 3]", "a list holding a number")])
def test_card_base_model_of_another_type_is_ignored_with_a_warning(
        value: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    folder = _carded(tmp_path, f"base_model: {value}\nlicense: mit")
    with caplog.at_level(logging.WARNING):
        status, out, err = _run(["inspect", str(folder), "--format", "json"], capsys)
    assert status == 0, err
    assert json.loads(out)["declared_base_model"] is None  # was the Python repr of the value
    [message] = caplog.messages
    assert message.startswith(f"warning: {folder / 'README.md'}: base_model is {kind}") and message.endswith("; ignored")


def test_card_warning_is_one_line_on_stderr(tmp_path: Path) -> None:
    """With no logging set up (the CLI), the warning is one plain line on stderr and the command succeeds."""
    folder = _carded(tmp_path, "base_model: {org: name}")
    proc = subprocess.run([sys.executable, "-m", "ancestree", "inspect", str(folder), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["declared_base_model"] is None
    assert proc.stderr.splitlines() == [f"warning: {folder / 'README.md'}: base_model is a mapping, not a name or a list of names; ignored"]


@pytest.mark.parametrize("front, card", [
    ("base_model: org/a\nbase_model_relation: finetune\ndatasets: shapes", {"base_model": "org/a", "base_model_relation": "finetune", "datasets": ["shapes"]}),
    ("base_model: [org/a, org/b]\nancestree_relation: merge", {"base_model": ["org/a", "org/b"], "ancestree_relation": "merge"}),
    ("base_model: '7'\ndatasets: [a, b]", {"base_model": "7", "datasets": ["a", "b"]}),
    ("base_model: org/a\nbase_model:", {}),
], ids=["name", "names", "quoted", "null"])
def test_card_keeps_only_the_fields_used_with_their_types(front: str, card: dict, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), load_model(_carded(tmp_path, front + "\nlicense: mit\ntags: [x, y]")) as model:
        # a lone dataset is one name, not the characters of one (probe inputs iterate it)
        assert model.meta.card == card
        assert model.meta.declared_base_model == card.get("base_model")
    assert caplog.text == ""


@pytest.mark.parametrize("front, problem", [
    ("base_model: org/a\n" + "pad: " + "x" * (70 * 1024), "longer than 64 KiB"),
    ("x: &x " + "y" * 30000 + "\nbase_model: [" + ",".join(["*x"] * 8) + "]", "expands beyond 64 KiB"),
    ("base_model: [org/a\nlicense: mit", "not valid YAML"),
    ("- base_model\n- org/a", "front matter is a list, not a mapping"),
    ('base_model: !!python/object/apply:os.system ["org/a"]', "tagged to build objects (!!python/object/apply:os.system)"),
], ids=["oversized", "aliases", "broken", "not-a-mapping", "python-tag"])
def test_broken_or_oversized_card_leaves_the_model_readable(front: str, problem: str, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), load_model(_carded(tmp_path, front)) as model:
        assert model.meta.card == {} and model.parameters > 0
    assert problem in caplog.text and "README.md" in caplog.text


def test_front_matter_without_its_closing_line_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``---`` then fields and no closing ``---``: ignored in silence before (the Hub ignores it too), so a
    declared base vanished and `--write-cards` buried it under a new block. A rule opening prose is no card."""
    folder = write_hf_folder(tmp_path / "m", small_tensors())
    (folder / "README.md").write_text("---\nbase_model: org/a\nlicense: mit\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING), load_model(folder) as model:
        assert model.meta.card == {}
    assert "no closing '---' line" in caplog.text
    caplog.clear()
    for prose in ("---\n\nA model trained on shapes.\n", "---\nDisclaimer: research checkpoint, use at your own risk.\n"):
        (folder / "README.md").write_text(prose, encoding="utf-8")
        with caplog.at_level(logging.WARNING), load_model(folder) as model:
            assert model.meta.card == {}
        assert "README.md" not in caplog.text, prose


def test_deeply_nested_card_does_not_crash_the_process(tmp_path: Path) -> None:
    """libyaml's composer recursed until a segmentation fault on ~30,000 levels: run in a child process."""
    folder = _carded(tmp_path, "base_model: " + "[" * 30000 + "]" * 30000)
    proc = subprocess.run([sys.executable, "-m", "ancestree", "inspect", str(folder), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert json.loads(proc.stdout)["declared_base_model"] is None
    assert "nests deeper than" in proc.stderr


# -- PEFT adapter configs ------------------------------------------------------------------------------------
def _adapter(tmp_path: Path, **config: object) -> Path:
    """A rank-4 LoRA adapter folder (one Linear module) whose config is ``r=4, lora_alpha=8`` changed by ``config``."""
    from safetensors.numpy import save_file

    folder = tmp_path / "adapter"
    folder.mkdir()
    rng = np.random.default_rng(0)
    save_file({"base_model.model.fc.lora_A.weight": rng.standard_normal((4, 6)).astype(np.float32),
               "base_model.model.fc.lora_B.weight": rng.standard_normal((8, 4)).astype(np.float32)},
              str(folder / "adapter_model.safetensors"))
    full = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "base_model_name_or_path": "org/base", **config}
    (folder / "adapter_config.json").write_text(json.dumps(full))
    return folder


@pytest.mark.parametrize("config, problem", [
    ({"r": "four"}, 'r is "four", not a positive integer'),
    ({"r": 4.5}, "r is 4.5, not a positive integer"),
    ({"r": None}, "r is null"),
    ({"lora_alpha": "eight"}, 'lora_alpha is "eight", not a number'),
    ({"lora_alpha": None}, "lora_alpha is null, not a number"),
    ({"rank_pattern": {"fc": "x"}}, "rank_pattern['fc'] is \"x\", not a positive integer"),
    ({"rank_pattern": [1, 2]}, "rank_pattern is a list"),
    ({"alpha_pattern": [1, 2]}, "alpha_pattern is a list"),
    ({"alpha_pattern": {"fc": "x"}}, "alpha_pattern['fc'] is \"x\", not a number"),
    ({"alpha_pattern": {"fc(": 3}}, "alpha_pattern key 'fc(' is not a valid pattern"),
    ({"base_model_name_or_path": {"org": "base"}}, "base_model_name_or_path is {\"org\": \"base\"}"),
    ({"use_rslora": "yes"}, 'use_rslora is "yes", not true or false'),
], ids=["r-str", "r-float", "r-null", "alpha-str", "alpha-null", "rank-pattern-str", "rank-pattern-list",
        "alpha-pattern-list", "alpha-pattern-str", "alpha-pattern-regex", "base-dict", "rslora-str"])
def test_peft_config_of_the_wrong_type_is_bad_input(config: dict, problem: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    folder = _adapter(tmp_path, **config)
    status, out, err = _run(["inspect", str(folder), "--format", "json"], capsys)
    assert status == 2 and out == "", err
    [line] = err.strip().splitlines()
    assert f"{folder / 'adapter_config.json'}: {problem}" in line


def test_adapter_weights_without_their_config_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """adapter_model.safetensors alone was read as a model of LoRA factors: a lone root in `tree`, exit 0."""
    folder = _adapter(tmp_path)
    (folder / "adapter_config.json").unlink()
    status, out, err = _run(["inspect", str(folder)], capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert str(folder) in err and "no adapter_config.json" in err


# -- PyTorch checkpoints: sparse and meta tensors ------------------------------------------------------------
def _pruned() -> torch.Tensor:
    w = torch.randn(16, 12, generator=torch.Generator().manual_seed(0))
    w[w.abs() < 1] = 0  # about two thirds pruned
    return w


@pytest.mark.parametrize("layout", ["coo", "csr", "csc"])
def test_sparse_tensor_in_a_checkpoint_is_read_dense(layout: str, tmp_path: Path) -> None:
    import warnings

    w = _pruned()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: sparse CSR/CSC "in beta"
        sparse = {"coo": w.to_sparse, "csr": w.to_sparse_csr, "csc": w.to_sparse_csc}[layout]()
    torch.save({"fc.weight": sparse, "fc.bias": torch.ones(16)}, tmp_path / "pruned.pt")
    with load_model(tmp_path / "pruned.pt") as model:
        assert model.tensors["fc.weight"].shape == (16, 12) and model.tensors["fc.weight"].dtype == "float32"
        np.testing.assert_array_equal(model.read("fc.weight"), w.numpy())


def test_meta_tensor_is_refused_by_name_when_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`inspect` lists tensors without reading them: it must refuse what `tree` cannot read."""
    torch.save({"fc.weight": _pruned(), "fc.bias": torch.empty(16, device="meta")}, tmp_path / "meta.pt")
    status, out, err = _run(["inspect", str(tmp_path / "meta.pt"), "--format", "json"], capsys)
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [f"ancestree: error: {tmp_path / 'meta.pt'}: tensor 'fc.bias' holds no data (a meta tensor)"]


def test_sparse_tensor_with_indices_outside_its_shape_is_refused(tmp_path: Path) -> None:
    """torch.load does not check sparse indices; densifying such a tensor would write outside its buffer."""
    bad = torch.sparse_coo_tensor(torch.tensor([[0, 100], [0, 5]]), torch.tensor([1.0, 2.0]), (4, 4), check_invariants=False)
    torch.save({"fc.weight": bad}, tmp_path / "bad.pt")
    with pytest.raises(BadInputError, match=r"sparse tensor 'fc.weight' is malformed \(size is inconsistent with indices"):
        load_model(tmp_path / "bad.pt")


# -- --scan and symbolic links -------------------------------------------------------------------------------
def _hf_cache(root: Path) -> Path:
    """The Hugging Face hub cache layout: content in ``blobs/``, the files of a revision as links to it."""
    repo = root / "models--org--tiny"
    write_hf_folder(repo / "blobs_src", small_tensors(3))
    (repo / "blobs").mkdir()
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for name, blob in (("config.json", "b1"), ("model.safetensors", "b2")):
        (repo / "blobs_src" / name).rename(repo / "blobs" / blob)
        (snapshot / name).symlink_to(Path("..", "..", "blobs", blob))
    (repo / "blobs_src").rmdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    return snapshot


def test_scan_does_not_follow_folder_links_but_follows_file_links(tmp_path: Path) -> None:
    from ancestree.io.loader import scan_models

    root = tmp_path / "scan"
    runs = root / "runs"
    write_hf_folder(runs / "step100", small_tensors(1))
    write_hf_folder(runs / "step200", small_tensors(2))
    (runs / "latest").symlink_to("step200")  # the same checkpoint under another name
    (runs / "all_runs").symlink_to(Path("..", "runs"))  # a loop back up the tree
    snapshot = _hf_cache(root / "hub")
    expected = ["hub/models--org--tiny", "runs/step100", "runs/step200"]  # a cache repository by its folder
    assert [model_id for model_id, _ in scan_models(root)] == expected
    (tmp_path / "link").symlink_to(root, target_is_directory=True)  # the folder given may be a link itself
    assert [model_id for model_id, _ in scan_models(tmp_path / "link")] == expected
    with load_model(snapshot) as model:  # the linked files are read through their links
        np.testing.assert_array_equal(model.read("layer.0.weight"), small_tensors(3)["layer.0.weight"])


def test_a_hugging_face_cache_repository_is_its_current_revision_and_answers_to_its_name(tmp_path: Path) -> None:
    """A cache repository folder (``models--org--name``) could not be given as a model (no weights in it), a
    scan named it by ``snapshots/<hash>``, and a card declaring ``org/name`` found nothing. It is now the
    revision ``refs/main`` names; an older snapshot is a model of its own; without refs/main and with several
    snapshots it says which folder to give."""
    from ancestree.fingerprint import fingerprint
    from ancestree.fingerprint.types import resolve_name
    from ancestree.graph import GraphRecovery
    from ancestree.io.loader import scan_models

    hub = tmp_path / "hub"
    current = _hf_cache(hub)
    repo = current.parent.parent
    write_hf_folder(repo / "snapshots" / "0000old0", small_tensors(4))  # an earlier revision, downloaded too
    tuned = {k: v + 0.01 * np.float32(1) if v.dtype == np.float32 else v for k, v in small_tensors(3).items()}
    write_hf_folder(hub / "tuned", tuned, {"base_model": "org/tiny"})
    assert [mid for mid, _ in scan_models(hub)] == ["models--org--tiny", "models--org--tiny/snapshots/0000old0", "tuned"]
    # `--scan` of the repository itself (or of any model folder): ids relative to it, as the contract has them
    assert [mid for mid, _ in scan_models(repo)] == [".", "snapshots/0000old0"]
    assert [mid for mid, _ in scan_models(hub / "tuned")] == ["."]
    with load_model(repo) as model:
        np.testing.assert_array_equal(model.read("layer.0.weight"), small_tensors(3)["layer.0.weight"])
    prints = [fingerprint(path, model_id=mid) for mid, path in scan_models(hub)]
    graph = GraphRecovery().fit(prints).graph_
    assert graph.parents("tuned") == ["models--org--tiny"] and not graph.notes, graph.notes
    # the current revision before an older snapshot given first; the folder's own name still answers
    ids = ["models--org--tiny/snapshots/0000old0", "models--org--tiny", "tuned"]
    assert resolve_name("org/tiny", ids, near="tuned") == "models--org--tiny"
    assert resolve_name("models--org--tiny", ["x/" + i for i in ids[1:]], near="x/tuned") == "x/models--org--tiny"
    assert resolve_name("org/tiny", ["models--org--tiny"], near="models--org--tiny/") is None  # never the declarer
    write_hf_folder(tmp_path / "elsewhere", small_tensors(5))  # where ../../../elsewhere leads from snapshots/
    (repo / "refs" / "main").write_text("../../../elsewhere")  # a ref is a hash, never a path
    with pytest.raises(BadInputError, match="current revision is unknown .* snapshots/<hash>"):
        load_model(repo)
    assert [mid for mid, _ in scan_models(hub)] == ["models--org--tiny/snapshots/0000old0",
                                                     "models--org--tiny/snapshots/0123abcd", "tuned"]
    (repo / "refs" / "main").unlink()
    os.mkfifo(repo / "refs" / "main")  # read, it would wait for a writer forever
    assert [mid for mid, _ in scan_models(hub)][:2] == ["models--org--tiny/snapshots/0000old0", "models--org--tiny/snapshots/0123abcd"]


def test_a_folder_of_models_given_as_one_says_to_scan_it_and_inspect_names_a_cache_revision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tree hub/` (a folder of models given as a model) said only "holds no weight files"; `inspect` of a
    cache repository did not say which revision it read."""
    from ancestree.cli.main import run

    hub = tmp_path / "hub"
    repo = _hf_cache(hub).parent.parent
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="holds no weight files .*; it holds models below it: use --scan"):
        load_model(hub)
    with pytest.raises(BadInputError) as empty:
        load_model(tmp_path / "empty")
    assert "--scan" not in str(empty.value)
    (tmp_path / "empty" / "locked").mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self: Path):  # a subfolder that cannot be listed (as root, chmod would not stop us)
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    with pytest.MonkeyPatch.context() as patch:  # the hint words the error, it must not replace it
        patch.setattr(Path, "iterdir", iterdir)
        with pytest.raises(BadInputError, match=r"empty: folder holds no weight files"):
            load_model(tmp_path / "empty")
    with pytest.raises(SystemExit):
        run(["inspect", str(repo), "-f", "json"])
    assert json.loads(capsys.readouterr().out)["revision"] == "0123abcd"


def test_write_cards_leaves_hugging_face_cache_folders_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--write-cards wrote README.md at a cache repository's root, where no reader looks (the card read is
    the snapshot's, itself a link into the cache's blobs): such folders are skipped, and said so."""
    from ancestree.cli.main import run

    hub = tmp_path / "hub"
    snapshot = _hf_cache(hub)
    repo = snapshot.parent.parent
    (repo / "blobs" / "b3").write_text("---\nbase_model: base\n---\n")  # its card, in the cache's way
    (snapshot / "README.md").symlink_to(Path("..", "..", "blobs", "b3"))
    write_hf_folder(hub / "base", {k: v - np.float32(0.01) if v.dtype == np.float32 else v for k, v in small_tensors(3).items()})
    before = {str(p): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        run(["tree", "--scan", str(hub), "--write-cards", "-f", "json", "--no-cache"])
    err = capsys.readouterr().err
    assert exit_info.value.code in (0, None), err
    assert {str(p): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert "card models--org--tiny: not written (a Hugging Face cache folder" in err, err


@pytest.mark.parametrize("way", ["component subfolder", "link to the repository", "link to a snapshot"])
def test_write_cards_never_writes_inside_the_cache_reached_otherwise(tmp_path: Path, way: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The cache test looked at a folder's own name and place only: a model in a snapshot's subfolder
    (diffusers' unet/), a link of another name to a repository, or a link to a snapshot had a README.md
    written into the cache (with --force, a card link into the blobs replaced by a file)."""
    from ancestree.cli.main import run

    snapshot = _hf_cache(tmp_path / "hub")
    repo = snapshot.parent.parent
    if way == "component subfolder":
        (snapshot / "unet").mkdir()
        for name in ("config.json", "model.safetensors"):
            (snapshot / name).rename(snapshot / "unet" / name)
            (snapshot / "unet" / name).unlink()
            (snapshot / "unet" / name).symlink_to(Path("..", "..", "..", "blobs", "b1" if name == "config.json" else "b2"))
        model = snapshot / "unet"
    else:
        (tmp_path / "gathered").mkdir()
        model = tmp_path / "gathered" / "tiny"
        model.symlink_to(repo if way == "link to the repository" else snapshot)
    write_hf_folder(tmp_path / "base", {k: v - np.float32(0.01) if v.dtype == np.float32 else v for k, v in small_tensors(3).items()})
    before = sorted(str(p) for p in repo.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        run(["tree", str(tmp_path / "base"), str(model), "--write-cards", "--force", "-f", "json", "--no-cache"])
    err = capsys.readouterr().err
    assert exit_info.value.code in (0, None), err
    assert sorted(str(p) for p in repo.rglob("*")) == before and not any(p.is_file() and not p.is_symlink()
                                                                        for p in (repo / "snapshots").rglob("*"))
    assert "not written (a Hugging Face cache folder" in err, err


def test_a_cache_whose_blobs_are_gone_says_so(tmp_path: Path) -> None:
    """A snapshot whose links lead to deleted blobs was said to hold "models below it: use --scan"."""
    snapshot = _hf_cache(tmp_path / "hub")
    for blob in (snapshot.parent.parent / "blobs").iterdir():
        blob.unlink()
    for target in (snapshot.parent.parent, snapshot):
        with pytest.raises(BadInputError, match=r"links to missing files \(model.safetensors\)") as err:
            load_model(target)
        assert "--scan" not in str(err.value)


def test_scanned_folders_that_are_models_keep_distinct_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two --scan folders that are models are named as given (both are "." relative to themselves);
    `--scan .` inside a cache repository reads the repository (its snapshot was read as a model folder of its
    own, 'snapshots/<hash>'); a scanned cache repository whose blobs are gone is one model saying so (its
    dangling file was scanned as a model of its own)."""
    from ancestree.io.loader import scan_folders, scan_models

    for run in ("runA", "runB"):
        write_hf_folder(tmp_path / run / "final", small_tensors(1))
    monkeypatch.chdir(tmp_path)
    assert [mid for mid, _ in scan_folders(["runA/final", "runB/final"])] == ["runA/final", "runB/final"]
    write_hf_folder(tmp_path / "runA" / "final" / "final", small_tensors(3))  # a model inside a model folder
    monkeypatch.chdir(tmp_path / "runA" / "final")
    assert [mid for mid, _ in scan_folders([".", "final"])] == [".", "final"]
    snapshot = _hf_cache(tmp_path / "hub")
    monkeypatch.chdir(snapshot.parent.parent)
    assert [(mid, path) for mid, path in scan_models(".")] == [(".", Path("."))]
    monkeypatch.chdir(tmp_path)
    for blob in (snapshot.parent.parent / "blobs").iterdir():
        blob.unlink()
    assert [mid for mid, _ in scan_models(tmp_path / "hub")] == ["models--org--tiny"]
    with pytest.raises(BadInputError, match="links to missing files"):
        load_model(tmp_path / "hub" / "models--org--tiny")


def test_scan_follows_links_to_models_gathered_from_elsewhere(tmp_path: Path) -> None:
    """A folder of links to models kept elsewhere (a hand-made collection) is scanned through its links, each
    target once; links back into the collection or above it are still not followed."""
    from ancestree.io.loader import scan_models

    elsewhere = tmp_path / "elsewhere"
    write_hf_folder(elsewhere / "bert", small_tensors(1))
    write_hf_folder(elsewhere / "group" / "gpt", small_tensors(2))
    root = tmp_path / "collection"
    root.mkdir()
    (root / "bert").symlink_to(elsewhere / "bert")
    (root / "bert-again").symlink_to(elsewhere / "bert")  # the same target twice: scanned once
    (root / "group").symlink_to(elsewhere / "group")
    (root / "loop").symlink_to(tmp_path)  # an ancestor of the collection
    assert [model_id for model_id, _ in scan_models(root)] == ["bert", "group/gpt"]


# -- zips holding more than one model -----------------------------------------------------------------------
def _zip_folders(zip_path: Path, folders: dict[str, Path], extra: dict[str, str] | None = None) -> Path:
    """A zip holding each folder under its archive name, plus ``extra`` text members."""
    import zipfile

    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, folder in folders.items():
            for f in folder.iterdir():
                zf.write(f, f"{name}/{f.name}")
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    return zip_path


@pytest.mark.parametrize("prefix", ["", "models/"])
def test_zip_of_several_model_folders_is_refused_naming_them(prefix: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    folders = {f"{prefix}{n}": write_hf_folder(tmp_path / n, small_tensors(i)) for i, n in enumerate(["a", "b"])}
    archive = _zip_folders(tmp_path / "two.zip", folders)
    code, out, err = _run(["inspect", str(archive)], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and str(archive) in err
    assert "2 models" in err and f"{prefix}a" in err and f"{prefix}b" in err and "--scan" in err
    assert "no weight files" not in err


def test_zip_of_one_model_folder_beside_a_readme_is_read(tmp_path: Path) -> None:
    archive = _zip_folders(tmp_path / "one.zip", {"model": write_hf_folder(tmp_path / "m", small_tensors())},
                           {"README.md": "# one model\n"})
    with load_model(archive) as model:
        assert model.format == "zip:safetensors" and model.meta.extra["zip_member"] == "model"
        assert set(model.tensors) == set(small_tensors())


def test_zip_of_loose_shards_in_a_folder_beside_a_readme_is_one_model(tmp_path: Path) -> None:
    """Shard files without an index, in one folder beside a README: one checkpoint, as when the same shards
    lie at the top of the zip (the folder scan listed each shard as a model and the zip was refused)."""
    from safetensors.numpy import save_file

    shards = tmp_path / "shards"
    shards.mkdir()
    tensors = small_tensors()
    names = sorted(tensors)
    half = len(names) // 2
    save_file({n: tensors[n] for n in names[:half]}, str(shards / "model-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[half:]}, str(shards / "model-00002-of-00002.safetensors"))
    archive = _zip_folders(tmp_path / "sharded.zip", {"model": shards}, {"README.md": "# one model\n"})
    with load_model(archive) as model:
        assert set(model.tensors) == set(tensors)


@pytest.mark.parametrize("damage", ["half the bytes", "a huge dimension"])
def test_onnx_initializer_of_the_wrong_size_is_refused_by_inspect_too(damage: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`inspect` said such files were fine (exit 0) that `tree` refused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    if damage == "half the bytes":
        weight.raw_data = weight.raw_data[:24]
    else:
        weight.dims[0] = 10**12
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [weight])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))
    status, out, err = _run(["inspect", str(path)], capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1 and "tensor 'w' holds" in err, err


def test_links_to_nothing_and_empty_tensors_get_plain_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A loop of links was "no such file or folder"; comparing zero-size tensors printed numpy's "Mean of empty
    slice" warnings on stderr."""
    from safetensors.numpy import save_file

    from ancestree.cli.main import run as cli

    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    with pytest.raises(SystemExit) as exit_info:
        cli(["inspect", str(tmp_path / "loop1")])
    assert exit_info.value.code == 2 and "a symbolic link that leads to no file" in capsys.readouterr().err
    for name in ("e1", "e2"):
        save_file({"w": np.zeros((0, 64), dtype=np.float32), "z": np.zeros(0, dtype=np.float32)}, str(tmp_path / f"{name}.safetensors"))
    import warnings

    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as exit_info:
        warnings.simplefilter("always")
        cli(["compare", str(tmp_path / "e1.safetensors"), str(tmp_path / "e2.safetensors")])
    assert exit_info.value.code == 0 and not [str(w.message) for w in caught]


def test_a_damaged_npz_leaves_no_file_open(tmp_path: Path) -> None:
    """np.load opens the file itself and leaves it open when the archive is damaged: the handle was found
    later by the garbage collector (an "unclosed file" warning inside another test's run in CI). ancestree
    opens the file and closes it, for models and for probe data."""
    import gc
    import warnings

    from ancestree.errors import BadInputError
    from ancestree.io import load_model
    from ancestree.lineage.probe import read_probe_file

    np.savez(tmp_path / "ok.npz", x=np.zeros((40, 3), dtype=np.float32))
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for read in (read_probe_file, load_model):
            with pytest.raises(BadInputError, match="cut.npz"):
                read(tmp_path / "cut.npz")
        gc.collect()
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    with load_model(tmp_path / "ok.npz") as model:  # a good archive still reads, and closes
        assert [t.name for t, _ in model.iter_tensors()] == ["x"]
