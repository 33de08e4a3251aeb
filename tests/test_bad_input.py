"""Bad input at the command line: exit status 2, one line on stderr naming the file, no traceback.

Every case writes a real broken file (or folder) and runs the real entry point, ``ancestree.cli.main.run``,
in-process; one case also runs ``python -m ancestree`` in a subprocess to check the whole path.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from ancestree.cli.main import run
from conftest import small_tensors, write_hf_folder

Case = Callable[[Path], Path]


def _safetensors_bytes() -> bytes:
    from safetensors.numpy import save

    return save({"w": np.arange(64, dtype=np.float32).reshape(8, 8)})


def _header(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _write(name: str, data: bytes) -> Case:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _truncated(name: str, writer: Callable[[Path], None], keep: float = 0.5) -> Case:
    def make(tmp: Path) -> Path:
        full = tmp / ("full_" + name)
        writer(full)
        data = full.read_bytes()
        full.unlink()
        (tmp / name).write_bytes(data[: int(len(data) * keep)])
        return tmp / name

    return make


def _onnx(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((16, 16), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], [w],
    )
    onnx.save(helper.make_model(graph), path)


def _gguf(path: Path) -> None:
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), "llama")
    writer.add_tensor("w", np.ones((8, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _zip(name: str, members: dict[str, bytes], symlink: str | None = None) -> Case:
    def make(tmp: Path) -> Path:
        with zipfile.ZipFile(tmp / name, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
            if symlink:
                info = zipfile.ZipInfo(symlink)
                info.external_attr = (0o120777 << 16)
                zf.writestr(info, "/etc/passwd")
        return tmp / name

    return make


def _folder(files: dict[str, bytes]) -> Case:
    def make(tmp: Path) -> Path:
        folder = tmp / "model"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return folder

    return make


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _malicious(tmp: Path) -> Path:
    torch.save({"w": torch.ones(2), "x": _Hostile(tmp / "PWNED")}, tmp / "pytorch_model.bin")
    return tmp / "pytorch_model.bin"


def _malicious_in_folder(tmp: Path) -> Path:
    folder = tmp / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Hostile(tmp / "PWNED")}, protocol=2))
    return folder


def _sharded_missing(tmp: Path) -> Path:
    folder = write_hf_folder(tmp / "sharded", small_tensors())
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {"layer.0.weight": "model-00001-of-00002.safetensors", "layer.1.weight": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def _sharded_outside(tmp: Path) -> Path:
    """An index naming a shard in another folder (here a real weight file, which was read)."""
    tensors = small_tensors()
    write_hf_folder(tmp / "other", {"layer.1.weight": tensors.pop("layer.1.weight")})
    folder = write_hf_folder(tmp / "sharded", tensors)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {"layer.0.weight": "model-00001-of-00002.safetensors", "layer.1.weight": "../other/model.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder


def _onnx_external_missing(tmp: Path) -> Path:
    """An ONNX model whose weights live in a side file that is gone (inspect listed it; tree refused it)."""
    import onnx

    path = tmp / "ext" / "model.onnx"
    path.parent.mkdir()
    _onnx(path)
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    (path.parent / "model.onnx.data").unlink()
    return path


def _peft(config: bytes, weights: dict[str, np.ndarray] | None) -> Case:
    def make(tmp: Path) -> Path:
        folder = tmp / "adapter"
        folder.mkdir()
        (folder / "adapter_config.json").write_bytes(config)
        if weights is not None:
            save_file(weights, str(folder / "adapter_model.safetensors"))
        return folder

    return make


def _empty_folder(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _npy_as_npz(tmp: Path) -> Path:
    np.save(tmp / "a.npy", np.ones(3))
    (tmp / "a.npy").rename(tmp / "a.npz")
    return tmp / "a.npz"


def _npz_object(tmp: Path) -> Path:
    np.savez(tmp / "o.npz", w=np.ones(3), o=np.array([{"k": 1}], dtype=object))
    return tmp / "o.npz"


def _whole_module(tmp: Path) -> Path:
    torch.save(torch.nn.Linear(2, 2), tmp / "model.pt")
    return tmp / "model.pt"


def _zip_bomb(tmp: Path) -> Path:
    with zipfile.ZipFile(tmp / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.safetensors", bytes(70 << 20))  # > the 64 MiB floor, ~70 KiB on disk
    return tmp / "bomb.zip"


_SAFE = _safetensors_bytes()
_LORA_A = {"base_model.model.fc.lora_A.weight": np.ones((2, 4), np.float32)}

CASES: dict[str, Case] = {
    "truncated safetensors": _write("t.safetensors", _SAFE[: len(_SAFE) - 40]),
    "safetensors header cut": _write("h.safetensors", _SAFE[:20]),
    "safetensors offsets lie": _write("o.safetensors", _header({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}, bytes(16))),
    "safetensors overlapping": _write("ov.safetensors", _header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12))),
    "safetensors unknown dtype": _write("d.safetensors", _header({"w": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}}, bytes(4))),
    "safetensors header not json": _write("j.safetensors", struct.pack("<Q", 10) + b"not json!!" + bytes(8)),
    "safetensors huge header length": _write("n.safetensors", struct.pack("<Q", 1 << 60) + b"{}"),
    "zero-byte file": _write("zero.safetensors", b""),
    "zero-byte gguf": _write("zero.gguf", b""),
    "unknown extension": _write("model.h5", b"\x89HDF\r\n\x1a\n" + bytes(100)),
    "no extension": _write("weights", bytes(100)),
    "onnx not protobuf": _write("m.onnx", b"this is plainly not a protobuf message, just text\n" * 4),
    "onnx truncated": _truncated("m.onnx", _onnx, 0.6),
    "onnx protobuf without graph": _write("g.onnx", b"\x08\x07"),  # ir_version only
    "onnx external data missing": _onnx_external_missing,
    "corrupt zip": _write("m.zip", b"PK\x03\x04" + bytes(range(256)) * 4),
    "zip with ../ member": _zip("evil.zip", {"../outside.safetensors": _SAFE}),
    "zip with absolute member": _zip("abs.zip", {"/tmp/abs.safetensors": _SAFE}),
    "zip with symlink": _zip("link.zip", {"model.safetensors": _SAFE}, symlink="config.json"),
    "zip bomb": _zip_bomb,
    "zip of broken weights": _zip("inner.zip", {"model/model.safetensors": _SAFE[:30], "model/config.json": b"{}"}),
    "empty zip": _zip("empty.zip", {}),
    "bin random bytes": _write("pytorch_model.bin", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))),
    "pth that is json": _write("model.pth", b'{"weights": [1, 2, 3]}'),
    "truncated pt (zip)": _truncated("model.pt", lambda p: torch.save({"w": torch.ones(64, 64)}, p)),
    "truncated pt (legacy)": _truncated("old.pt", lambda p: torch.save({"w": torch.ones(64, 64)}, p, _use_new_zipfile_serialization=False)),
    "malicious pickle": _malicious,
    "malicious pickle in folder": _malicious_in_folder,
    "whole nn.Module pickle": _whole_module,
    "npz with object array": _npz_object,
    "npz truncated": _truncated("w.npz", lambda p: np.savez(p, **small_tensors())),
    "npy renamed npz": _npy_as_npz,
    "gguf bad magic": _write("m.gguf", b"GGUX" + bytes(200)),
    "gguf truncated": _truncated("m.gguf", _gguf, 0.7),
    "peft config not json": _peft(b"{r: 8,,}", _LORA_A),
    "peft without weights": _peft(b'{"peft_type": "LORA", "r": 2, "lora_alpha": 4}', None),
    "peft lora_A without lora_B": _peft(b'{"peft_type": "LORA", "r": 2, "lora_alpha": 4}', _LORA_A),
    "sharded index names missing shard": _sharded_missing,
    "sharded index names a shard outside the folder": _sharded_outside,
    "sharded index not json": _folder({"model.safetensors.index.json": b"{oops", "model.safetensors": _SAFE, "config.json": b"{}"}),
    "folder with no weights": _folder({"config.json": b"{}", "notes.txt": b"hello"}),
    "folder with broken weights": _folder({"config.json": b"{}", "model.safetensors": b"\x01" * 64}),
    "config.json not json": _folder({"config.json": b"{nope", "model.safetensors": _SAFE}),
    "path that does not exist": lambda tmp: tmp / "missing" / "model.safetensors",
    "empty folder": _empty_folder,
}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        run(argv)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize("case", list(CASES), ids=lambda c: c.replace(" ", "-"))
def test_bad_input_is_one_clean_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = CASES[case](tmp_path)
    status, out, err = _run(["inspect", str(path), "--format", "json"], capsys)
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and out == ""
    assert path.name in lines[0], lines[0]  # the message names the file (or its folder)
    assert not (tmp_path / "PWNED").exists()  # no pickled code ran


@pytest.mark.parametrize("case", ["truncated safetensors", "onnx truncated", "malicious pickle", "zip with ../ member", "gguf bad magic"])
def test_bad_input_writes_no_output_file(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = CASES[case](tmp_path)
    out_file = tmp_path / "out" / "fingerprints.npz"
    status, _, err = _run(["fingerprint", str(path), "--no-cache", "-o", str(out_file), "--format", "json"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert not out_file.exists() and not out_file.parent.exists() or not any(out_file.parent.iterdir())


def test_a_problem_spanning_lines_is_said_in_one() -> None:
    """Library messages (numpy, yaml, onnx) span lines; the error ancestree prints is one line all the same."""
    from ancestree.errors import BadInputError

    err = BadInputError("weights\nfile.bin", "cannot read it:\n  unexpected end of data\n\tat offset 12")
    assert str(err) == "weights\\nfile.bin: cannot read it: unexpected end of data at offset 12"
    assert "\n" not in str(BadInputError(None, "two\nlines"))


def test_good_input_still_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same entry point on a valid file exits 0: the cases above fail for their content, not the harness."""
    path = tmp_path / "ok.safetensors"
    path.write_bytes(_SAFE)
    status, out, err = _run(["inspect", str(path), "--format", "json"], capsys)
    assert status == 0, err
    assert json.loads(out)["parameters"] == 64


def test_subprocess_malicious_pickle(tmp_path: Path) -> None:
    path = _malicious(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ancestree", "inspect", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "refuses to unpickle" in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "PWNED").exists()


def test_subprocess_malicious_pickle_as_a_detector(tiny_zoo: Path, tmp_path: Path) -> None:
    """As a --detector file the payload is refused too, in one line: torch's protocol warning went to stderr
    before the error (three lines) and the reason was only "UnpicklingError"."""
    path = _malicious(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ancestree", "parent", str(tiny_zoo / "m0006"), "-c", str(tiny_zoo / "m0003"),
                           "--detector", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "refuses to unpickle" in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("command", ["fingerprint", "tree"])
def test_no_progress_bar_before_the_error_when_stderr_is_no_terminal(command: str, tiny_zoo: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`fingerprint` drew its progress bar into a log or pipe before the error line (tree did not)."""
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tiny_zoo / "m0016" / "model.safetensors").read_bytes()[:300])
    status, _, err = _run([command, str(tiny_zoo / "m0016"), str(cut), "--no-cache"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(cut) in err, err


def test_probex_train_on_a_truth_listing_missing_models_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A zoo whose truth.json names a model folder that is not there: exit 2 naming truth.json, no output."""
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "truth.json").write_text(json.dumps({"models": [{"id": "gone"}], "edges": []}))
    out = tmp_path / "experts"
    status, _, err = _run(["probex", "train", str(zoo), "-o", str(out)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "truth.json" in err and "gone" in err
    assert not out.exists()


@pytest.mark.parametrize("target", ["folder", "picture", "unwritable"])
def test_tree_output_that_cannot_be_written_is_one_line(target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "ok.safetensors"
    model.write_bytes(_SAFE)
    out = {"folder": tmp_path, "picture": tmp_path / "tree.png", "unwritable": Path("/proc/no-such-dir/tree.json")}[target]
    status, _, err = _run(["tree", str(model), "-o", str(out)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert str(out) in err and not (tmp_path / "tree.png").exists()


def test_eval_refuses_graphs_without_edges_or_shared_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_edges, a, b = tmp_path / "no_edges.json", tmp_path / "a.json", tmp_path / "b.json"
    no_edges.write_text(json.dumps({"models": []}))
    a.write_text(json.dumps({"models": [{"id": "x"}], "edges": []}))
    b.write_text(json.dumps({"models": [{"id": "y"}], "edges": []}))
    for pred, truth, words in ((a, no_edges, "'edges'"), (a, b, "shares no model id")):
        status, _, err = _run(["eval", str(pred), str(truth)], capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1 and words in err, err


def test_debug_shows_the_traceback_and_keeps_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(["--debug", "inspect", str(tmp_path / "missing.safetensors")], capsys)
    assert status == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("ancestree: error:")


def _foreign_sqlite(tmp: Path) -> Path:
    import sqlite3

    db = tmp / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER)")
    return db


def _nonempty_folder(tmp: Path) -> Path:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "important.txt").write_text("keep me")
    return tmp / "mine"


def _damaged_experts(tmp: Path) -> Path:
    (tmp / "experts").mkdir()
    (tmp / "experts" / "experts.json").write_text("{not json")
    return tmp / "experts"


def _truth_file(tmp: Path, data: object) -> Path:
    (tmp / "zoo").mkdir(exist_ok=True)
    (tmp / "zoo" / "truth.json").write_text(json.dumps(data) if not isinstance(data, str) else data)
    return tmp / "zoo"


def _damaged_zoo_record(tmp: Path) -> Path:
    """An unfinished zoo whose settings record was cut to nothing (a full disk): JSONDecodeError before."""
    (tmp / "zoo" / ".zoo").mkdir(parents=True)
    (tmp / "zoo" / ".zoo" / "settings.json").write_text("")
    return tmp / "zoo"


def _busy_port(tmp: Path) -> str:
    import socket

    from ancestree.index.store import IndexStore

    IndexStore(tmp / "i.db").close()  # a real (empty) index, so the port is what fails
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    _busy_port.keep = sock  # type: ignore[attr-defined]  # held open until the next case replaces it
    return str(sock.getsockname()[1])


def _nan_probe(tmp: Path) -> Path:
    np.save(tmp / "nan.npy", np.full((4, 3, 16, 16), np.nan, dtype=np.float32))
    return tmp / "nan.npy"


# (name, build(tmp) -> a value, argv(value, tmp) -> command line, words the message must contain, files that must not appear)
COMMAND_CASES = {
    "zoo make into someone's folder": (_nonempty_folder, lambda v, t: ["zoo", "make", str(v), "--preset", "micro"],
                                       "not empty", lambda v: sorted(p.name for p in v.iterdir()) == ["important.txt"]),
    "index add into another program's database": (_foreign_sqlite, lambda v, t: ["index", "add", str(t / "m.safetensors"), "--db", str(v)],
                                                  "something else", None),
    "index rebuild of a missing index": (lambda t: t / "typo.db", lambda v, t: ["index", "rebuild", "--db", str(v)],
                                         "no such index", lambda v: not v.exists()),
    "predict with a damaged experts folder": (_damaged_experts, lambda v, t: ["probex", "predict", str(t / "m.safetensors"), "--experts", str(v)],
                                              "damaged ProbeX experts folder", None),
    "lineage train on malformed truth": (lambda t: _truth_file(t, "{bad"), lambda v, t: ["lineage", "train", str(v), "-o", str(t / "d.pt")],
                                         "malformed truth.json", lambda v: not (v.parent / "d.pt").exists()),
    "lineage train on a zoo without lineage tasks": (lambda t: _truth_file(t, {"models": [], "edges": []}),
                                                     lambda v, t: ["lineage", "train", str(v), "-o", str(t / "d.pt")],
                                                     "no parent-detection tasks", lambda v: not (v.parent / "d.pt").exists()),
    "zoo make resuming a damaged record": (lambda t: _damaged_zoo_record(t), lambda v, t: ["zoo", "make", str(v), "--preset", "micro"],
                                           "damaged record of an unfinished zoo", lambda v: not (v / "truth.json").exists()),
    "lineage train on a truth without splits": (lambda t: _truth_file(t, {"models": [{"id": "m"}], "edges": []}),
                                                lambda v, t: (v / "m").mkdir() or ["lineage", "train", str(v), "-o", str(t / "d.pt")],
                                                "has no split", lambda v: not (v.parent / "d.pt").exists()),
    "tree --scan of a folder without models": (lambda t: (t / "empty").mkdir() or t / "empty", lambda v, t: ["tree", "--scan", str(v)],
                                               "no model found below this folder", None),
    "index add --scan of a folder without models": (lambda t: (t / "empty").mkdir() or t / "empty",
                                                    lambda v, t: ["index", "add", "--scan", str(v), "--db", str(t / "i.db"), "-q"],
                                                    "holds no weight files", None),
    "probex train on a zoo whose models list no classes": (lambda t: _truth_file(t, {"models": [{"id": "m", "split": "train"}], "edges": []}),
                                                           lambda v, t: (v / "m").mkdir() or ["probex", "train", str(v), "-o", str(t / "exp")],
                                                           "lists its classes", lambda v: not (v.parent / "exp").exists()),
    "eval of a self-loop": (lambda t: _truth_file(t, {"models": [{"id": "a"}], "edges": [{"parent": "a", "child": "a"}]}),
                            lambda v, t: ["eval", str(v / "truth.json"), str(v / "truth.json")], "its own parent", None),
    "eval of a cycle": (lambda t: _truth_file(t, {"models": [{"id": "a"}, {"id": "b"}], "edges": [
                            {"parent": "a", "child": "b"}, {"parent": "b", "child": "a"}]}),
                        lambda v, t: ["eval", str(v / "truth.json"), str(v / "truth.json")], "cycle", None),
    "eval of a model listed twice": (lambda t: _truth_file(t, {"models": [{"id": "a"}, {"id": "a"}], "edges": []}),
                                     lambda v, t: ["eval", str(v / "truth.json"), str(v / "truth.json")], "listed twice", None),
    "serve on a port in use": (_busy_port, lambda v, t: ["serve", "--db", str(t / "i.db"), "--port", v], "cannot listen", None),
    "parent with the child among its candidates": (lambda t: t / "m.safetensors", lambda v, t: ["parent", str(v), "-c", str(v)],
                                                   "its own candidates", None),
    "unknown text encoder": (lambda t: t / "exp", lambda v, t: ["probex", "train", str(t), "-o", str(v), "--text-encoder", "bogus"],
                             "unknown text encoder", lambda v: not v.exists()),
}


@pytest.mark.parametrize("case", list(COMMAND_CASES), ids=lambda c: c.replace(" ", "-"))
def test_commands_refuse_bad_input_in_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build, argv, words, untouched = COMMAND_CASES[case]
    (tmp_path / "m.safetensors").write_bytes(_SAFE)
    value = build(tmp_path)
    status, _, err = _run(argv(value, tmp_path), capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "internal error" not in err, err
    assert words is None or words in err, err
    assert untouched is None or untouched(value)


def test_probe_data_with_nan_is_refused(tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    probe = _nan_probe(tmp_path)
    status, _, err = _run(["parent", str(tiny_zoo / "m0006"), "-c", str(tiny_zoo / "m0003"), str(tiny_zoo / "m0016"),
                           "--probe-data", str(probe)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "NaN" in err, err


def _cut_npz(tmp: Path) -> Path:
    np.savez(tmp / "whole.npz", x=np.zeros((40, 3, 16, 16), np.float32))
    (tmp / "cut.npz").write_bytes((tmp / "whole.npz").read_bytes()[:300])
    return tmp / "cut.npz"


@pytest.mark.parametrize("probe", ["empty.npy", "empty.npz", "cut.npz"])
def test_probe_data_cut_short_is_named(probe: str, tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty .npy made numpy raise EOFError, which click turned into a silent exit 1; a truncated .npz
    an internal error (BadZipFile)."""
    path = _cut_npz(tmp_path) if probe == "cut.npz" else tmp_path / probe
    path.touch()
    status, _, err = _run(["parent", str(tiny_zoo / "m0006"), "-c", str(tiny_zoo / "m0003"), "--probe-data", str(path)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(path) in err and "probe data" in err, err


@pytest.mark.parametrize("content", ["text", "objects"])
def test_probe_data_that_would_need_unpickling_is_refused_without_advice_to_unpickle(content: str, tiny_zoo: Path, tmp_path: Path,
                                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A text file named .npy, or an object array, passed on numpy's message, which suggests loading the file
    with allow_pickle=True: the way to run an untrusted file's code."""
    path = tmp_path / "probe.npy"
    if content == "text":
        path.write_text("hello, not numpy\n")
    else:
        np.save(path, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    status, _, err = _run(["parent", str(tiny_zoo / "m0006"), "-c", str(tiny_zoo / "m0003"), "--probe-data", str(path)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(path) in err and "allow_pickle" not in err, err
    assert "not a numeric array" in err, err


def test_probe_data_of_huge_values_is_named_not_the_model(tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Inputs of 1e38 overflowed the outputs, and the message blamed the child's weights ("damaged?")."""
    path = tmp_path / "huge.npy"
    np.save(path, np.full((40, 3, 16, 16), 1e38, np.float32))
    status, _, err = _run(["parent", str(tiny_zoo / "m0006"), "-c", str(tiny_zoo / "m0003"), "--probe-data", str(path)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(path) in err and "values up to 1e+38" in err, err


def test_integer_images_as_probe_data_are_refused(tiny_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The zoo's images saved as 0-255 uint8 ran, scaled 255 times too large, and turned the true parent into
    "none of these" without a word."""
    path = tmp_path / "pixels.npy"
    np.save(path, np.zeros((40, 3, 16, 16), np.uint8))
    status, _, err = _run(["parent", str(tiny_zoo / "m0006"), "-c", str(tiny_zoo / "m0003"), "--probe-data", str(path)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and str(path) in err and "uint8" in err, err


def test_an_eof_the_commands_do_not_catch_is_still_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The last line of defence: click turns EOFError into a bare abort (exit 1, a blank line); say what it was."""
    import ancestree.cli.inspect as inspect_command

    def cut_short(*args, **kwargs):
        raise EOFError("No data left in file")

    monkeypatch.setattr(inspect_command, "load_model", cut_short)
    (tmp_path / "m.safetensors").write_bytes(_SAFE)
    status, _, err = _run(["inspect", str(tmp_path / "m.safetensors")], capsys)
    assert status == 1 and "EOFError" in err and len(err.strip().splitlines()) == 1, err


def test_foreign_or_empty_database_is_left_byte_for_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused before anything is written: not even the WAL journal mode, which SQLite stores in the file."""
    foreign, empty = _foreign_sqlite(tmp_path), tmp_path / "empty.db"
    empty.write_bytes(b"")
    before = foreign.read_bytes()
    (tmp_path / "m.safetensors").write_bytes(_SAFE)
    for argv in (["index", "add", str(tmp_path / "m.safetensors"), "--db", str(foreign)], ["index", "rebuild", "--db", str(empty)]):
        status, _, err = _run(argv, capsys)
        assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert foreign.read_bytes() == before and empty.read_bytes() == b""


def test_a_newline_in_a_file_name_keeps_the_message_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two\nlines.safetensors"
    path.write_bytes(_SAFE[:40])
    status, _, err = _run(["inspect", str(path)], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "two\\nlines.safetensors" in err, err


@pytest.mark.parametrize("command", ["fingerprint", "tree"])
def test_a_model_without_tensors_is_named(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A safetensors header of {} was fingerprinted as a model and drawn as a lone tree."""
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(struct.pack("<Q", 2) + b"{}")
    (tmp_path / "m.safetensors").write_bytes(_SAFE)
    status, _, err = _run([command, str(empty), str(tmp_path / "m.safetensors"), "--no-cache"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "holds no tensors" in err and str(empty) in err, err


@pytest.mark.parametrize(("tensors", "problem"), [
    ({"l0.weight": "int8", "l1.weight": "int8"}, "holds no floating-point weights: its 2 integer matrices ('l0.weight', int8) come without scales"),
    ({"l0.qweight": "int32", "l0.qzeros": "int32", "l0.scales": "float16", "l0.g_idx": "int32"},
     "holds GPTQ/AWQ-packed low-bit weights ('l0.qweight'), which ancestree does not unpack"),
    ({"l0.weight": "uint8", "l0.weight.absmax": "float32", "l0.weight.quant_map": "float32",
      "l0.weight.quant_state.bitsandbytes__nf4": "uint8"}, "holds bitsandbytes 4-bit (NF4) weights"),
    ({"l0.weight_packed": "int32", "l0.weight_scale": "float16", "l0.weight_shape": "int64"}, "compressed-tensors packed"),
    ({"l0.q_weight": "int32", "l0.q_scale": "int32", "l0.q_scale_max": "float16"}, "EXL2-packed"),
    ({"l0.codes": "int16", "l0.codebooks": "float16", "l0.scales": "float16"}, "AQLM codebook-quantized"),
])
@pytest.mark.parametrize("command", ["tree", "compare"])
def test_weights_this_reader_cannot_dequantize_are_named(command: str, tensors: dict[str, str], problem: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """int8 matrices without their scales, and packed 4-bit layouts (GPTQ, AWQ, bitsandbytes NF4): `tree` drew
    such a model as a lone tree without a word, fingerprinting its scales (or nothing) as its weights."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({n: (rng.standard_normal((16, 8)) * 50).astype(d) for n, d in tensors.items()}, str(tmp_path / "q.safetensors"))
    (tmp_path / "m.safetensors").write_bytes(_SAFE)
    status, _, err = _run([command, str(tmp_path / "m.safetensors"), str(tmp_path / "q.safetensors"), "--no-cache"], capsys)
    assert status == 2 and len(err.strip().splitlines()) == 1 and problem in err and str(tmp_path / "q.safetensors") in err, err


def test_float_tensors_named_like_packed_layouts_are_ordinary_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only integer tensors of those names are packed weights: a float `q_weight` or `W_q` is a weight."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {n: rng.standard_normal((16, 8)).astype(np.float32) for n in ("attn.q_weight", "attn.W_q", "vq.codes", "l0.qweight")}
    tensors["quantizer.codes"] = rng.integers(0, 8, (4, 16), dtype=np.int64)  # an integer buffer without AQLM's codebooks
    save_file(tensors, str(tmp_path / "f.safetensors"))
    (tmp_path / "m.safetensors").write_bytes(_SAFE)
    status, _, err = _run(["tree", str(tmp_path / "m.safetensors"), str(tmp_path / "f.safetensors"), "--no-cache", "-f", "json"], capsys)
    assert status == 0, err


def test_inspect_shows_a_gptq_model_and_warns_that_its_weights_are_not_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`inspect` counted a GPTQ model's float scales as its parameters without a word."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"l0.qweight": rng.integers(0, 2**30, (2, 16), dtype=np.int32), "l0.scales": rng.standard_normal((1, 16)).astype(np.float16)},
              str(tmp_path / "q.safetensors"))
    status, out, err = _run(["inspect", str(tmp_path / "q.safetensors"), "-f", "json"], capsys)
    assert status == 0 and json.loads(out)["parameters"] == 16
    assert len(err.strip().splitlines()) == 1 and "GPTQ/AWQ-packed" in err and "floating-point tensors only" in err, err


@pytest.mark.parametrize("argv, named", [
    (["inspect", ""], "argument 2"),                      # read the current folder
    (["fingerprint", "{m}", "--cache", ""], "--cache"),   # wrote the cache into the current folder
    (["tree", "{m}", "-o", ""], "-o"),                    # printed to stdout instead
    (["index", "ls", "--db="], "--db"),                   # named no file
])
def test_an_empty_argument_is_refused(argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m.safetensors").write_bytes(_SAFE)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    status, out, err = _run([a.replace("{m}", str(tmp_path / "m.safetensors")) for a in argv], capsys)
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1 and named in err and "empty" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
