"""The safetensors reader, HF folders, sharding, the loader, and the header parser under fuzzing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from ancestree import BadInputError, load_model, scan_models
from ancestree.io.safetensors import parse_header
from conftest import small_tensors, write_hf_folder


def test_reads_back_every_tensor(hf_model: Path) -> None:
    expected = small_tensors()
    with load_model(hf_model) as model:
        assert model.format == "safetensors"
        assert set(model.tensors) == set(expected)
        for name, values in expected.items():
            np.testing.assert_array_equal(model.read(name), values)
        assert model.parameters == 16 * 8 + 16 + 4 * 16  # integer buffers are not parameters
        assert model.meta.declared_base_model == "org/base"
        assert model.meta.config == {"model_type": "test"}


def test_reads_are_memory_mapped(hf_model: Path) -> None:
    with load_model(hf_model / "model.safetensors") as model:
        values = model.read("layer.0.weight")
        assert not values.flags.owndata  # a view into the file map, not a copy


def test_bfloat16_is_converted_to_float32(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file as save_torch

    t = torch.randn(3, 5).to(torch.bfloat16)
    save_torch({"w": t}, str(tmp_path / "m.safetensors"))
    with load_model(tmp_path / "m.safetensors") as model:
        assert model.tensors["w"].dtype == "bfloat16"
        np.testing.assert_array_equal(model.read("w"), t.float().numpy())


def test_sharded_folder_is_one_model(tmp_path: Path) -> None:
    tensors = small_tensors(1)
    folder = tmp_path / "sharded"
    folder.mkdir()
    names = list(tensors)
    save_file({n: tensors[n] for n in names[:2]}, str(folder / "model-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[2:]}, str(folder / "model-00002-of-00002.safetensors"))
    weight_map = {n: f"model-0000{1 if i < 2 else 2}-of-00002.safetensors" for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "config.json").write_text("{}")
    with load_model(folder) as model:
        assert set(model.tensors) == set(names)
        assert len(model.meta.files) == 2
        np.testing.assert_array_equal(model.read(names[3]), tensors[names[3]])


def test_scan_finds_model_folders_and_loose_files(tmp_path: Path) -> None:
    write_hf_folder(tmp_path / "a", small_tensors(0))
    write_hf_folder(tmp_path / "nested" / "b", small_tensors(1))
    save_file(small_tensors(2), str(tmp_path / "loose.safetensors"))
    (tmp_path / "notes.txt").write_text("not a model")
    found = [model_id for model_id, _ in scan_models(tmp_path)]
    assert found == ["a", "loose.safetensors", "nested/b"]


def _file_with_header(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "empty file"),
        (b"\x01\x02", "too short"),
        (struct.pack("<Q", 1000) + b"{}", "truncated"),
        (struct.pack("<Q", 10**12) + b"{}", "more than"),
        (struct.pack("<Q", 5) + b"{nope", "not valid JSON"),
        (struct.pack("<Q", 2) + b"\xff\xfe", "not valid JSON"),
        (_file_with_header([1, 2]), "not a JSON object"),
        (_file_with_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}), "truncated"),
        (_file_with_header({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8), "needs 12 bytes"),
        (_file_with_header({"w": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8), "unknown dtype"),
        (_file_with_header({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8), "invalid shape"),
        (_file_with_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8), "out of order"),
        (_file_with_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": "x"}}, b"\0" * 8), "invalid data_offsets"),
        (_file_with_header({"w": 3}), "not an object"),
        (
            _file_with_header(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "overlap",
        ),
    ],
)
def test_bad_headers_are_named(tmp_path: Path, blob: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(blob)
    with pytest.raises(BadInputError) as info:
        load_model(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_truncated_real_file_is_reported(hf_model: Path) -> None:
    path = hf_model / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20])
    with pytest.raises(BadInputError, match="truncated"):
        load_model(path)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512), st.integers(min_value=0, max_value=4096))
def test_fuzzed_headers_never_crash(blob: bytes, extra: int) -> None:
    """Arbitrary bytes either parse into consistent entries or raise BadInputError: nothing else."""
    try:
        entries, _, start = parse_header(blob, len(blob) + extra)
    except BadInputError:
        return
    for entry in entries.values():
        assert 0 <= entry.begin <= entry.end <= len(blob) + extra - start


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.fixed_dictionaries(
            {
                "dtype": st.sampled_from(["F32", "F16", "I8", "BF16", "??"]),
                "shape": st.lists(st.integers(min_value=-1, max_value=4), max_size=3),
                "data_offsets": st.lists(st.integers(min_value=-4, max_value=64), min_size=0, max_size=3),
            }
        ),
        max_size=4,
    ),
    st.integers(min_value=0, max_value=64),
)
def test_fuzzed_structured_headers(header: dict, data_len: int) -> None:
    blob = _file_with_header(header, b"\0" * data_len)
    try:
        entries, _, _ = parse_header(blob, len(blob))
    except BadInputError:
        return
    for entry in entries.values():
        assert entry.end - entry.begin == entry.info.numel * {"F32": 4, "F16": 2, "I8": 1, "BF16": 2}[header[entry.info.name]["dtype"]]


def _rss_file_mb() -> float:
    """This process's resident pages that are mapped from files (Linux), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


def test_large_tensors_read_one_by_one_leave_no_pages_mapped(tmp_path: Path) -> None:
    """Streaming a model read every tensor through one map of the whole file, so every page read stayed
    resident until the model was closed: fingerprinting a 2 GB file showed 2.2 GB of RSS. A large tensor
    now has a map of its own, gone with its values."""
    rng = np.random.default_rng(0)
    save_file({f"layer.{i}.weight": rng.standard_normal((2048, 2048)).astype(np.float32) for i in range(6)},
              str(tmp_path / "model.safetensors"))  # 6 × 16 MB
    with load_model(tmp_path / "model.safetensors") as model:
        before = _rss_file_mb()
        total = 0.0
        for _, values in model.iter_tensors():
            total += float(values.sum())
            del values
        grown = _rss_file_mb() - before
    assert np.isfinite(total)
    assert grown < 40, f"{grown:.0f} MB of the 96 MB file still mapped"
