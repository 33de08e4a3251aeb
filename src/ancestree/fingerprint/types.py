"""The data types of a fingerprint: what one streaming pass over a model keeps.

A :class:`Fingerprint` is small (tens of KB per tensor at most) and self-contained: every later step
(alignment, pair evidence, tree recovery, parent detection) works from fingerprints alone, without
reading weights again. These types are the stable interface of the package; add fields with defaults,
never change the meaning of an existing one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from ancestree.io.base import inspect_record

#: Bumped whenever what a fingerprint holds or how it is computed changes; caches key on it.
FINGERPRINT_VERSION = 4  # 2: BLAKE3 ``digest`` replaced the sha256 of version 1; 3: GGUF query/key rows in HF order,
# bitsandbytes ``module.SCB`` layers dequantized, ONNX broadcast tables left out (same files, other fingerprints)
# 4: the measured rounding ``step`` of GGUF block-quantized tensors

#: The oldest version whose fingerprints hold the same fields as this one's (version 3 changed how some
#: formats are read, not what is stored; version 4 added the optional ``step``): an index keeps using them until
#: it fingerprints their files again.
OLDEST_READABLE = 2

#: The ``content_key`` of a fingerprint with no learned tensor before such keys hashed the files (the hash of
#: nothing, still in older caches and indexes): it identifies no content, so it makes no copies.
NOTHING_KEY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

#: Global seed of the sketch index sets. Two fingerprints are comparable only with the same seed and sizes.
SKETCH_SEED = 20240917

#: Sketch side for matrices: at most this many rows and columns are kept.
SKETCH_MATRIX = 64

#: Sketch length for vectors (1-D tensors and scalars).
SKETCH_VECTOR = 256


@dataclass(frozen=True)
class SketchSpec:
    """How sketches are drawn; part of every fingerprint so incompatible ones are never compared."""

    seed: int = SKETCH_SEED
    matrix: int = SKETCH_MATRIX
    vector: int = SKETCH_VECTOR


#: Values below float16's smallest normal (2**-14) are left out when counting the mantissa bits in use:
#: a float16 copy stores them with fewer bits of their own, which says nothing of the copy's precision.
MANTISSA_FLOOR = 2.0 ** -14

#: Distinct normal values needed to count the mantissa bits in use: the last bit of 64 random mantissas is zero in
#: all of them once in 2**64 cases.
MANTISSA_SAMPLE = 64


@dataclass(eq=False)  # identity equality: the sketch is an array (compare ``digest`` for content)
class TensorPrint:
    """What a fingerprint keeps of one learned tensor.

    ``digest`` is the BLAKE3 hash of the canonical values. Hashes are of the canonical values (float32, little-endian, C order), so the same weights hash alike
    whether stored as safetensors, a PyTorch pickle, ONNX or float16 (upcasting is exact). ``layout_hash``
    is invariant to any reordering of the entries (a transposed ONNX matrix, reordered gates), at the price
    of also matching permuted copies, which are functionally the same model anyway.

    Moments are exact (float64 accumulation over every entry): ``kurtosis`` is Fisher's and equals
    ``scipy.stats.kurtosis(values.ravel())``; ``skewness`` equals ``scipy.stats.skew``; ``variance`` is the
    population variance.

    ``sketch`` is the sub-matrix ``W2[I_rows][:, I_cols]`` of the tensor viewed as 2-D
    ``(shape[0], prod(shape[1:]))``, where the index set of a dimension depends only on its length and the
    global seed (see :mod:`ancestree.fingerprint.sketch`). Vectors keep a 1-D sample.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    quantized: bool
    digest: str
    layout_hash: str
    mean: float
    variance: float
    skewness: float
    kurtosis: float
    norm: float
    absmax: float
    zeros: float
    sketch: np.ndarray = field(repr=False)
    #: RMS rounding step of a block-quantized tensor, measured from its values
    #: (:func:`~ancestree.fingerprint.stats.rounding_step`); None when unknown (then bounded by ``absmax``)
    step: float | None = None

    @cached_property  # read per pair and per layer in every comparison
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_finite(self) -> bool:
        """False when the tensor holds a NaN or an infinite value (its norm is then NaN or infinite)."""
        return math.isfinite(self.norm)

    @cached_property
    def is_buffer_like(self) -> bool:
        """True for a constant tensor, or one holding zeros and a single other value: an attention mask or a
        fill value a checkpoint carries (GPT-2's 0/1 ``attn.bias``, ``masked_bias = -1e4``, a triangular mask
        of float32's minimum), not a learned weight. Two unrelated models carry the same one, and its size
        (and values near float32's limits) would swamp every distance. Read from the exact moments: values
        ``{0, c}`` with a share ``z`` of zeros have mean ``(1 − z)·c`` and variance ``z·(1 − z)·c²``."""
        if not self.is_finite or self.numel < 2:  # a learned scalar is constant too
            return False
        if self.variance == 0:
            return True
        z, c = self.zeros, self.absmax
        return (0 < z < 1 and math.isclose(abs(self.mean), (1 - z) * c, rel_tol=1e-4)
                and math.isclose(self.variance, z * (1 - z) * c * c, rel_tol=1e-3))

    @property
    def is_matrix(self) -> bool:
        """True when the sketch is 2-D (the tensor has two or more dimensions)."""
        return len(self.shape) >= 2

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """The 2-D view ``(shape[0], prod(shape[1:]))`` the sketch is taken from; vectors are ``(n, 1)``."""
        if len(self.shape) >= 2:
            return int(self.shape[0]), math.prod(self.shape[1:])
        return self.numel, 1

    @property
    def std(self) -> float:
        return math.sqrt(self.variance) if self.variance == self.variance else float("nan")

    @cached_property
    def rms(self) -> float:
        """Root mean square of the entries."""
        return self.norm / math.sqrt(self.numel) if self.numel else 0.0

    @cached_property
    def mantissa_used(self) -> int | None:
        """How many mantissa bits its values use, read from the sketch (float32 holds every narrower float
        exactly): 7 for a float16 or float32 tensor holding bfloat16 values, its dtype's for weights stored at
        full precision. ``None`` when the sketch holds fewer than :data:`MANTISSA_SAMPLE` distinct normal
        values (LayerNorm gains of exactly 1 use no mantissa bit, and say nothing of how the model is stored)."""
        values = self.sketch.reshape(-1)
        values = values[np.isfinite(values) & (np.abs(values) >= MANTISSA_FLOOR)]
        if values.size < MANTISSA_SAMPLE or np.unique(values).size < MANTISSA_SAMPLE:
            return None
        used = int(np.bitwise_or.reduce(np.ascontiguousarray(values, dtype=np.float32).view(np.uint32) & 0x7FFFFF))
        return 23 - ((used & -used).bit_length() - 1) if used else 0

    def moments(self) -> np.ndarray:
        """Layout-invariant summary vector ``[mean, std, skewness, kurtosis, rms, absmax, zeros]``."""
        return np.array([self.mean, self.std, self.skewness, self.kurtosis, self.rms, self.absmax, self.zeros])


@dataclass
class Declared:
    """What a model says about itself (model card, PEFT config, ``config.json``, files); not evidence."""

    base_model: str | list[str] | None = None
    relation: str | None = None
    adapter: bool = False
    lora_ranks: list[int] = field(default_factory=list)
    model_type: str | None = None
    architectures: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "size", "mtime"}]

    @property
    def base_names(self) -> list[str]:
        """The declared base model(s) as a list of names (a card may give one name or a list)."""
        return base_names(self.base_model)

    @property
    def size(self) -> int:
        return sum(int(f.get("size", 0)) for f in self.files)

    @property
    def mtime(self) -> float:
        return max((float(f.get("mtime", 0.0)) for f in self.files), default=0.0)


def base_names(value: Any) -> list[str]:
    """A card's ``base_model`` value (one name, a list of names, or nothing) as a list of names."""
    return [str(n) for n in value] if isinstance(value, list) else [str(value)] if value else []


def both_buffers(a: TensorPrint, b: TensorPrint) -> bool:
    """A pair of masks or fill values (:attr:`TensorPrint.is_buffer_like` on both sides): unrelated models
    carry the same ones, so the pair is left out of every comparison."""
    return a.is_buffer_like and b.is_buffer_like


def comparable_pair(a: TensorPrint, b: TensorPrint) -> bool:
    """Whether a pair of tensors takes part in comparisons: finite on both sides, and not a pair of buffers."""
    return a.is_finite and b.is_finite and not both_buffers(a, b)


def resolve_name(name: str, ids: Sequence[str], near: str | None = None) -> str | None:
    """The id among ``ids`` a declared name refers to: the same id, else one that ends with the name or that
    the name ends with (``hub/org/base`` for ``org/base``), else one with the same last path component.

    ``near`` is the id of the model whose card declares the name (never its own base): among equal matches
    the one sharing the most leading folders with it wins (a card in ``runs/b/`` naming ``m4`` means
    ``runs/b/m4``, not ``runs/a/m4``, when both folders were scanned); after that, the first in ``ids``.
    A Hugging Face cache folder answers to its own name and to its repository's (:func:`hub_name`); among
    equal matches in equally near folders, the repository folder (its current revision) before its snapshots.
    """
    near = near.rstrip("/") if near else near
    if name in ids and name != near:
        return name
    clean = name.strip().rstrip("/")
    ranked = []
    for candidate in ids:
        raw = candidate.rstrip("/")
        if raw == near:
            continue
        level = max(_name_match(c, clean) for c in {raw, hub_name(raw)})
        if level:
            cache = CACHE_ID.search(raw)
            current = not (cache and cache[3])  # not an older snapshot of a cache repository
            ranked.append((level, _shared_folders(raw, near), current, candidate))
    if not ranked:
        return None
    ranked.sort(key=lambda r: r[:3], reverse=True)  # stable: equal matches keep the order of ids
    return ranked[0][3]


def _name_match(candidate: str, name: str) -> int:
    """2: one path ends with the other; 1: the same last component; 0: neither."""
    if candidate == name or candidate.endswith("/" + name) or name.endswith("/" + candidate):
        return 2
    return int(candidate.split("/")[-1] == name.split("/")[-1])


#: A Hugging Face cache folder at the end of an id: ``…/models--org--name`` or one of its ``snapshots/<hash>``.
CACHE_ID = re.compile(r"(^|/)models--([^/]+)(?:/snapshots/([^/]+))?/?$")


def hub_name(model_id: str) -> str:
    """``model_id`` with a Hugging Face cache folder written as the repository it holds: ``hub/models--org--name``
    (or one of its ``snapshots/<hash>``) is ``hub/org/name``, the name a card's ``base_model`` gives."""
    return CACHE_ID.sub(lambda m: m[1] + m[2].replace("--", "/"), model_id)


#: A weight file's name that says nothing of its model (``llama-base/model.safetensors``): the folder names it.
#: Only the exact names libraries write, and their shards: ``model-1000.safetensors`` names a checkpoint.
GENERIC_FILE = re.compile(r"/(?:model|pytorch_model|adapter_model|consolidated|diffusion_pytorch_model|tf_model|flax_model)"
                          r"(?:-\d{5}-of-\d{5}|\.\d{2})?\.(?:safetensors|bin|pt|pth|ckpt|gguf|onnx|npz|h5|msgpack)$")


def short_name(model_id: str, width: int) -> str:
    """A label of at most ``width`` characters for a model in a picture: a Hugging Face cache folder by its
    repository (``org/name``, a snapshot with ``@`` and the start of its hash kept), a weight file of a
    generic name by its folder, else the end of the id."""
    found = CACHE_ID.search(model_id)
    name, suffix = (found[2].replace("--", "/"), f"@{found[3][:6]}" if found[3] else "") if found else (model_id, "")
    name = GENERIC_FILE.sub("", name) or name
    if len(name) + len(suffix) <= width:
        return name + suffix
    room = width - len(suffix) - 1  # the end of the name after "…"
    if room < 1:
        suffix, room = "", width - 1
    return ("…" + name[-room:] if room > 0 else "…"[:width]) + suffix


def _shared_folders(candidate: str, near: str | None) -> int:
    """How many leading folders ``candidate``'s path shares with ``near``'s (0 without ``near``)."""
    if not near:
        return 0
    shared = 0
    for a, b in zip(candidate.split("/")[:-1], near.rstrip("/").split("/")[:-1]):
        if a != b:
            break
        shared += 1
    return shared


@dataclass(eq=False)  # identity equality: compare ``content_key`` for content
class Fingerprint:
    """A model reduced to what lineage needs: per-tensor hashes, moments and sketches, plus metadata.

    ``content_key`` is the same for the same learned values whatever the file names, format, tensor names,
    tensor order or matrix orientation: two models with equal keys are duplicates.
    """

    id: str
    format: str
    parameters: int
    dtypes: dict[str, int]
    declared: Declared
    tensors: list[TensorPrint]
    content_key: str
    spec: SketchSpec = field(default_factory=SketchSpec)
    version: int = FINGERPRINT_VERSION

    def __post_init__(self) -> None:
        self._by_name = {t.name: t for t in self.tensors}

    def __getitem__(self, name: str) -> TensorPrint:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self.tensors)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def finite(self) -> Fingerprint:
        """This fingerprint without the tensors that hold NaN or infinite values: what comparisons may use.

        A diverged or damaged checkpoint is still a model on disk (a hub holds some); its finite tensors can
        still relate it to others, and a model with none left is a tree of its own. ``self`` when all are finite.
        """
        kept = [t for t in self.tensors if t.is_finite]
        return self if len(kept) == len(self.tensors) else replace(self, tensors=kept)

    def same_content(self, other: Fingerprint) -> bool:
        """The same learned values (equal ``content_key``s that identify something)."""
        return self.content_key == other.content_key and self.content_key != NOTHING_KEY

    def nbytes(self) -> int:
        """Approximate memory of the sketches (the bulk of a fingerprint)."""
        return sum(t.sketch.nbytes for t in self.tensors)

    def summary(self) -> dict[str, Any]:
        """A short JSON-able record (what ``ancestree fingerprint`` prints)."""
        record = inspect_record(self.id, self.format, self.parameters, len(self.tensors), self.dtypes,
                                self.declared.base_model)
        return {**record, "content_key": self.content_key, "declared_relation": self.declared.relation}

    def __repr__(self) -> str:
        return f"Fingerprint({self.id!r}, {self.format}, {self.parameters:,} parameters, {len(self.tensors)} tensors)"
