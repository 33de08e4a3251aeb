"""Training data with named classes, generated on the spot (nothing to download).

Two domains:

* ``shapes``: small RGB images of a shape with a colour and a texture, so each class has a
  natural-language name such as ``"red striped triangle"``. Images are drawn procedurally with numpy,
  with random position, size, colour jitter, texture phase and background noise, deterministic per seed.
* ``digits``: scikit-learn's bundled 8×8 handwritten digits, upscaled to the same image size and named
  ``"digit zero"`` .. ``"digit nine"``.

Both give images of shape ``(3, IMAGE_SIZE, IMAGE_SIZE)`` so every architecture can read every domain.
"""

from __future__ import annotations

import hashlib
import itertools
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 16
INPUT_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
COLOURS = {
    "red": (0.9, 0.15, 0.1),
    "green": (0.15, 0.75, 0.2),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
    "purple": (0.6, 0.2, 0.8),
    "orange": (0.95, 0.5, 0.05),
}
TEXTURES = ("plain", "striped", "dotted", "checkered")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DOMAINS = ("shapes", "digits")


def seed_of(*parts: object) -> int:
    """A 63-bit seed derived from any parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@lru_cache(maxsize=None)
def _shape_vocabulary() -> tuple[str, ...]:
    """Every shape class name in a fixed interleaved order, so any prefix mixes shapes, colours, textures."""
    names = [f"{c} {t} {s}" for c, t, s in itertools.product(COLOURS, TEXTURES, SHAPES)]
    order = np.random.default_rng(20240607).permutation(len(names))  # fixed: names must not depend on the zoo seed
    return tuple(names[i] for i in order)


def class_names(domain: str, n: int | None = None) -> list[str]:
    """The first ``n`` class names of ``domain`` (all of them when ``n`` is None)."""
    if domain == "digits":
        vocab: tuple[str, ...] = tuple(f"digit {d}" for d in DIGIT_NAMES)
    elif domain == "shapes":
        vocab = _shape_vocabulary()
    else:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if n is not None and not 1 <= n <= len(vocab):
        raise ValueError(f"domain {domain!r} has {len(vocab)} classes, asked for {n}")
    return list(vocab[:n] if n else vocab)


# -- shapes ---------------------------------------------------------------------------------------------
_YY, _XX = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) + 0.5


def _shape_mask(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """A boolean mask of ``shape`` centred at (cx, cy) with radius ``r``, rotated by ``angle``."""
    dx, dy = _XX - cx, _YY - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "ring":
        d2 = u * u + v * v
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        return (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= r
    if shape == "cross":
        arm = 0.35 * r
        return ((np.abs(u) <= arm) & (np.abs(v) <= r)) | ((np.abs(v) <= arm) & (np.abs(u) <= r))
    if shape == "triangle":  # apex up (before rotation): inside three half-planes
        return (v <= 0.6 * r) & (v >= -r + 1.8 * np.abs(u) - 0.2 * r)
    raise ValueError(shape)


def _texture(texture: str, rng: np.random.Generator) -> np.ndarray:
    """Brightness multiplier in [0.25, 1] that draws the texture over the whole image."""
    phase, period = rng.uniform(0, 4), rng.uniform(3.0, 4.5)
    if texture == "plain":
        return np.ones_like(_XX)
    if texture == "striped":
        direction = _XX if rng.random() < 0.5 else _YY
        return np.where(((direction + phase) // (period / 2)) % 2 == 0, 1.0, 0.25).astype(np.float32)
    if texture == "dotted":
        fx = ((_XX + phase) % period) - period / 2
        fy = ((_YY + phase) % period) - period / 2
        return np.where(fx * fx + fy * fy <= 1.1, 1.0, 0.3).astype(np.float32)
    if texture == "checkered":
        cell = period / 2
        return np.where((((_XX + phase) // cell) + ((_YY + phase) // cell)) % 2 == 0, 1.0, 0.25).astype(np.float32)
    raise ValueError(texture)


def draw_shape(name: str, rng: np.random.Generator) -> np.ndarray:
    """One ``(3, H, W)`` float32 image of class ``name`` (e.g. ``"red striped triangle"``)."""
    colour, texture, shape = name.split(" ")
    r = rng.uniform(4.0, 6.5)
    cx, cy = rng.uniform(r * 0.8, IMAGE_SIZE - r * 0.8, size=2)
    mask = _shape_mask(shape, cx, cy, r, rng.uniform(-0.35, 0.35)).astype(np.float32)
    rgb = np.clip(np.asarray(COLOURS[colour], np.float32) + rng.normal(0, 0.06, 3), 0, 1).astype(np.float32)
    fg = rgb[:, None, None] * (mask * _texture(texture, rng))[None]
    background = rng.uniform(0.0, 0.25) + rng.normal(0, 0.05, (3, IMAGE_SIZE, IMAGE_SIZE))
    return (fg + (1 - mask)[None] * background).astype(np.float32)


# -- digits ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = bunch.images.astype(np.float32) / 16.0
    big = np.kron(small, np.ones((1, 2, 2), np.float32))  # 8x8 -> 16x16, nearest neighbour
    return np.repeat(big[:, None], 3, axis=1), bunch.target.astype(np.int64)


def draw_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One scikit-learn digit image of ``digit``, shifted by up to a pixel, with light noise."""
    images, targets = _digits()
    pool = np.flatnonzero(targets == digit)
    image = images[rng.choice(pool)]
    shift = rng.integers(-1, 2, size=2)
    image = np.roll(image, tuple(shift), axis=(1, 2))
    return (image + rng.normal(0, 0.05, image.shape)).astype(np.float32)


# -- data sets ------------------------------------------------------------------------------------------
def make_dataset(
    domain: str,
    classes: list[str],
    n_per_class: int,
    seed: int,
    vocabulary: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``X (N, 3, H, W)`` and labels ``y (N,)`` for ``classes``, deterministic for ``seed``.

    Labels index ``vocabulary`` (default: the whole domain) so that a model fine-tuned on a subset of
    classes keeps its parent's classification head: a label means the same class in the whole tree.
    """
    vocabulary = vocabulary or class_names(domain)
    index = {name: i for i, name in enumerate(vocabulary)}
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for name in classes:
        for _ in range(n_per_class):
            if domain == "digits":
                images.append(draw_digit(DIGIT_NAMES.index(name.split(" ", 1)[1]), rng))
            else:
                images.append(draw_shape(name, rng))
            labels.append(index[name])
    order = rng.permutation(len(labels))
    return np.stack(images)[order], np.asarray(labels, np.int64)[order]


__all__ = [
    "DOMAINS",
    "IMAGE_SIZE",
    "INPUT_SHAPE",
    "class_names",
    "draw_digit",
    "draw_shape",
    "make_dataset",
    "seed_of",
]
