"""The hot loop: exact moments and content hashes of one tensor, streamed in cache-sized chunks.

Nothing here holds more than one chunk of temporaries, so a tensor of any size is summarised in the
memory of the tensor itself (memory-mapped by the reader) plus a few MB. Hashing and moments are separate
functions so the caller can run them on two threads (``blake3`` and numpy release the GIL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from blake3 import blake3

#: Elements per chunk: 32 Ki float64 temporaries (256 KB each) stay in the L2 cache.
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


def content_digest(flat: np.ndarray) -> str:
    """BLAKE3 of the canonical float32 little-endian values, in order (hex, 256 bits).

    BLAKE3 rather than sha256: equally collision-resistant for telling duplicates apart, and ~3.5x less CPU
    per byte (SIMD), which is what kept the one-pass fingerprint slower than a plain read of the file.
    Canonical tensors are hashed straight from the (memory-mapped) buffer; others chunk by chunk.
    """
    digest = blake3()
    if flat.dtype == CANONICAL:
        digest.update(flat.view(np.uint8))
    else:
        for chunk in _chunks(flat):
            digest.update(_canonical(chunk).view(np.uint8))
    return digest.hexdigest()


def layout_hash(flat: np.ndarray) -> str:
    """A multiset hash of the canonical values: the same for any reordering of the entries.

    The count, the exact sum of the value bits, and the sum of a nonlinear mix of them (mod 2**64), so a
    transposed matrix, a permuted conv layout or reordered LSTM gates hash alike, while changed values
    do not cancel out the way they could in a plain sum.
    """
    plain = mixed = 0
    buf = np.empty(min(CHUNK, max(flat.shape[0], 1)), dtype=np.uint32)
    for chunk in _chunks(flat):
        u = _canonical(chunk).view(np.uint32)
        x = buf[: u.shape[0]]
        np.right_shift(u, np.uint32(15), out=x)  # xor-shift, then square mod 2**32: three cached passes
        np.bitwise_xor(x, u, out=x)
        np.multiply(x, x, out=x)
        plain += int(u.sum(dtype=np.uint64))
        mixed += int(x.sum(dtype=np.uint64))
    return f"{flat.shape[0]:x}-{plain & _MASK64:016x}{mixed & _MASK64:016x}"


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


def _nonzero(chunk: np.ndarray, scratch: np.ndarray) -> int:
    """Entries of a float chunk that are not ±0 (integer view: numpy counts floats 5x slower)."""
    if chunk.dtype.itemsize == 4 and chunk.dtype.kind == "f":
        bits = np.left_shift(chunk.view(np.uint32), np.uint32(1), out=scratch[: chunk.shape[0]])  # drop the sign
        return int(np.count_nonzero(bits))
    return int(np.count_nonzero(chunk))


def _power_sums(flat: np.ndarray, shift: float) -> tuple[float, float, float, float, float, int]:
    """Sums of ``d, d², d³, d⁴`` with ``d = x - shift`` in float64, plus abs max and count of zeros.

    Reductions are BLAS dot products (one pass, no temporary): ``Σd = d·1``, ``Σd² = d·d``,
    ``Σd³ = d²·d``, ``Σd⁴ = d²·d²``. Callers limit BLAS to one thread (see compute.py): waking BLAS
    threads for each small vector costs far more than the dot itself.
    """
    size = min(CHUNK, flat.shape[0])
    buf = np.empty(size, dtype=np.float64)
    buf2 = np.empty_like(buf)
    ones = np.ones_like(buf)
    scratch = np.empty(size, dtype=np.uint32)
    s1 = s2 = s3 = s4 = 0.0
    absmax = 0.0
    nonzero = 0
    for chunk in _chunks(flat):
        n = chunk.shape[0]
        d = buf[:n]
        np.copyto(d, chunk)  # a plain cast, then an in-place subtract: faster than a casting subtract
        np.subtract(d, shift, out=d)
        d2 = np.multiply(d, d, out=buf2[:n])
        s1 += float(np.dot(d, ones[:n]))
        s2 += float(np.dot(d, d))
        s3 += float(np.dot(d2, d))
        s4 += float(np.dot(d2, d2))
        absmax = max(absmax, float(chunk.max()), -float(chunk.min()))
        nonzero += _nonzero(chunk, scratch)
    return s1, s2, s3, s4, absmax, flat.shape[0] - nonzero


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
        delta = s1 / n
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
