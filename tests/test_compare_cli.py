"""``ancestree compare`` and ``ancestree fingerprint`` through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from ancestree.cli.main import run
from ancestree.fingerprint import load_fingerprints
from tests.conftest import write_hf_folder


def weights(seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "enc.weight": (rng.standard_normal((96, 64)) * 0.05 + shift).astype(np.float32),
        "enc.bias": (rng.standard_normal(96) * 0.01).astype(np.float32),
        "dec.weight": (rng.standard_normal((64, 96)) * 0.05).astype(np.float32),
    }


def call(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ANCESTREE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_compare_json_fine_tuned_relative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_hf_folder(tmp_path / "a", weights(0))
    child = {k: v + np.float32(0.005) * np.random.default_rng(1).standard_normal(v.shape).astype(np.float32) for k, v in weights(0).items()}
    b = write_hf_folder(tmp_path / "b", child)
    code, out, _ = call(["compare", str(a), str(b), "--format", "json"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["verdict"]["kind"] == "finetune" and record["verdict"]["reason"]
    layers = record["evidence"]["layers"]
    assert {l["a"] for l in layers} == set(weights(0))
    assert all({"rel_distance", "correlation", "diff_rank", "identical", "shape"} <= set(l) for l in layers)


def test_compare_text_shows_verdict_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.safetensors"
    save_file(weights(0), str(a))
    b = tmp_path / "b.safetensors"
    save_file({k: v.astype(np.float16) for k, v in weights(0).items()}, str(b))
    code, out, _ = call(["compare", str(a), str(b)], capsys)
    assert code == 0
    assert "quantized" in out and "enc.weight" in out and "rel. distance" in out


def test_compare_mismatched_architectures_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.safetensors"
    save_file(weights(0), str(a))
    b = tmp_path / "b.safetensors"
    save_file({"conv.weight": np.ones((8, 3, 3, 3), np.float32)}, str(b))
    code, out, err = call(["compare", str(a), str(b)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "different architectures" in err and "Traceback" not in err


def test_fingerprint_scan_saves_file_and_uses_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str], private_cache: Path) -> None:
    zoo = tmp_path / "zoo"
    write_hf_folder(zoo / "m1", weights(0))
    write_hf_folder(zoo / "nested" / "m2", weights(1))
    out_file = tmp_path / "fps.npz"
    code, out, _ = call(["fingerprint", "--scan", str(zoo), "-o", str(out_file), "--format", "json"], capsys)
    assert code == 0
    ids = [r["id"] for r in json.loads(out)]
    assert ids == ["m1", "nested/m2"]
    assert [fp.id for fp in load_fingerprints(out_file)] == ids
    assert any(private_cache.rglob("*.npz"))
    code, out, _ = call(["fingerprint", str(zoo / "m1"), "--no-cache", "--format", "json"], capsys)
    assert code == 0 and json.loads(out)[0]["id"] == str(zoo / "m1")


def test_fingerprint_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = call(["fingerprint", str(tmp_path / "missing.safetensors")], capsys)
    assert code == 2 and "missing.safetensors" in err


def test_python_dash_m_compare(tmp_path: Path) -> None:
    a = tmp_path / "a.safetensors"
    save_file(weights(0), str(a))
    proc = subprocess.run(
        [sys.executable, "-m", "ancestree", "compare", str(a), str(a), "--no-cache", "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verdict"]["kind"] == "duplicate"


def test_compare_an_adapter_folder_with_models(tiny_zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PEFT adapter folder holds weight differences: compared with its own base's weights it came out
    "unrelated" (relative distance 6). It is an adapter declared for that base, of unknown relation to
    another model it fits, and unrelated to a model it does not fit."""
    truth = json.loads((tiny_zoo / "truth.json").read_text())
    adapters = {e["child"]: e["parent"] for e in truth["edges"] if e["relation"] == "adapter"
                and (tiny_zoo / e["child"] / "adapter_config.json").is_file()}
    child, base = sorted(adapters.items())[0]
    arch = {m["id"]: m.get("architecture") for m in truth["models"]}
    same = next(m for m in sorted(arch) if arch[m] == arch[base] and m not in (base, child) and m not in adapters)
    other = next(m for m in sorted(arch) if arch[m] not in (arch[base], None) and m not in adapters)

    def kind(a: str, b: str) -> str:
        with pytest.raises(SystemExit) as exc:
            run(["compare", str(tiny_zoo / a), str(tiny_zoo / b), "--format", "json"])
        assert exc.value.code == 0
        return json.loads(capsys.readouterr().out)["verdict"]["kind"]

    assert kind(child, base) == "adapter" and kind(base, child) == "adapter"
    assert kind(child, same) == "unknown" and kind(child, other) == "unrelated"


def test_parent_of_an_adapter_folder_is_the_base_it_declares(tiny_zoo: Path) -> None:
    """Ranked on its weight differences against weights, an adapter's own base got "none of these" at 0.9999.
    The base it declares, and fits, is its parent; without it, a model it only fits is no more likely than
    none; a model it does not fit is incomparable."""
    from ancestree.lineage import rank_parents

    truth = json.loads((tiny_zoo / "truth.json").read_text())
    adapters = {e["child"]: e["parent"] for e in truth["edges"] if e["relation"] == "adapter"
                and (tiny_zoo / e["child"] / "adapter_config.json").is_file()}
    child, base = sorted(adapters.items())[0]
    arch = {m["id"]: m.get("architecture") for m in truth["models"]}
    same = [m for m in sorted(arch) if arch[m] == arch[base] and m not in (base, child) and m not in adapters][:2]
    other = next(m for m in sorted(arch) if arch[m] not in (arch[base], None) and m not in adapters)
    path = lambda m: str(tiny_zoo / m)  # noqa: E731
    result = rank_parents(path(child), [path(m) for m in (*same, base, other)])
    assert result.parent == path(base) and result.ranking[0].probability > 0.9
    assert "does not apply" in result.incomparable[path(other)]
    assert rank_parents(path(child), [path(m) for m in same]).parent is None


# -- pairs with nothing to measure: a verdict line, never "nan" ---------------------------------------------
def _constant(value: float) -> dict[str, np.ndarray]:
    return {k: np.full(v.shape, value, np.float32) for k, v in weights(0).items()}


@pytest.mark.parametrize("value", [0.0, 0.5])
@pytest.mark.parametrize("constant_first", [True, False])
def test_compare_with_a_constant_model_says_there_is_no_evidence(value: float, constant_first: bool, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A model of zeros (or one fill value) against a trained one: every distance would only measure the trained
    side, so the verdict says there is no evidence rather than "pruned" or "median r = nan"."""
    save_file(_constant(value), str(tmp_path / "const.safetensors"))
    save_file(weights(1), str(tmp_path / "trained.safetensors"))
    pair = [str(tmp_path / "const.safetensors"), str(tmp_path / "trained.safetensors")]
    pair = pair if constant_first else pair[::-1]
    code, out, _ = call(["compare", *pair], capsys)
    assert code == 0 and "nan" not in out.lower()
    assert out.splitlines()[0].startswith("relation unknown: no evidence to compare")
    code, out, _ = call(["compare", *pair, "--format", "json"], capsys)
    record = json.loads(out)
    assert record["verdict"]["kind"] == "unknown" and record["evidence"]["varying_layers"] == 0


def test_a_pair_without_evidence_does_not_share_weights(tmp_path: Path) -> None:
    from ancestree.fingerprint import fingerprint
    from ancestree.relate import shares_weights

    save_file(_constant(0.0), str(tmp_path / "zeros.safetensors"))
    save_file(weights(1), str(tmp_path / "trained.safetensors"))
    a, b = fingerprint(tmp_path / "zeros.safetensors"), fingerprint(tmp_path / "trained.safetensors")
    assert not shares_weights(a, b) and not shares_weights(b, a)


def test_compare_of_tensors_too_small_to_correlate_prints_no_nan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        save_file({"w": rng.standard_normal((4, 4)).astype(np.float32)}, str(tmp_path / f"{name}.safetensors"))
    code, out, _ = call(["compare", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")], capsys)
    assert code == 0 and "nan" not in out.lower() and "too small to correlate" in out


def test_a_tensor_of_another_shape_is_named_as_such_and_long_lines_are_not_wrapped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A resized vocabulary's embedding was listed as "only in a" and "only in b"; and into a pipe rich wrapped
    lines at 80 columns and cut table cells, splitting or shortening model ids that must be read back."""
    name = "a-model-with-a-long-name-" + "x" * 90
    save_file(weights(0), str(tmp_path / f"{name}.safetensors"))
    grown = weights(0, 0.001)
    grown["enc.weight"] = np.vstack([grown["enc.weight"], np.zeros((4, 64), np.float32)])
    save_file(grown, str(tmp_path / "grown.safetensors"))
    code, out, _ = call(["compare", str(tmp_path / f"{name}.safetensors"), str(tmp_path / "grown.safetensors")], capsys)
    assert code == 0 and "other shapes: enc.weight (96×64 vs 100×64)" in out and "only in" not in out, out
    assert "1 tensor(s) of other shapes on the two sides" in out and "one side only" not in out, out
    assert any(line.count("x" * 90) for line in out.splitlines())  # the id whole in the table's title, on one line
    save_file(weights(0, 0.002), str(tmp_path / "fine.safetensors"))
    code, out, _ = call(["tree", str(tmp_path / f"{name}.safetensors"), str(tmp_path / "fine.safetensors"), "-f", "text"], capsys)
    lines = [line for line in out.splitlines() if "fine.safetensors" in line or name in line]
    assert code == 0 and len(lines) == 2 and all("params]" in line for line in lines), out
