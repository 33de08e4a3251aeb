"""Synthetic model zoos with known ground truth, made by real training on CPU.

``make_zoo(out, preset="tiny", seed=0, workers=1)`` writes one Hugging Face style folder per model and
``out/truth.json`` (the schema of ``ancestree tree --format json``, plus each model's training classes,
split and recipe). See :mod:`ancestree.zoo.presets` for the presets.
"""

from __future__ import annotations

from ancestree.zoo.architectures import build_module, load_module, make_config
from ancestree.zoo.make import make_zoo
from ancestree.zoo.presets import PRESETS, build_plan

__all__ = ["PRESETS", "build_module", "build_plan", "load_module", "make_config", "make_zoo"]
