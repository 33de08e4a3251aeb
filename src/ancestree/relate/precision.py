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


#: Bits a float dtype holds beyond its mantissa, against integer grids: its rounding error is about a quarter
#: of its last place relative to the values (:data:`FLOAT_ROUNDING`), an n-bit integer grid's about
#: 2**-(n-1) of their RMS. With the mantissa alone bfloat16 (7 bits) was coarser than int8, and a model
#: released in bfloat16 was drawn as the quantized copy of its own int8 copy: edge F1 of ``wild`` with every
#: float rounded through bfloat16 0.683 / 0.737 -> 0.747 / 0.801 (weights / cards); float32 zoos unchanged.
FLOAT_EXTRA_BITS = 2


def integer_bits(dtype: str) -> int | None:
    """Bits of an integer / block-quantized dtype (``int8`` -> 8, ``q4_0`` -> 4, ``q6_k`` -> 6, GGUF's ``mxfp4``
    -> 4 and ternary ``tq2_0`` -> 2), else ``None`` (an MXFP4 copy read as 64 bits was called a fine-tune of
    its float32 source, "stored coarser")."""
    m = re.match(r"^(?:u?int|q|iq|tq|mxfp)(\d+)", dtype.lower())
    return int(m.group(1)) if m else None


def _float_stored(t: TensorPrint) -> bool:
    """Stored in a float dtype: plain, or FP8 with a scale (a scale leaves its relative precision as it is)."""
    return t.dtype in MANTISSA_BITS and (not t.quantized or t.dtype.startswith("float8"))


#: Exponent bits of floating dtypes: a dtype with fewer than bfloat16's 8 has a narrower range.
EXPONENT_BITS = {"float64": 11, "float32": 8, "bfloat16": 8, "float16": 5, "float8_e4m3fn": 4, "float8_e5m2": 5}

#: How much coarser a float tensor counts when it holds values of fewer mantissa bits in a dtype of a
#: narrower range (a float16 file of bfloat16 values): converted so, bfloat16's smallest values became float16
#: subnormals and lost bits, so of two files holding those values it is the copy. (A float32 or float64 file
#: of bfloat16 values holds them exactly and counts as bfloat16: the same values, a duplicate.)
CONVERTED_BITS = 0.5


def float_bits(t: TensorPrint) -> int:
    """Mantissa bits of a float-stored tensor: its dtype's, or as many as its values use when fewer (a model
    released in bfloat16 and converted to float16 holds bfloat16's 7 bits in float16's 10, and read as the
    finer of the two it was drawn as its own source's parent). A float64 tensor whose values use all 23
    bits the float32 sketch shows keeps its 52."""
    bits, used = MANTISSA_BITS[t.dtype], t.mantissa_used
    return bits if used is None or (bits > 23 and used >= 23) else min(bits, used)


def _converted(t: TensorPrint, used: int) -> bool:
    """Holds values of fewer bits than its dtype, in a range narrower than bfloat16's (:data:`CONVERTED_BITS`)."""
    return used < MANTISSA_BITS[t.dtype] and EXPONENT_BITS.get(t.dtype, 8) < 8


def precision_bits(t: TensorPrint) -> float:
    """Effective bits of precision of a stored tensor (higher is finer; a float's mantissa bits in use
    (:func:`float_bits`) plus :data:`FLOAT_EXTRA_BITS`, an integer grid's bits); 64 when unknown."""
    if _float_stored(t):
        used = float_bits(t)
        return used + FLOAT_EXTRA_BITS - (CONVERTED_BITS if _converted(t, used) else 0.0)
    grid = integer_bits(t.dtype)
    if grid is not None:
        return float(grid)
    return 64.0


#: A rounded copy differs by about one storage step of the coarser dtype: quant_ratio ≈ 1 (0.2–2 in
#: practice: per-channel schemes round finer than the per-tensor step assumed). A fine-tune in the same
#: pair is at least ~10× larger. 3 leaves room for subnormals and outliers.
QUANTIZED_RATIO = 3.0

#: The same bound where the step was measured block by block (:attr:`TensorPrint.step`): no longer an upper
#: bound from the largest entry, which at 4 bits let fine-tunes pass (half the ``lineage`` fine-tunes
#: written as Q4_0 were within 3 of their parent), but the step itself. Copies in Q4_0, Q4_1, Q5_0, Q5_1 and
#: Q8_0 of 40 ``lineage`` models measure 0.94–1.32 (a block that does not reach both end levels shows a
#: step a little short); their fine-tunes 1.41 and up (Q4_1, whose bound is tighter: below).
QUANTIZED_STEP_RATIO = 1.5


#: Tighter for blocks stored as ``d·q + m`` (Q4_1, Q5_1): their values span all the levels, so the measured
#: step is the step itself and copies measure 0.94–0.99, while fine-tunes written so reach down to 1.41
#: (a review's sweep of 40 ``lineage`` pairs); Q4_0's largest entry sits at one end only, its step reads a
#: little short and its copies measure up to 1.32.
QUANTIZED_SPAN_RATIO = {"q4_1": 1.2, "q5_1": 1.2}


def rounding_limit(t: TensorPrint) -> float:
    """How many of its rounding steps (:func:`quantization_noise`) a copy stored as ``t`` can be from its source."""
    if t.step is None:
        return QUANTIZED_RATIO
    return QUANTIZED_SPAN_RATIO.get(t.dtype, QUANTIZED_STEP_RATIO)


def quantization_noise(t: TensorPrint) -> float:
    """Expected RMS error that storing ``t`` in its dtype adds (one rounding step, uniform error)."""
    if t.step is not None:  # measured from its blocks
        return t.step / math.sqrt(12.0)
    if _float_stored(t):
        return FLOAT_ROUNDING * t.rms * 2.0 ** -float_bits(t)
    bits = integer_bits(t.dtype)
    if bits is None or bits < 2:
        return 0.0
    # Symmetric per-tensor integer quantization: step = absmax / (2**(bits-1) - 1); uniform error step/√12.
    # Per-channel or per-block schemes have smaller steps, so this is an upper bound for them.
    step = t.absmax / (2 ** (bits - 1) - 1)
    return step / math.sqrt(12.0)
