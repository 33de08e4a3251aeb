"""``ancestree tree`` and ``ancestree eval`` end to end (tiny zoo), and their handling of bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def run(*args: str, env_cache: Path | None = None) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ)
    if env_cache is not None:
        env["ANCESTREE_CACHE"] = str(env_cache)
    return subprocess.run([sys.executable, "-m", "ancestree", *args], capture_output=True, text=True, env=env, timeout=300)


def test_tree_scan_json_eval_and_png(tiny_zoo: Path, tmp_path: Path) -> None:
    out, png = tmp_path / "graph.json", tmp_path / "graph.png"
    r = run("tree", "--scan", str(tiny_zoo), "-o", str(out), "--png", str(png), env_cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    truth = json.loads((tiny_zoo / "truth.json").read_text())
    assert {m["id"] for m in data["models"]} == {m["id"] for m in truth["models"]}  # ids relative to --scan
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = run("eval", str(out), str(tiny_zoo / "truth.json"), "--format", "json")
    assert r.returncode == 0, r.stderr
    scores = json.loads(r.stdout)
    assert scores["edge_f1"] >= 0.9 and scores["tree_exact"] and scores["cross_tree_edges"] == 0


def test_tree_paths_as_given_and_formats(tiny_zoo: Path, tmp_path: Path) -> None:
    models = [str(tiny_zoo / m) for m in ("m0003", "m0016", "m0025")]
    r = run("tree", *models, "--format", "mermaid", env_cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("flowchart TD") and models[0] in r.stdout
    html = tmp_path / "g.html"
    assert run("tree", *models, "-o", str(html), env_cache=tmp_path / "cache").returncode == 0
    assert "<svg" in html.read_text()  # format taken from the suffix


def test_tree_mother_method(tiny_zoo: Path, tmp_path: Path) -> None:
    models = [str(tiny_zoo / m) for m in ("m0003", "m0016", "m0013", "m0018", "m0020")]
    r = run("tree", *models, "--method", "mother", "--trees", "2", "--format", "json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len({m["tree"] for m in data["models"]}) == 2 and len(data["edges"]) == 3


def test_write_cards_respects_declared(tiny_zoo: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    zoo = tmp_path / "zoo"
    for m in ("m0003", "m0016", "m0002"):
        shutil.copytree(tiny_zoo / m, zoo / m)
    (zoo / "m0002" / "README.md").write_text("---\nbase_model: m0003\n---\n# wrong on purpose\n")
    r = run("tree", "--scan", str(zoo), "--write-cards", "--format", "json", env_cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert ModelCard.load(zoo / "m0016" / "README.md").data.base_model == "m0003"
    assert ModelCard.load(zoo / "m0002" / "README.md").data.base_model == "m0003"  # declared, kept
    assert "m0002" in r.stderr
    r = run("tree", "--scan", str(zoo), "--write-cards", "--force", "--format", "json", env_cache=tmp_path / "cache")
    card = ModelCard.load(zoo / "m0002" / "README.md")
    assert card.data.base_model == "m0016" and card.data.base_model_relation == "quantized"


@pytest.mark.parametrize("bad", ["missing", "empty", "notamodel"])
def test_bad_input_exit_2_no_output(tmp_path: Path, bad: str) -> None:
    target = tmp_path / "x.safetensors"
    if bad == "empty":
        target.write_bytes(b"")
    elif bad == "notamodel":
        target = tmp_path / "notes.txt"
        target.write_text("hello")
    out = tmp_path / "out.json"
    r = run("tree", str(target), "-o", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_eval_bad_json(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = run("eval", str(bad), str(bad))
    assert r.returncode == 2 and "bad.json" in r.stderr


def _damaged_family(root: Path) -> Path:
    """A base, three fine-tunes, a diverged copy (all NaN) and a fine-tune with one infinite entry."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    base = {f"l{i}.weight": rng.standard_normal((64, 64)).astype(np.float32) for i in range(3)}

    def write(name: str, tensors: dict) -> None:
        (root / name).mkdir(parents=True)
        save_file(tensors, str(root / name / "model.safetensors"))

    def tuned() -> dict:
        return {n: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for n, v in base.items()}

    write("base", base)
    for k in range(3):
        write(f"ft{k}", tuned())
    write("diverged", {n: np.full_like(v, np.nan) for n, v in base.items()})
    spiked = tuned()
    spiked["l0.weight"][3, 5] = np.inf
    write("spiked", spiked)
    return root


def test_nan_and_inf_weights_are_left_out_and_reported(tmp_path: Path) -> None:
    family = _damaged_family(tmp_path / "fam")
    r = run("tree", "--scan", str(family), "--format", "json", "--no-cache")
    assert r.returncode == 0, r.stderr
    graph = json.loads(r.stdout)
    parent = {e["child"]: e["parent"] for e in graph["edges"]}
    tree = {m["id"]: m["tree"] for m in graph["models"]}
    assert "diverged/model.safetensors" not in parent and "diverged/model.safetensors" not in parent.values()
    assert sum(t == tree["diverged/model.safetensors"] for t in tree.values()) == 1  # a tree of its own
    assert parent["spiked/model.safetensors"] == "base/model.safetensors"  # its two finite matrices suffice
    assert {n["model"] for n in graph["notes"]} == {"diverged/model.safetensors", "spiked/model.safetensors"}
    assert "warning: diverged/model.safetensors: NaN or infinite values in 3 of 3 tensors" in r.stderr
    assert "1 of 3 tensors" in r.stderr and "conflict" not in r.stderr
    # text into a file or a pipe: the notes on stderr as well, where a person sees them
    for extra in ([], ["-o", str(tmp_path / "tree.txt")]):
        r = run("tree", "--scan", str(family), "--format", "text", "--no-cache", *extra)
        assert r.returncode == 0 and "warning: diverged/model.safetensors: NaN or infinite" in r.stderr, r.stderr


def test_notes_are_printed_once_as_text_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """As text on the terminal the notes end the output; they were printed a second time on stderr."""
    import sys

    from ancestree.cli.main import run as run_cli

    family = _damaged_family(tmp_path / "fam")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with pytest.raises(SystemExit):
        run_cli(["tree", "--scan", str(family), "--format", "text", "--no-cache"])
    out, err = capsys.readouterr()
    assert out.count("NaN or infinite values in 3 of 3") == 1 and "NaN" not in err, err


def _shifted_copy(src: Path, dst: Path, seed: int = 7) -> None:
    """``src`` copied with every float tensor moved by the same seeded noise per tensor name: a base and its
    fine-tune shifted alike stay parent and child, and are no copies of the originals."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    for weights in dst.glob("*.safetensors"):
        tensors = load_file(str(weights))
        for name, value in tensors.items():
            if value.dtype == np.float32:
                rng = np.random.default_rng([seed, sum(name.encode())])
                tensors[name] = value + (0.5 * value.std() * rng.standard_normal(value.shape)).astype(np.float32)
        save_file(tensors, str(weights))


def test_declared_bases_resolve_within_their_own_scan_folder(tiny_zoo: Path, tmp_path: Path) -> None:
    """Two scanned folders holding the same model names: a card (``base_model: m0003``) and a PEFT adapter
    (``base_model_name_or_path: m0003``) in folder b name b's m0003, not a's (they were read as a's, the
    first match: the adapter hung in a's tree, the fine-tune's card reported as a conflict)."""
    for m in ("m0003", "m0005", "m0006"):
        shutil.copytree(tiny_zoo / m, tmp_path / "a" / m)
        _shifted_copy(tiny_zoo / m, tmp_path / "b" / m)
    for flag in ((), ("--no-declared",)):
        r = run("tree", "--scan", str(tmp_path / "a"), "--scan", str(tmp_path / "b"), "--format", "json", *flag,
                env_cache=tmp_path / "cache")
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        parents = {(e["child"], e["relation"]): e["parent"] for e in data["edges"]}
        ids = {m["id"] for m in data["models"]}
        a3, b3 = (next(i for i in ids if i.endswith(f"{f}/m0003")) for f in ("a", "b"))
        b5 = next(i for i in ids if i.endswith("b/m0005"))
        assert parents.get((b5, "adapter")) == b3 != a3, flag
        if not flag:
            assert not [n for n in data.get("notes", []) if "b/m0006" in json.dumps(n)], data.get("notes")


def test_outputs_that_are_links_pipes_or_stdout_are_written_not_replaced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`-o` replaced whatever it named by a new file: a symbolic link became a file (its target untouched), a
    FIFO a reader waited on became a file, and as root `-o /dev/null` destroyed /dev/null. `-o -` wrote a file
    named `-`. Now a link's target is written, a FIFO or device is written through, and `-` is stdout."""
    import os
    import threading

    from ancestree.cli.main import run as cli
    from conftest import small_tensors, write_hf_folder

    models = [str(write_hf_folder(tmp_path / name, small_tensors(seed))) for name, seed in (("a", 1), ("b", 2))]

    def tree(out: str) -> None:
        with pytest.raises(SystemExit) as exit_info:
            cli(["tree", *models, "-f", "json", "-o", out])
        assert exit_info.value.code == 0

    (tmp_path / "real.json").write_text("old")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    tree(str(tmp_path / "link.json"))
    assert (tmp_path / "link.json").is_symlink() and json.loads((tmp_path / "real.json").read_text())["models"]

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    tree(str(fifo))
    reader.join(30)
    assert fifo.is_fifo() and json.loads(got[0])["models"]

    capsys.readouterr()
    tree("-")
    assert json.loads(capsys.readouterr().out)["models"] and not (Path.cwd() / "-").exists()


def test_one_model_given_twice_by_two_spellings_is_refused(tmp_path: Path) -> None:
    """`tree base ./base`, `tree base base/model.safetensors` and `tree base --scan .` drew the model as its
    own duplicate (`parent` already refused a candidate given twice)."""
    from conftest import small_tensors, write_hf_folder

    base = write_hf_folder(tmp_path / "zoo" / "base", small_tensors(1))
    write_hf_folder(tmp_path / "zoo" / "other", small_tensors(2))
    for args in ((str(base), f"{tmp_path}/zoo/./base"), (str(base), str(base / "model.safetensors")),
                 (str(base), "--scan", str(tmp_path / "zoo"))):
        r = run("tree", *args, "-o", str(tmp_path / "out.json"))
        assert r.returncode == 2 and "one model given twice" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not (tmp_path / "out.json").exists()


def test_checkpoint_folders_inside_a_model_folder_are_named_not_dropped_silently(tmp_path: Path) -> None:
    """A Trainer's output (`out/` with its final weights, `out/checkpoint-500/` ...): a scan does not enter a
    model folder (the contract), and `tree --scan runs` read one model of three without a word."""
    from conftest import small_tensors, write_hf_folder

    out = write_hf_folder(tmp_path / "runs" / "out", small_tensors(1))
    for step in (500, 1000):
        write_hf_folder(out / f"checkpoint-{step}", small_tensors(1))
    r = run("tree", "--scan", str(tmp_path / "runs"), "-f", "json")
    assert r.returncode == 0 and [m["id"] for m in json.loads(r.stdout)["models"]] == ["out"]
    assert "warning: out: holds 2 more model folder(s) (checkpoint-1000, checkpoint-500)" in r.stderr
    r = run("tree", str(out), str(out / "checkpoint-500"), str(out / "checkpoint-1000"), "-f", "json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["models"]) == 3  # given as paths, as the warning says


def test_review_of_outputs_and_of_one_model_twice(tmp_path: Path) -> None:
    """From a review: `-o /dev/stdout` into a log opened with `>>` replaced the log (its earlier lines went);
    `--png -` without `-o` mixed a PNG and JSON in one stream; a weight file given before its folder was still
    drawn as its own duplicate, while a checkpoint folder's file or a variant file beside the folder's own
    (other models) were refused; a sentence-transformers module folder was called another model."""
    from conftest import small_tensors, write_hf_folder

    zoo = tmp_path / "zoo"
    base = write_hf_folder(zoo / "base", small_tensors(1))
    write_hf_folder(zoo / "other", small_tensors(2))
    log = tmp_path / "log.txt"
    log.write_text("EARLIER\n")
    with open(log, "a") as appended:
        r = subprocess.run([sys.executable, "-m", "ancestree", "tree", str(base), str(zoo / "other"), "-f", "json",
                            "-o", "/dev/stdout"], stdout=appended, stderr=subprocess.PIPE, text=True, timeout=300)
    assert r.returncode == 0 and log.read_text().startswith("EARLIER\n{")
    r = run("tree", str(base), "--png", "-")
    assert r.returncode == 2 and "give -o FILE" in r.stderr and r.stdout == ""
    r = run("tree", str(base / "model.safetensors"), str(base))
    assert r.returncode == 2 and "one model given twice" in r.stderr
    from safetensors.numpy import save_file

    save_file({k: v.astype(np.float16) if v.dtype.kind == "f" else v for k, v in small_tensors(1).items()},
              str(base / "model.fp16.safetensors"))
    write_hf_folder(base / "checkpoint-5", small_tensors(3))
    r = run("tree", str(base), str(base / "model.fp16.safetensors"), str(base / "checkpoint-5" / "model.safetensors"), "-f", "json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["models"]) == 3, r.stderr
    st = write_hf_folder(tmp_path / "st", small_tensors(4))
    (st / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "2_Dense", "type": "Dense"}]))
    write_hf_folder(st / "2_Dense", small_tensors(5))
    r = run("tree", str(st), str(zoo / "other"), "-f", "json")
    assert r.returncode == 0 and "more model folder" not in r.stderr


def test_second_review_of_outputs_twice_and_parts(tmp_path: Path) -> None:
    """From a second review: `-o /dev/stdout > log 2>&1` wrote the graph through a second handle, and a warning
    printed after it overwrote its start; two folders sharing one unchanged shard (two revisions linking one
    blob) were refused as one model; a `modules.json` hid a Trainer checkpoint beside its modules."""
    from safetensors.numpy import save_file

    from ancestree.fingerprint.types import short_name
    from conftest import small_tensors, write_hf_folder

    a = write_hf_folder(tmp_path / "a", small_tensors(1))
    b = write_hf_folder(tmp_path / "b", small_tensors(2))
    bad = {k: v.copy() for k, v in small_tensors(3).items()}
    bad["layer.0.weight"][0, 0] = np.nan
    c = write_hf_folder(tmp_path / "c", bad)
    log = tmp_path / "log.txt"
    with open(log, "w") as both:
        r = subprocess.run([sys.executable, "-m", "ancestree", "tree", str(a), str(b), str(c), "-f", "json", "-o", "/dev/stdout"],
                           stdout=both, stderr=both, timeout=300)
    text = log.read_text()
    graph, end = json.JSONDecoder().raw_decode(text[text.index("{"):])
    assert r.returncode == 0 and len(graph["models"]) == 3 and "NaN" in text[:text.index("{")] + text[text.index("{") + end:]

    shards = {}
    for rev, seed in (("v1", 4), ("v2", 5)):
        folder = tmp_path / rev
        folder.mkdir()
        tensors = small_tensors(seed)
        names = sorted(tensors)
        (folder / "config.json").write_text("{}")
        if rev == "v1":
            save_file({n: tensors[n] for n in names[:1]}, str(tmp_path / "shared.safetensors"))
        (folder / "model-00001-of-00002.safetensors").symlink_to(tmp_path / "shared.safetensors")
        save_file({n: tensors[n] for n in names[1:]}, str(folder / "model-00002-of-00002.safetensors"))
        shards[rev] = {"metadata": {}, "weight_map": {n: f"model-0000{1 if n == names[0] else 2}-of-00002.safetensors" for n in names}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(shards[rev]))
    r = run("tree", str(tmp_path / "v1"), str(tmp_path / "v2"), "-f", "json")
    assert r.returncode == 0 and len(json.loads(r.stdout)["models"]) == 2, r.stderr

    st = write_hf_folder(tmp_path / "st", small_tensors(6))
    (st / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "x"},
                                                 {"idx": 1, "name": "1", "path": "2_Dense", "type": "y"}]))
    write_hf_folder(st / "2_Dense", small_tensors(7))
    write_hf_folder(st / "checkpoint-5", small_tensors(6))
    r = run("tree", str(st), str(a), "-f", "json")
    assert r.returncode == 0 and "(checkpoint-5)" in r.stderr and "2_Dense" not in r.stderr
    assert short_name("llama-7b/consolidated.00.pth", 18) == "llama-7b"
