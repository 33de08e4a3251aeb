"""The hot loop: exact moments and content hashes of one tensor in one pass over its entries.

The per-entry work is compiled with numba (``nogil``): one fused loop computes the four power sums in
float64 and counts zeros, another the layout hash, each at memory speed (~10 GB per CPU-second), where
numpy needed a temporary and a pass per quantity. A small float32 tensor (most tensors of a small model)
gets both from one third loop (:func:`small_summary`), since its cost is the calls, not the bytes. Non-float32 tensors are cast chunk by chunk, so a tensor
of any size is summarised in the memory of the tensor itself (memory-mapped by the reader) plus a few MB. Hashing and moments are separate
functions so the caller can run them on two threads (``blake3`` and numpy release the GIL).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from blake3 import blake3

#: Elements per chunk when a tensor must be cast to float32 first (128 KB casts stay in the L2 cache).
CHUNK = 1 << 15

#: The canonical dtype of hashed values: float32 little-endian.
CANONICAL = np.dtype("<f4")

_MASK64 = (1 << 64) - 1


def flat_view(values: np.ndarray) -> np.ndarray:
    """The entries as a contiguous 1-D array (a view when the reader gave a contiguous array)."""
    return np.ascontiguousarray(values).reshape(-1)


def _chunks(flat: np.ndarray):
    for start in range(0, flat.shape[0], CHUNK):
        yield flat[start : start + CHUNK]


def _canonical(chunk: np.ndarray) -> np.ndarray:
    return chunk if chunk.dtype == CANONICAL else chunk.astype(CANONICAL)


def _canonical_chunks(flat: np.ndarray):
    """The whole array when it is canonical already (no copy), else float32 casts of cache-sized chunks."""
    if flat.dtype == CANONICAL:
        yield flat
    else:
        for chunk in _chunks(flat):
            yield _canonical(chunk)


def content_digest(flat: np.ndarray) -> str:
    """BLAKE3 of the canonical float32 little-endian values, in order (hex, 256 bits).

    BLAKE3 rather than sha256: equally collision-resistant for telling duplicates apart, and ~3.5x less CPU
    per byte (SIMD), which is what kept the one-pass fingerprint slower than a plain read of the file.
    Canonical tensors are hashed straight from the (memory-mapped) buffer; others chunk by chunk.
    """
    digest = blake3()
    if flat.dtype == CANONICAL:
        digest.update(flat.view(np.uint8))  # type: ignore[arg-type]  # numpy's stubs: a buffer only from Python 3.12
    else:
        for chunk in _chunks(flat):
            digest.update(_canonical(chunk).view(np.uint8))  # type: ignore[arg-type]  # as above
    return digest.hexdigest()


def layout_hash(flat: np.ndarray) -> str:
    """A multiset hash of the canonical values: the same for any reordering of the entries.

    The count, the exact sum of the value bits, and the sum of a nonlinear mix of them (mod 2**64), so a
    transposed matrix, a permuted conv layout or reordered LSTM gates hash alike, while changed values
    do not cancel out the way they could in a plain sum.
    """
    plain = mixed = 0
    for chunk in _canonical_chunks(flat):
        p, m = _kernels()[1](chunk.view(np.uint32))
        plain, mixed = (plain + int(p)) & _MASK64, (mixed + int(m)) & _MASK64
    return f"{flat.shape[0]:x}-{plain:016x}{mixed:016x}"


def _layout_sums(bits: np.ndarray) -> tuple[np.uint64, np.uint64]:  # pragma: no cover - compiled
    plain = np.uint64(0)
    mixed = np.uint64(0)
    low = np.uint64(0xFFFFFFFF)
    for i in range(bits.shape[0]):
        u = np.uint64(bits[i])
        x = ((u >> np.uint64(15)) ^ u) & low  # xor-shift, then square mod 2**32
        plain += u
        mixed += (x * x) & low
    return plain, mixed


def content_hashes(flat: np.ndarray) -> tuple[str, str]:
    """``(digest, layout_hash)`` of a flat tensor (see :func:`content_digest` and :func:`layout_hash`)."""
    return content_digest(flat), layout_hash(flat)


@dataclass(frozen=True)
class Moments:
    """Exact summary statistics of a tensor's entries (population moments, as scipy's defaults)."""

    mean: float
    variance: float
    skewness: float
    kurtosis: float
    norm: float
    absmax: float
    zeros: float


def _power_sums(flat: np.ndarray, shift: float) -> tuple[float, float, float, float, float, int]:
    """Sums of ``d, d², d³, d⁴`` with ``d = x - shift`` in float64, plus abs max and count of zeros."""
    s1 = s2 = s3 = s4 = 0.0
    zeros = 0
    # float32/float64 go to the kernel as they are; other types are cast to float64 chunk by chunk (exact)
    chunks = [flat] if flat.dtype in (np.float32, np.float64) else (c.astype(np.float64) for c in _chunks(flat))
    for chunk in chunks:
        a, b, c, d, z = _kernels()[0](chunk, shift)
        s1, s2, s3, s4, zeros = s1 + a, s2 + b, s3 + c, s4 + d, zeros + int(z)
    absmax = max(float(flat.max()), -float(flat.min()))
    return s1, s2, s3, s4, absmax, zeros


def _shifted_power_sums(x: np.ndarray, shift: float) -> tuple[float, float, float, float, int | np.integer]:  # pragma: no cover
    s1 = s2 = s3 = s4 = 0.0
    zeros: int | np.integer = 0
    for i in range(x.shape[0]):
        v = x[i]
        d = np.float64(v) - shift
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
        zeros += np.int64(v == 0)
    return s1, s2, s3, s4, zeros


#: GGUF block types whose blocks lie on a uniform grid: ``(entries a block, levels)``. A block holds
#: ``d·q + m`` for integers ``q`` of ``levels`` values, so its span over ``levels − 1`` is its step ``d``
#: (a little under when it does not reach both end levels: Q4_0's largest entry sits at −8, the other end at
#: 7 or short of it). Only types whose copies were measured are listed (``gguf`` makes these; the K-quants
#: and importance-matrix types it cannot make keep the bound from the tensor's largest entry).
BLOCK_GRIDS = {"q4_0": (32, 16), "q4_1": (32, 16), "q5_0": (32, 32), "q5_1": (32, 32), "q8_0": (32, 256)}


def rounding_step(flat: np.ndarray, dtype: str) -> float | None:
    """The RMS over blocks of the rounding step of a block-quantized tensor (dequantized values, C order),
    measured from its values (see :data:`BLOCK_GRIDS`); None for other dtypes or damaged values."""
    grid = BLOCK_GRIDS.get(dtype)
    if grid is None or flat.size == 0 or flat.size % grid[0]:
        return None
    block, levels = grid
    blocks = flat.reshape(-1, block)
    with np.errstate(invalid="ignore", over="ignore"):
        span = (blocks.max(axis=1).astype(np.float64) - blocks.min(axis=1)) / (levels - 1)
        step = float(np.sqrt(np.mean(span * span)))
    return step if math.isfinite(step) and step > 0 else None


def moments(flat: np.ndarray) -> Moments:
    """Exact moments of a flat tensor; ``kurtosis`` equals ``scipy.stats.kurtosis`` (Fisher, biased).

    Power sums are taken about a shift near the mean (the mean of the first chunk), which avoids the
    cancellation of raw power sums; if the shift turns out far from the true mean (a tensor whose first
    entries are atypical) a second pass about the exact mean is made.
    """
    n = flat.shape[0]
    if n == 0:
        nan = float("nan")
        return Moments(nan, nan, nan, nan, 0.0, 0.0, 0.0)
    shift = float(np.mean(flat[:CHUNK], dtype=np.float64))
    s1, s2, s3, s4, absmax, zeros = _power_sums(flat, shift)
    delta = s1 / n
    m2 = s2 / n - delta * delta
    if m2 > 0 and abs(delta) > 0.1 * math.sqrt(m2):
        shift += delta
        s1, s2, s3, s4, absmax, zeros = _power_sums(flat, shift)
    return _from_sums(n, shift, s1, s2, s3, s4, absmax, zeros)


def _from_sums(n: int, shift: float, s1: float, s2: float, s3: float, s4: float, absmax: float, zeros: int) -> Moments:
    """:class:`Moments` from the power sums of ``x − shift``."""
    a1, a2, a3, a4 = s1 / n, s2 / n, s3 / n, s4 / n
    m2 = a2 - a1 * a1
    m3 = a3 - 3 * a1 * a2 + 2 * a1**3
    m4 = a4 - 4 * a1 * a3 + 6 * a1 * a1 * a2 - 3 * a1**4
    mean = shift + a1
    sum_sq = s2 + 2 * shift * s1 + n * shift * shift  # sum of x², from the shifted sums
    # scipy returns NaN for (numerically) constant data; so do we, with scipy's own test.
    if m2 <= (1e-15 * mean) ** 2 or m2 <= 0:
        skew = kurt = float("nan")
    else:
        skew = m3 / m2**1.5
        kurt = m4 / (m2 * m2) - 3.0
    return Moments(mean, max(m2, 0.0), skew, kurt, math.sqrt(max(sum_sq, 0.0)), absmax, zeros / n)


def _small_sums(x: np.ndarray, bits: np.ndarray):  # pragma: no cover - compiled
    """Everything :func:`moments` and :func:`layout_hash` need of a float32 tensor, in one call: its mean
    (the shift), the shifted power sums, zeros, min, max, whether a NaN occurs, and the layout sums."""
    n = x.shape[0]
    total = 0.0
    for i in range(n):
        total += np.float64(x[i])
    shift = total / n
    s1 = s2 = s3 = s4 = 0.0
    zeros: int | np.integer = 0
    lo, hi, nan = np.float64(x[0]), np.float64(x[0]), False
    plain = np.uint64(0)
    mixed = np.uint64(0)
    low = np.uint64(0xFFFFFFFF)
    for i in range(n):
        v = np.float64(x[i])
        d = v - shift
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
        zeros += np.int64(v == 0)
        lo = min(lo, v)
        hi = max(hi, v)
        nan |= v != v
        u = np.uint64(bits[i])
        h = ((u >> np.uint64(15)) ^ u) & low
        plain += u
        mixed += (h * h) & low
    return shift, s1, s2, s3, s4, zeros, lo, hi, nan, plain, mixed


def small_summary(flat: np.ndarray) -> tuple[Moments, str]:
    """``(moments(flat), layout_hash(flat))`` in one compiled call, for a float32 tensor of at most
    :data:`CHUNK` entries: the per-tensor cost of many small tensors is calls, not arithmetic."""
    shift, s1, s2, s3, s4, zeros, lo, hi, nan, plain, mixed = _kernels()[2](flat, flat.view(np.uint32))
    absmax = float("nan") if nan else max(hi, -lo)
    layout = f"{flat.shape[0]:x}-{int(plain) & _MASK64:016x}{int(mixed) & _MASK64:016x}"
    return _from_sums(flat.shape[0], shift, s1, s2, s3, s4, absmax, int(zeros)), layout


def is_small(flat: np.ndarray) -> bool:
    """Whether :func:`small_summary` applies: float32 little-endian, 1 to :data:`CHUNK` entries."""
    return flat.dtype == CANONICAL and 0 < flat.shape[0] <= CHUNK


def warm_up() -> None:
    """Compile (first run, ~0.5 s) or load from numba's cache (~50 ms) the kernels, before timing anything."""
    tiny = np.zeros(8, dtype=CANONICAL)
    power_sums, layout_sums, small_sums = _kernels()
    power_sums(tiny, 0.0)
    layout_sums(tiny.view(np.uint32))
    small_sums(tiny, tiny.view(np.uint32))


_KERNELS_LOCK = threading.Lock()
_KERNELS: tuple[Callable, Callable, Callable] | None = None


def _kernels() -> tuple[Callable, Callable, Callable]:
    """``(power sums, layout sums, small summary)`` compiled by numba on first use (``nogil``, cached on disk).

    numba is imported here, not at module import: it costs ~100 MB of memory, which the commands that
    only read stored fingerprints (``index show``, ``serve``) need not pay. ``reassoc`` lets LLVM keep
    several partial sums in SIMD lanes (float64 throughout, as exact as a sequential sum or more);
    ``nnan``/``ninf`` stay off so NaN and inf propagate as in numpy.
    """
    global _KERNELS
    if _KERNELS is not None:  # called once per tensor: no lock once compiled
        return _KERNELS
    with _KERNELS_LOCK:
        if _KERNELS is None:
            from numba import njit

            _KERNELS = (njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(_shifted_power_sums),
                        njit(cache=True, nogil=True)(_layout_sums),
                        njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})(_small_sums))
        return _KERNELS

