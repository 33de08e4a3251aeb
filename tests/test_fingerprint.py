"""Fingerprints: exact moments, format-invariant hashes, sketches, serialisation and the cache."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from safetensors.numpy import save_file

from ancestree.fingerprint import (
    CACHE_ENV,
    FingerprintCache,
    SketchSpec,
    default_cache_dir,
    fingerprint,
    fingerprint_many,
    load_fingerprints,
    save_fingerprints,
    take_sketch,
)
from ancestree.fingerprint.stats import CHUNK, content_hashes, is_small, layout_hash, moments, small_summary
from ancestree.io.safetensors import SafetensorsModel
from tests.conftest import small_tensors, write_hf_folder


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).standard_normal(3 * CHUNK + 17).astype(np.float32),
        np.random.default_rng(1).standard_t(3, size=50_001),  # heavy tails, float64
        (1.0 + 1e-3 * np.random.default_rng(2).standard_normal(5000)).astype(np.float16),  # LayerNorm-like
        # first chunk atypical: the shift is far from the mean, forcing the second pass
        np.concatenate([np.full(CHUNK, 7.0), np.random.default_rng(3).standard_normal(4 * CHUNK)]).astype(np.float32),
    ],
)
def test_moments_match_scipy(values: np.ndarray) -> None:
    x = values.astype(np.float64)
    m = moments(values)
    assert m.kurtosis == pytest.approx(scipy.stats.kurtosis(x), abs=1e-9, rel=1e-9)
    assert m.skewness == pytest.approx(scipy.stats.skew(x), abs=1e-9, rel=1e-9)
    assert m.mean == pytest.approx(x.mean(), rel=1e-12, abs=1e-15)
    assert m.variance == pytest.approx(x.var(), rel=1e-10)
    assert m.norm == pytest.approx(np.linalg.norm(x), rel=1e-12)
    assert m.absmax == np.abs(x).max()


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(4).standard_t(3, size=CHUNK).astype(np.float32),
        (0.02 * np.random.default_rng(5).standard_normal(300) + 5.0).astype(np.float32),
        np.array([0.0, -0.0, 3.0, 0.0], np.float32),
        np.array([2.5], np.float32),
        np.ones(100, np.float32),
        np.array([1.0, np.nan, -4.0], np.float32),
        np.array([1.0, -np.inf, 2.0], np.float32),
    ],
)
def test_small_tensor_summary_equals_the_general_path(values: np.ndarray) -> None:
    """Small float32 tensors take one fused compiled call; it must give what the general path gives."""
    assert is_small(values)
    mom, layout = small_summary(values)
    general = moments(values)
    assert layout == layout_hash(values)
    for field in ("mean", "variance", "skewness", "kurtosis", "norm", "absmax", "zeros"):
        a, b = getattr(mom, field), getattr(general, field)
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12), field
    assert not is_small(np.zeros(CHUNK + 1, np.float32)) and not is_small(np.zeros(8, np.float64))


def test_constant_tensor_has_nan_shape_moments_like_scipy() -> None:
    m = moments(np.ones(100, np.float32))
    assert np.isnan(m.kurtosis) and np.isnan(m.skewness) and m.variance == 0.0


def test_zero_fraction_counts_exact_zeros() -> None:
    v = np.arange(-50, 50, dtype=np.float32)
    v[::4] = 0.0
    assert moments(v).zeros == pytest.approx(np.mean(v == 0))


def test_hash_is_of_canonical_float32_values() -> None:
    a = np.random.default_rng(0).standard_normal((40, 30)).astype(np.float16)
    sha16, lay16 = content_hashes(a.ravel())
    sha32, lay32 = content_hashes(a.astype(np.float32).ravel())
    assert (sha16, lay16) == (sha32, lay32)  # upcasting is exact, so the hash agrees
    sha_t, lay_t = content_hashes(np.ascontiguousarray(a.T).ravel())
    assert lay_t == lay16 and sha_t != sha16  # layout hash ignores orientation, the digest does not
    b = a.astype(np.float32).copy()
    b[3, 4] += 1e-3
    assert content_hashes(b.ravel())[1] != lay32


def test_digest_is_blake3_of_the_float32_bytes_chunked_or_not() -> None:
    from blake3 import blake3

    a = np.random.default_rng(1).standard_normal(3 * CHUNK + 17).astype(np.float16)  # chunked cast path
    expected = blake3(a.astype("<f4").tobytes()).hexdigest()
    assert content_hashes(a)[0] == expected
    assert content_hashes(a.astype(np.float32))[0] == expected  # straight-from-buffer path


def test_old_fingerprint_versions_are_refused(tmp_path) -> None:
    import json

    from ancestree.errors import BadInputError
    from ancestree.fingerprint.store import from_bytes, to_bytes

    fp = fingerprint(write_hf_folder(tmp_path / "m", small_tensors()))
    data = dict(np.load(io.BytesIO(to_bytes([fp]))))
    header = json.loads(data["header"].tobytes())
    header["models"][0]["version"] = 1
    data["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **data)
    with pytest.raises(BadInputError, match="fingerprint version 1"):
        from_bytes(buf.getvalue(), "old.npz")


def test_sketch_of_transpose_is_transpose_of_sketch() -> None:
    w = np.random.default_rng(0).standard_normal((300, 97)).astype(np.float32)
    spec = SketchSpec()
    s = take_sketch(w, spec)
    assert s.shape == (64, 64)
    np.testing.assert_array_equal(take_sketch(np.ascontiguousarray(w.T), spec), s.T)
    conv = np.random.default_rng(1).standard_normal((8, 4, 3, 3)).astype(np.float32)
    assert take_sketch(conv, spec).shape == (8, 36)
    assert take_sketch(np.arange(1000.0), spec).shape == (256,)


def test_fingerprint_folder_round_trips(tmp_path: Path, hf_model: Path) -> None:
    fp = fingerprint(hf_model)
    assert sorted(fp.names) == ["layer.0.bias", "layer.0.weight", "layer.1.weight"]
    assert "position_ids" not in fp  # integer buffers are not learned tensors
    assert fp.declared.base_model == "org/base" and fp.declared.model_type == "test"
    out = tmp_path / "fps.npz"
    other = fingerprint(write_hf_folder(tmp_path / "other", small_tensors(seed=5)))
    save_fingerprints([fp, other], out)
    back = load_fingerprints(out)
    assert [b.id for b in back] == [fp.id, other.id]
    for t in fp.tensors:
        u = back[0][t.name]
        assert (u.digest, u.kurtosis, u.norm, u.shape, u.dtype) == (t.digest, t.kurtosis, t.norm, t.shape, t.dtype)
        np.testing.assert_array_equal(u.sketch, t.sketch)
    assert back[0].content_key == fp.content_key != back[1].content_key
    assert back[0].declared == fp.declared


def test_cache_hit_reads_no_tensor_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = write_hf_folder(tmp_path / "m", small_tensors())
    reads: list[str] = []
    original = SafetensorsModel._read

    def counting(self: SafetensorsModel, name: str) -> np.ndarray:
        reads.append(name)
        return original(self, name)

    monkeypatch.setattr(SafetensorsModel, "_read", counting)
    cache = FingerprintCache(tmp_path / "cache")
    first = fingerprint(folder, cache)
    assert len(reads) == 3
    second = fingerprint(folder, cache)
    assert len(reads) == 3, "a cache hit must not read tensors"
    assert second.content_key == first.content_key and second.id == first.id
    np.testing.assert_array_equal(second["layer.0.weight"].sketch, first["layer.0.weight"].sketch)
    # a copy under another name is fingerprinted (new files) but stored once, keyed by content
    copy = write_hf_folder(tmp_path / "copy", small_tensors())
    again = fingerprint(copy, cache)
    assert again.id == str(copy) and again.content_key == first.content_key
    assert len(list((cache.root / "content").rglob("*.npz"))) == 1
    # touching the file invalidates the stat entry
    target = folder / "model.safetensors"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fingerprint(folder, cache)
    assert len(reads) == 9


def test_cache_keeps_each_files_tensor_names_for_duplicates_across_formats(tmp_path: Path) -> None:
    """Regression: an .npz duplicate with other tensor names (as an ONNX export has) shares the content key
    of the safetensors original; the cache once served the first one's names to the second."""
    tensors = small_tensors()
    folder = write_hf_folder(tmp_path / "m", tensors)
    renamed = tmp_path / "export.npz"
    np.savez(renamed, **{f"val_{i}": v for i, v in enumerate(tensors.values())})
    cache = FingerprintCache(tmp_path / "cache")
    export = fingerprint(renamed, cache)
    original = fingerprint(folder, cache)
    assert export.content_key == original.content_key  # duplicates by content
    fresh = fingerprint(folder)
    for cached_run in (original, fingerprint(folder, cache)):
        assert [(t.name, t.shape) for t in cached_run.tensors] == [(t.name, t.shape) for t in fresh.tensors]
    assert [t.name for t in fingerprint(renamed, cache).tensors] == [t.name for t in fingerprint(renamed).tensors]
    assert all(t.name.startswith("val_") for t in export.tensors)


def test_default_cache_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert FingerprintCache().directory == tmp_path / "c"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "ancestree"


def test_fingerprint_many_keeps_order_and_ids(tmp_path: Path) -> None:
    a = write_hf_folder(tmp_path / "a", small_tensors(1))
    b = tmp_path / "b.safetensors"
    save_file(small_tensors(2), str(b))
    fps = fingerprint_many([("first", a), b], progress=False)
    assert [f.id for f in fps] == ["first", str(b)]
    assert fps[1].format == "safetensors"


def test_resolve_name_prefers_the_declaring_models_folder_and_never_the_declarer() -> None:
    from ancestree.fingerprint.types import resolve_name

    ids = ["runs/a/m4", "runs/b/m4", "hub/org/base", "m9"]
    assert resolve_name("m9", ids) == "m9"
    assert resolve_name("org/base", ids) == "hub/org/base"  # the name's whole path ends the id
    assert resolve_name("m4", ids, near="runs/b/m7") == "runs/b/m4"
    assert resolve_name("m4", ids, near="runs/a/m7") == "runs/a/m4"
    assert resolve_name("m4", ids) == "runs/a/m4" == resolve_name("m4", ids, near="m7")  # no folder to go by: the first
    assert resolve_name("x/base", ["a/base", "b/x/base"]) == "b/x/base"  # a whole-path match beats a last part
    # a card in mine/bert-base declaring google/bert-base names hub's copy, not the declarer itself
    assert resolve_name("google/bert-base", ["hub/bert-base", "mine/bert-base"], near="mine/bert-base") == "hub/bert-base"
    assert resolve_name("m9", ids, near="m9") is None


def test_a_damaged_cache_entry_is_computed_again_and_rewritten(tmp_path: Path) -> None:
    """The cache is only a cache: an entry cut short (a full disk, a copy interrupted) is a miss, written anew;
    it made every command on that model stop with "internal error: BadZipFile" until the cache was deleted."""
    folder = write_hf_folder(tmp_path / "m", small_tensors())
    cache = FingerprintCache(tmp_path / "cache")
    first = fingerprint(folder, cache)
    (entry,) = (cache.root / "content").rglob("*.npz")
    whole = entry.read_bytes()
    for damaged in (whole[:100], b""):
        entry.write_bytes(damaged)
        again = fingerprint(folder, cache)
        assert again.content_key == first.content_key and entry.read_bytes() == whole


def test_a_model_without_tensors_is_refused_even_from_the_cache(tmp_path: Path) -> None:
    """An older version fingerprinted such models and cached them: a hit must not bring one back."""
    import struct

    from ancestree.errors import BadInputError
    from ancestree.fingerprint.types import Declared, Fingerprint
    from ancestree.io import load_model

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(struct.pack("<Q", 2) + b"{}")
    cache = FingerprintCache(tmp_path / "cache")
    with load_model(empty) as model:
        cache.put(model, Fingerprint(str(empty), "safetensors", 0, {}, Declared(), [], "0" * 64))
        assert cache.get(model) is not None  # stored as an older version would have
    with pytest.raises(BadInputError, match="holds no tensors"):
        fingerprint(empty, cache)
