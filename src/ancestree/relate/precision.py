"""How precisely a stored dtype holds values, and the noise that storing in it adds.

Used to tell a quantized (or half-precision) copy from a fine-tune: a copy differs from its source by
about one rounding step of the coarser dtype, a fine-tune by much more.
"""

from __future__ import annotations

import math
import re

from ancestree.fingerprint import TensorPrint

#: Mantissa bits of floating dtypes (relative precision is 2**-bits).
MANTISSA_BITS = {
    "float64": 52,
    "float32": 23,
    "float16": 10,
    "bfloat16": 7,
    "float8_e4m3fn": 3,
    "float8_e5m2": 2,
}

#: RMS rounding error of a float dtype relative to RMS(value) · 2**-bits (measured on Gaussian weights: 0.21).
FLOAT_ROUNDING = 0.25


def integer_bits(dtype: str) -> int | None:
    """Bits of an integer / block-quantized dtype (``int8`` -> 8, ``q4_0`` -> 4, ``q6_k`` -> 6), else ``None``."""
    m = re.match(r"^(?:u?int|q|iq)(\d+)", dtype.lower())
    return int(m.group(1)) if m else None


def _float_stored(t: TensorPrint) -> bool:
    """Stored in a float dtype: plain, or FP8 with a scale (a scale leaves its relative precision as it is)."""
    return t.dtype in MANTISSA_BITS and (not t.quantized or t.dtype.startswith("float8"))


def precision_bits(t: TensorPrint) -> float:
    """Effective bits of precision of a stored tensor (higher is finer); 64 when unknown."""
    if _float_stored(t):
        return float(MANTISSA_BITS[t.dtype])
    bits = integer_bits(t.dtype)
    if bits is not None:
        return float(bits)
    return 64.0


def quantization_noise(t: TensorPrint) -> float:
    """Expected RMS error that storing ``t`` in its dtype adds (one rounding step, uniform error)."""
    if _float_stored(t):
        return FLOAT_ROUNDING * t.rms * 2.0 ** -MANTISSA_BITS[t.dtype]
    bits = integer_bits(t.dtype)
    if bits is None or bits < 2:
        return 0.0
    # Symmetric per-tensor integer quantization: step = absmax / (2**(bits-1) - 1); uniform error step/√12.
    # Per-channel or per-block schemes have smaller steps, so this is an upper bound for them.
    step = t.absmax / (2 ** (bits - 1) - 1)
    return step / math.sqrt(12.0)
