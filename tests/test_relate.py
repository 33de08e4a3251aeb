"""Pair evidence and verdicts on generated model pairs with known relations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from ancestree.errors import IncomparableError
from ancestree.fingerprint import Fingerprint, fingerprint
from ancestree.relate import relate, verdict


def make_parent(seed: int = 0) -> dict[str, np.ndarray]:
    """A small transformer-ish block stack: square and rectangular matrices, biases, LayerNorm gains."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for i in range(3):
        for proj, shape in (("query", (128, 128)), ("value", (128, 128)), ("up", (256, 128)), ("down", (128, 256))):
            tensors[f"layers.{i}.{proj}.weight"] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
            tensors[f"layers.{i}.{proj}.bias"] = (rng.standard_normal(shape[0]) * 0.01).astype(np.float32)
        tensors[f"layers.{i}.norm.weight"] = (1 + 0.05 * rng.standard_normal(128)).astype(np.float32)
    return tensors


def fp_of(tmp_path: Path, name: str, tensors: dict[str, np.ndarray]) -> Fingerprint:
    path = tmp_path / f"{name}.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return fingerprint(path, model_id=name)


@pytest.fixture
def parent(tmp_path: Path) -> Fingerprint:
    return fp_of(tmp_path, "parent", make_parent())


def test_sketch_distance_tracks_true_rms_distance(tmp_path: Path) -> None:
    """Stated bound (README): i.i.d. differences within 5%, row-heteroscedastic (10x) within 25%."""
    worst = {"iid": 0.0, "rows": 0.0}
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        w = (rng.standard_normal((384, 512)) * 0.05).astype(np.float32)
        fa = fp_of(tmp_path, f"w{seed}", {"w": w})
        for scale in (1e-4, 1e-3, 1e-2, 1e-1):
            for kind in worst:
                noise = rng.standard_normal(w.shape)
                if kind == "rows":
                    noise *= np.exp(rng.uniform(0, np.log(10), (w.shape[0], 1)))
                child = (w + scale * 0.05 * noise).astype(np.float32)
                true = float(np.sqrt(np.mean((child.astype(np.float64) - w) ** 2)))
                est = relate(fa, fp_of(tmp_path, "c", {"w": child})).layers[0].distance
                worst[kind] = max(worst[kind], abs(est / true - 1))
    assert worst["iid"] < 0.05, worst
    assert worst["rows"] < 0.25, worst


def test_identical_copy_is_same_weights(tmp_path: Path, parent: Fingerprint) -> None:
    ev = relate(parent, fp_of(tmp_path, "copy", {f"bert.{k}": v for k, v in make_parent().items()}))
    assert ev.identical_fraction == 1.0 and ev.distance == 0.0
    assert verdict(ev).kind == "duplicate"


def test_same_names_other_shapes_on_half_the_tensors_is_no_copy(tmp_path: Path, parent: Fingerprint) -> None:
    """Identical on the tensors that pair up, reshaped on the others (another architecture with the same
    names): `compare` said "same weights" from the paired half alone."""
    grown = {k: (v if "layers.0" in k or "norm" in k else np.zeros([s + 2 for s in v.shape], np.float32))
             for k, v in make_parent().items()}
    v = verdict(relate(parent, fp_of(tmp_path, "grown", grown)))
    assert v.kind != "duplicate" and "not a copy" in v.reason, v


def test_a_copy_that_lists_a_tied_weight_once_is_still_the_same_weights(tmp_path: Path, parent: Fingerprint) -> None:
    """A .bin lists a tied lm_head beside the embedding it shares; safetensors keeps one: the same weights."""
    embedding = (np.random.default_rng(5).standard_normal((2000, 128)) * 0.02).astype(np.float32)
    once = {**make_parent(), "embed.weight": embedding}
    twice = {**once, "head.weight": embedding}  # 256k of ~600k parameters listed a second time
    ev = relate(fp_of(tmp_path, "twice", twice), fp_of(tmp_path, "once", once))
    assert ev.unpaired_a == ["head.weight"] and verdict(ev).kind == "duplicate", verdict(ev)


def test_duplicate_across_formats_has_equal_hashes(tmp_path: Path, parent: Fingerprint) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save({k: torch.from_numpy(v) for k, v in make_parent().items()}, path)
    other = fingerprint(path)
    assert other.content_key == parent.content_key
    assert {t.digest for t in other.tensors} == {t.digest for t in parent.tensors}
    assert verdict(relate(parent, other)).kind == "duplicate"


def test_fp16_copy_is_quantized(tmp_path: Path, parent: Fingerprint) -> None:
    half = fp_of(tmp_path, "half", {k: v.astype(np.float16) for k, v in make_parent().items()})
    ev = relate(parent, half)
    assert ev.precision_b == 12 and ev.quant_ratio is not None and ev.quant_ratio < 1.5
    assert verdict(ev).kind == "quantized"
    # a fine-tune stored in fp16 is not a mere copy: its difference dwarfs the rounding step
    rng = np.random.default_rng(9)
    tuned = {k: (v + 0.005 * rng.standard_normal(v.shape)).astype(np.float16) for k, v in make_parent().items()}
    assert verdict(relate(parent, fp_of(tmp_path, "tuned16", tuned))).kind == "finetune"


def test_int8_copy_is_quantized(tmp_path: Path, parent: Fingerprint) -> None:
    q: dict[str, np.ndarray] = {}
    for k, v in make_parent().items():
        scale = np.abs(v).max(axis=-1, keepdims=True) / 127 if v.ndim == 2 else None
        if scale is None:
            q[k] = v
            continue
        q[f"{k}_q"] = np.round(v / scale).astype(np.int8)
        q[f"{k}_scale"] = scale[:, 0].astype(np.float32)
    quant = fp_of(tmp_path, "int8", q)
    assert any(t.quantized for t in quant.tensors)
    ev = relate(parent, quant)
    assert ev.identical_fraction < 1 and ev.quant_ratio is not None and ev.quant_ratio < QUANT_OK
    assert verdict(ev).kind == "quantized"


QUANT_OK = 3.0


def test_pruned_copy_is_pruned(tmp_path: Path, parent: Fingerprint) -> None:
    pruned = {}
    for k, v in make_parent().items():
        pruned[k] = np.where(np.abs(v) < np.quantile(np.abs(v), 0.4), 0, v).astype(np.float32) if v.ndim == 2 else v
    ev = relate(parent, fp_of(tmp_path, "pruned", pruned))
    assert ev.zeros_delta > 0.3 and ev.nonzero_rel_distance == 0.0
    assert verdict(ev).kind == "pruned"


def test_lora_difference_rank_is_recovered(tmp_path: Path, parent: Fingerprint) -> None:
    rng = np.random.default_rng(3)
    merged = make_parent()
    for rank, name in ((4, "layers.0.query.weight"), (8, "layers.1.value.weight"), (16, "layers.2.up.weight")):
        w = merged[name]
        b, a = rng.standard_normal((w.shape[0], rank)), rng.standard_normal((rank, w.shape[1]))
        merged[name] = (w + 0.002 * b @ a).astype(np.float32)
    ev = relate(parent, fp_of(tmp_path, "lora", merged))
    ranks = {l.a: l.diff_rank for l in ev.layers if l.diff_rank}
    assert ranks == {"layers.0.query.weight": 4, "layers.1.value.weight": 8, "layers.2.up.weight": 16}
    assert verdict(ev).kind == "adapter"


@pytest.mark.parametrize(("rank", "kind"), [(24, "adapter"), (31, "adapter"), (40, "finetune")])
def test_wide_lora_reads_as_adapter_up_to_half_the_side(tmp_path: Path, rank: int, kind: str) -> None:
    """A rank-r update of 64-wide matrices: a LoRA up to r = 32 (where it stops saving parameters)."""
    rng = np.random.default_rng(rank)
    base = {f"m{i}": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32) for i in range(4)}
    merged = {k: (w + 0.002 * rng.standard_normal((64, rank)) @ rng.standard_normal((rank, 64))).astype(np.float32)
              for k, w in base.items()}
    ev = relate(fp_of(tmp_path, "base", base), fp_of(tmp_path, f"r{rank}", merged))
    assert ev.max_rank == rank
    assert verdict(ev).kind == kind


def test_full_finetune_is_full_rank_relative(tmp_path: Path, parent: Fingerprint) -> None:
    rng = np.random.default_rng(4)
    tuned = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in make_parent().items()}
    ev = relate(parent, fp_of(tmp_path, "tuned", tuned))
    assert ev.correlation > 0.9 and 0.1 < ev.rel_distance < 0.4
    assert ev.low_rank_matrices == 0 and ev.max_rank >= 60
    assert verdict(ev).kind == "finetune"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_independent_seeds_are_unrelated(tmp_path: Path, parent: Fingerprint, seed: int) -> None:
    ev = relate(parent, fp_of(tmp_path, f"indep{seed}", make_parent(seed)))
    assert abs(ev.correlation) < 0.1
    assert ev.rel_distance == pytest.approx(np.sqrt(2), abs=0.1)
    assert verdict(ev).kind == "unrelated"


def test_small_unrelated_models_correlated_by_chance_stay_unrelated(tmp_path: Path) -> None:
    """Between independent 16×16 matrices the correlation deviates by 1/16 by chance: among 100 such models
    the most correlated pair passes the plain 0.2 line, and is still not a relative; a real fine-tune of one
    of them (correlation ~0.9) is."""
    rng = np.random.default_rng(0)
    ws = rng.standard_normal((100, 16, 16)).astype(np.float32)
    flat = ws.reshape(100, -1) - ws.reshape(100, -1).mean(1, keepdims=True)
    flat /= np.linalg.norm(flat, axis=1, keepdims=True)
    corr = flat @ flat.T - 2 * np.eye(100)
    i, j = np.unravel_index(np.argmax(corr), corr.shape)
    a, b = fp_of(tmp_path, "a", {"w": ws[i]}), fp_of(tmp_path, "b", {"w": ws[j]})
    ev = relate(a, b)
    assert ev.correlation > 0.2 and ev.chance_correlation == pytest.approx(1 / 16)
    assert verdict(ev).kind == "unrelated"
    child = fp_of(tmp_path, "child", {"w": ws[i] + 0.5 * rng.standard_normal((16, 16)).astype(np.float32)})
    assert verdict(relate(a, child)).kind == "finetune"


def test_mismatched_architectures_raise(tmp_path: Path, parent: Fingerprint) -> None:
    other = fp_of(tmp_path, "other", {"conv.weight": np.ones((3, 5, 7), np.float32)})
    with pytest.raises(IncomparableError):
        relate(parent, other)


def test_evidence_serialises_without_nan(tmp_path: Path, parent: Fingerprint) -> None:
    import json

    ev = relate(parent, fp_of(tmp_path, "const", {**make_parent(), "layers.0.norm.weight": np.ones(128, np.float32)}))
    text = json.dumps(ev.to_dict(), allow_nan=False)
    assert "layers.0.norm.weight" in text


def test_a_damaged_tensor_is_left_out_by_name(tmp_path: Path, parent: Fingerprint) -> None:
    """A copy with one NaN entry: the other tensors still say "same weights", and the evidence (and the
    verdict's reason) name the tensor left out instead of dropping it silently."""
    tensors = make_parent()
    tensors["layers.1.up.weight"][3, 5] = np.nan
    ev = relate(parent, fp_of(tmp_path, "damaged", tensors))
    assert ev.non_finite == ["layers.1.up.weight"] and "layers.1.up.weight" not in [l.a for l in ev.layers]
    v = verdict(ev)
    assert v.kind == "duplicate" and "1 tensor(s) holding NaN or infinite values left out" in v.reason
    assert relate(parent, fp_of(tmp_path, "copy", make_parent())).non_finite == []


def test_masks_and_fill_values_are_buffers_not_evidence(tmp_path: Path) -> None:
    """GPT-2 checkpoints carry a 0/1 causal mask per layer (``attn.bias``) and ``masked_bias = -1e4``; others
    a triangular mask of float32's minimum. Two unrelated models carrying the same ones looked like
    fine-tuned relatives (the masks swamped the distances); they are left out, by name, on both sides."""
    causal = np.tril(np.ones((256, 256), np.float32))[None, None]
    extra = {**{f"layers.{i}.attn.bias": causal for i in range(3)}, "layers.0.attn.masked_bias": np.float32([-1e4]),
             "layers.1.attn.mask": np.triu(np.full((64, 64), np.finfo(np.float32).min, np.float32), 1)}
    a = fp_of(tmp_path, "a", {**make_parent(0), **extra})
    b = fp_of(tmp_path, "b", {**make_parent(1), **extra})
    ev = relate(a, b)
    # a one-element fill value is no buffer (a learned scalar is constant too); vectors take no part in distances
    assert verdict(ev).kind == "unrelated" and sorted(ev.buffers) == sorted(n for n in extra if "masked_bias" not in n)
    rng = np.random.default_rng(5)  # a fine-tune keeps its parent's masks: still a fine-tune
    tuned = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in make_parent(0).items()}
    assert verdict(relate(a, fp_of(tmp_path, "ft", {**tuned, **extra}))).kind == "finetune"
    assert not any(t.is_buffer_like for t in a.tensors if t.name not in extra)
    # masks are no parameters to cover: a copy with one gain nudged is still a duplicate, for the tree too
    from ancestree.graph.relations import is_duplicate

    nudged = {**make_parent(0), **extra}
    nudged["layers.0.norm.weight"] = nudged["layers.0.norm.weight"] + np.float32(1e-3)
    near = fp_of(tmp_path, "near", nudged)
    assert verdict(relate(a, near)).kind == "duplicate" and is_duplicate(a, near)
    # models sharing nothing but masks: named as such
    only = fp_of(tmp_path, "only", {"layers.0.attn.bias": causal[0, 0], "other.weight": np.ones((3, 7), np.float32)})
    with pytest.raises(IncomparableError, match="shares only masks or constant tensors"):
        relate(fp_of(tmp_path, "mask", {"layers.0.attn.bias": causal[0, 0]}), only)


@pytest.mark.parametrize("layout", ["tensor", "blocks", "blocks_inv"])
def test_fp8_copies_with_scales_are_quantized_copies(tmp_path: Path, layout: str) -> None:
    """FP8 checkpoints store float8 weights with a scale: per tensor (``weight_scale``), or one per 32×32 or
    128×128 block, as ``weight_scale`` or DeepSeek-V3's ``weight_scale_inv`` (multiplied in all the same).
    Blocked scales were not applied (relative distance ~2600) and the precision of a scaled float8 read as
    unknown (64 bits), so such a copy was a "fine-tuned relative"."""
    from safetensors.torch import save_file as save_torch

    from ancestree.io import load_model

    g = torch.Generator().manual_seed(0)
    base = {f"layers.{i}.weight": torch.randn(64, 64, generator=g) * 0.05 for i in range(4)}
    save_torch(base, str(tmp_path / "base.safetensors"))
    fp8 = {}
    for name, w in base.items():
        if layout == "tensor":
            scale = w.abs().max() / 448
            spread = scale
        else:
            scale = w.abs().reshape(2, 32, 2, 32).amax((1, 3)) / 448
            spread = scale.repeat_interleave(32, 0).repeat_interleave(32, 1)
        fp8[name] = (w / spread).to(torch.float8_e4m3fn)
        fp8[name + ("_scale_inv" if layout == "blocks_inv" else "_scale")] = scale
    save_torch(fp8, str(tmp_path / "fp8.safetensors"))
    with load_model(tmp_path / "fp8.safetensors") as m:
        assert sorted(m.tensors) == sorted(base) and all(m.tensors[n].quantized for n in base)
        err = max(float(np.abs(m.read(n) - base[n].numpy()).max() / base[n].abs().max()) for n in base)
    assert err < 0.07  # float8 e4m3 keeps 3 mantissa bits: a relative step of 1/8 at most, half of it in error
    ev = relate(fingerprint(tmp_path / "base.safetensors"), fingerprint(tmp_path / "fp8.safetensors"))
    assert verdict(ev).kind == "quantized" and ev.precision_b == 5  # 3 mantissa bits + FLOAT_EXTRA_BITS


def test_distance_matrix_agrees_with_pairwise_evidence(tmp_path: Path, parent: Fingerprint) -> None:
    from ancestree.relate import rms_distance_matrix

    rng = np.random.default_rng(11)
    fps = [parent]
    for i, scale in enumerate((0.001, 0.01, 0.05)):
        fps.append(fp_of(tmp_path, f"c{i}", {k: (v + scale * rng.standard_normal(v.shape)).astype(np.float32) for k, v in make_parent().items()}))
    fps.append(fp_of(tmp_path, "u", make_parent(seed=8)))
    d = rms_distance_matrix(fps)
    assert np.allclose(d, d.T) and np.all(np.diag(d) == 0)
    for i in range(len(fps)):
        for j in range(i + 1, len(fps)):
            assert d[i, j] == pytest.approx(relate(fps[i], fps[j], ranks=False).distance, rel=1e-6)
    assert d[0, 1] < d[0, 2] < d[0, 3] < d[0, 4]


def test_fine_tunes_stored_in_bfloat16_are_no_low_rank_adapters(tiny_zoo: Path, tmp_path: Path) -> None:
    """Most released models are bfloat16. A full fine-tune so stored has most of its difference's singular
    values below the rounding-noise bound, and the few above it read as a merged LoRA: `compare` said
    "low-rank adapter" for the tiny zoo's fine-tunes cast to bfloat16 (and a 1 % full-rank change of
    512-wide matrices), `tree` labelled them `adapter`. What the rank leaves must now be noise-like, and the
    merged LoRAs stay adapters."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    truth = json.loads((tiny_zoo / "truth.json").read_text())
    kind = {m["id"]: (m.get("recipe") or {}).get("kind") for m in truth["models"]}

    def bf16(model: str) -> Fingerprint | None:
        files = sorted((tiny_zoo / model).glob("*.safetensors"))
        tensors = {k: v for f in files for k, v in load_file(f).items()}
        if not tensors or any(v.dtype != torch.float32 for v in tensors.values()):
            return None  # adapters' own folders, copies stored otherwise
        path = tmp_path / f"{model}.safetensors"
        save_torch({k: v.bfloat16() for k, v in tensors.items()}, str(path))
        return fingerprint(path, model_id=model)

    seen, right = {"finetune": 0, "adapter": 0}, {"finetune": 0, "adapter": 0}
    for edge in truth["edges"]:
        relation = edge["relation"]
        if relation not in seen or (relation == "adapter" and kind[edge["child"]] != "lora-merged"):
            continue
        parent, child = bf16(edge["parent"]), bf16(edge["child"])
        if parent is None or child is None:
            continue
        said = verdict(relate(parent, child)).kind
        right[relation] += (said == "adapter") == (relation == "adapter")
        seen[relation] += 1
    # 7 of its 12 fine-tunes were right before; one whose update is a few directions above a noise-level tail
    # is a low-rank update plus rounding, as far as bfloat16 lets anyone see
    assert seen == {"finetune": 12, "adapter": 2} and right["adapter"] == 2 and right["finetune"] >= 10, (seen, right)
    rng = np.random.default_rng(0)
    base = {f"l{i}.weight": torch.from_numpy((rng.standard_normal((512, 512)) * 0.05).astype(np.float32)) for i in range(4)}
    for scale in (0.01, 0.02):  # a full-rank change a few rounding steps large
        moved = {k: v + scale * v.std() * torch.from_numpy(rng.standard_normal(v.shape).astype(np.float32)) for k, v in base.items()}
        prints = []
        for name, tensors in (("base", base), (f"moved{scale}", moved)):
            save_torch({k: v.bfloat16() for k, v in tensors.items()}, str(tmp_path / f"{name}.safetensors"))
            prints.append(fingerprint(tmp_path / f"{name}.safetensors", model_id=name))
        assert verdict(relate(*prints)).kind == "finetune", scale


def test_a_negated_copy_is_called_anti_correlated_not_uncorrelated(tmp_path: Path, parent: Fingerprint) -> None:
    """Every weight's sign flipped: `compare` said "uncorrelated (median r = -1.00)", which contradicts itself."""
    negated = fp_of(tmp_path, "negated", {k: -v for k, v in make_parent().items()})
    said = verdict(relate(parent, negated))
    assert said.kind == "unrelated" and "anti-correlated (median r = -1.00: one may be the other negated)" in said.reason


def test_an_int8_copy_of_a_bfloat16_model_is_its_child(tiny_zoo: Path, tmp_path: Path) -> None:
    """bfloat16 keeps 7 mantissa bits, int8 8 bits: compared by those numbers the int8 copy of a bfloat16 model
    was the finer one, so the model was called the quantized copy of its own int8 file (and `tree` hung it
    below it). A float's rounding error is a quarter of its last place: bfloat16 is finer than int8."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    from ancestree.graph import GraphRecovery
    from ancestree.zoo.recipes import quantize_int8

    truth = json.loads((tiny_zoo / "truth.json").read_text())
    model = next(m["id"] for m in truth["models"] if (m.get("recipe") or {}).get("kind") == "pretrain")
    tensors = {k: v for f in sorted((tiny_zoo / model).glob("*.safetensors")) for k, v in load_file(f).items()}
    released = {k: v.bfloat16() for k, v in tensors.items()}
    save_torch(released, str(tmp_path / "bf16.safetensors"))
    save_torch(quantize_int8({k: v.float() for k, v in released.items()}), str(tmp_path / "int8.safetensors"))
    bf16, int8 = (fingerprint(tmp_path / f"{n}.safetensors", model_id=n) for n in ("bf16", "int8"))
    said = verdict(relate(bf16, int8))
    assert said.kind == "quantized" and said.reason.startswith("model b is stored coarser"), said
    edges = GraphRecovery().fit([int8, bf16]).graph_.to_dict()["edges"]
    assert [(e["parent"], e["child"], e["relation"]) for e in edges] == [("bf16", "int8", "quantized")]


def test_a_partly_quantized_copy_of_a_bfloat16_model_is_its_child(tiny_zoo: Path, tmp_path: Path) -> None:
    """A GGUF or int8 file quantizes only some matrices and keeps the others float32: by the mean of its
    matrices' bits it was finer than its bfloat16 source, and `tree` made it the parent. Its coarsest matrix
    decides now."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    from ancestree.graph import GraphRecovery
    from ancestree.zoo.recipes import quantize_int8

    truth = json.loads((tiny_zoo / "truth.json").read_text())
    model = next(m["id"] for m in truth["models"] if (m.get("recipe") or {}).get("kind") == "pretrain")
    tensors = {k: v for f in sorted((tiny_zoo / model).glob("*.safetensors")) for k, v in load_file(f).items()}
    released = {k: v.bfloat16() for k, v in tensors.items()}
    save_torch(released, str(tmp_path / "bf16.safetensors"))
    mixed = quantize_int8({k: v.float() for k, v in released.items()})
    kept = sorted(k for k in mixed if f"{k}_scale" in mixed)[: len([k for k in mixed if k.endswith("_scale")]) * 2 // 3]
    for name in kept:  # two thirds of the matrices back in float32, as a converter keeps small ones
        del mixed[f"{name}_scale"]
        mixed[name] = released[name].float()
    save_torch(mixed, str(tmp_path / "mixed.safetensors"))
    prints = [fingerprint(tmp_path / f"{n}.safetensors", model_id=n) for n in ("mixed", "bf16")]
    edges = GraphRecovery().fit(prints).graph_.to_dict()["edges"]
    # and the relation: its float32 matrices hold bfloat16 values, whose bits are counted now (they were 23,
    # and the pair evidence called the copy a fine-tune)
    assert [(e["parent"], e["child"], e["relation"]) for e in edges] == [("bf16", "mixed", "quantized")]
    assert verdict(relate(prints[1], prints[0])).kind == "quantized"


def test_a_float16_conversion_of_a_bfloat16_model_is_its_copy(tiny_zoo: Path, tmp_path: Path) -> None:
    """Converted to float16, a bfloat16 model's values keep bfloat16's 7 mantissa bits (float16 loses only its
    smallest values, to subnormals). Read by its dtype the float16 file was the finer, and the model was called
    the quantized copy of its own conversion (in ``wild`` released in bfloat16, `tree` hung three trees'
    roots below their float16 copies). Bits are counted in the values now, and a dtype wider than its
    values marks the converted file; the model's fine-tune hangs below the model, not below its copy."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    from ancestree.graph import GraphRecovery
    from ancestree.relate import precision_bits

    truth = json.loads((tiny_zoo / "truth.json").read_text())
    kinds = {m["id"]: (m.get("recipe") or {}).get("kind") for m in truth["models"]}
    root = next(i for i, k in kinds.items() if k == "pretrain")
    child = next(e["child"] for e in truth["edges"] if e["parent"] == root and kinds[e["child"]] == "finetune")
    g = torch.Generator().manual_seed(0)

    def released(model: str) -> dict[str, torch.Tensor]:
        tensors = {k: v for f in sorted((tiny_zoo / model).glob("*.safetensors")) for k, v in load_file(f).items()}
        # a trained model's tail of near-zero weights (float16 stores those with fewer bits)
        return {k: torch.where(torch.rand(v.shape, generator=g) < 0.02, v * 1e-4, v).bfloat16() for k, v in tensors.items()}

    base = released(root)
    save_torch(base, str(tmp_path / "base.safetensors"))
    save_torch({k: v.half() for k, v in base.items()}, str(tmp_path / "base-fp16.safetensors"))
    save_torch(released(child), str(tmp_path / "tuned.safetensors"))
    bf16, fp16, tuned = (fingerprint(tmp_path / f"{n}.safetensors", model_id=n) for n in ("base", "base-fp16", "tuned"))
    matrices = [(a, b) for a, b in zip(bf16.tensors, fp16.tensors) if a.is_matrix]
    assert all(precision_bits(b) < precision_bits(a) == 9 for a, b in matrices)
    for pair, coarse in (((bf16, fp16), "b"), ((fp16, bf16), "a")):
        said = verdict(relate(*pair))
        assert said.kind == "quantized" and said.reason.startswith(f"model {coarse} is stored coarser"), said
    for order in ([fp16, tuned, bf16], [bf16, fp16, tuned]):
        edges = GraphRecovery().fit(order).graph_.to_dict()["edges"]
        assert sorted((e["parent"], e["child"], e["relation"]) for e in edges) == [
            ("base", "base-fp16", "quantized"), ("base", "tuned", "finetune")]
    # without the original (a hub holding its float16 and float32 exports): float32 holds the values exactly,
    # float16 lost the smallest; both counted half a bit coarser, they were "fine-tunes" of each other
    save_torch({k: v.float() for k, v in base.items()}, str(tmp_path / "base-fp32.safetensors"))
    fp32 = fingerprint(tmp_path / "base-fp32.safetensors", model_id="base-fp32")
    assert verdict(relate(fp32, fp16)).reason.startswith("model b is stored coarser")
    edges = GraphRecovery().fit([fp16, fp32]).graph_.to_dict()["edges"]
    assert [(e["parent"], e["child"], e["relation"]) for e in edges] == [("base-fp32", "base-fp16", "quantized")]
    assert all(precision_bits(t) == 9 for t in fp32.tensors if t.is_matrix)
    # float32 weights keep their 23 bits; a 32-entry bias or a constant says nothing (too few distinct values)
    original = fingerprint(tiny_zoo / root).tensors
    assert {t.mantissa_used for t in original if t.is_matrix} == {23}
    assert {t.mantissa_used for t in original if t.numel < 64} == {None}
    assert replace(original[0], sketch=np.ones(256, dtype=np.float32)).mantissa_used is None


def test_a_gguf_copy_of_a_bfloat16_model_hangs_below_it_not_below_its_int8_sibling(tiny_zoo: Path, tmp_path: Path) -> None:
    """A Q4 GGUF keeps the matrices it cannot block in float (here holding bfloat16 values, finer than an int8
    sibling's); on those the int8 file's rounding bound is loose, and the GGUF read 0.77 steps from the int8
    copy and 1.07 from its source (``wild`` released in bfloat16). The copy test now counts the matrices the
    copy stores coarser only."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    from ancestree.graph import GraphRecovery
    from ancestree.zoo.recipes import quantize_int8
    from ancestree.zoo.save import write_gguf

    truth = json.loads((tiny_zoo / "truth.json").read_text())
    model = next(m for m in truth["models"]  # a CNN: its convolutions' rows are multiples of 32, its head not
                 if (m.get("recipe") or {}).get("kind") == "finetune" and m["architecture"] == "ancestree-cnn")
    tensors = {k: v for f in sorted((tiny_zoo / model["id"]).glob("*.safetensors")) for k, v in load_file(f).items()}
    released = {k: v.bfloat16() for k, v in tensors.items()}
    upcast = {k: v.float() for k, v in released.items()}
    for name in ("base", "int8", "q4"):
        (tmp_path / name).mkdir()
    save_torch(released, str(tmp_path / "base" / "model.safetensors"))
    save_torch(quantize_int8(upcast), str(tmp_path / "int8" / "model.safetensors"))
    write_gguf(tmp_path / "q4", upcast, model["architecture"], "q4")
    prints = [fingerprint(tmp_path / n, model_id=n) for n in ("q4", "int8", "base")]
    edges = GraphRecovery().fit(prints).graph_.to_dict()["edges"]
    assert sorted((e["parent"], e["child"], e["relation"]) for e in edges) == [
        ("base", "int8", "quantized"), ("base", "q4", "quantized")]


def test_a_lora_merged_into_a_few_matrices_is_no_rounded_copy_of_a_float16_base(tiny_zoo: Path, tmp_path: Path) -> None:
    """A LoRA merged into a few matrices leaves the others as they were: against the base's float16 copy those
    differ by float16's rounding, and the median over matrices called the merge the copy's "quantized" copy
    (a hub holding a Llama's float16 copy and its merged LoRA drew the merge as the root above both). Every
    changed matrix must be within the rounding now."""
    import json

    from safetensors.torch import load_file
    from safetensors.torch import save_file as save_torch

    truth = json.loads((tiny_zoo / "truth.json").read_text())
    model = next(m["id"] for m in truth["models"]  # a ViT: many matrices, a LoRA on two of them
                 if (m.get("recipe") or {}).get("kind") == "pretrain" and m["architecture"] == "ancestree-vit")
    tensors = {k: v for f in sorted((tiny_zoo / model).glob("*.safetensors")) for k, v in load_file(f).items()}
    g = torch.Generator().manual_seed(0)
    merged = dict(tensors)
    matrices = [k for k, v in tensors.items() if v.ndim == 2 and min(v.shape) >= 16]
    for name in matrices[:2]:  # a rank-2 update of a tenth of the weights' size
        w = tensors[name]
        a, b = torch.randn(w.shape[0], 2, generator=g), torch.randn(2, w.shape[1], generator=g)
        merged[name] = w + 0.1 * w.norm() * (a @ b) / (a @ b).norm()
    assert len(matrices) >= 4
    save_torch({k: v.half() for k, v in tensors.items()}, str(tmp_path / "base-fp16.safetensors"))
    save_torch({k: v.contiguous() for k, v in merged.items()}, str(tmp_path / "merged.safetensors"))
    fp16, lora = (fingerprint(tmp_path / f"{n}.safetensors", model_id=n) for n in ("base-fp16", "merged"))
    for pair in ((fp16, lora), (lora, fp16)):
        said = verdict(relate(*pair))
        assert said.kind == "adapter", said
