"""Runnable models for the methods that need features: zoo architectures and offline Hugging Face models.

A :class:`Runnable` is a ``torch.nn.Module`` in eval mode, its parameters by name, and how to make inputs
for it. Zoo models (``model_type`` ``ancestree-*``) are rebuilt by :func:`ancestree.zoo.architectures.load_module`;
Hugging Face ``transformers`` models are built offline from the folder's ``config.json``
(``AutoConfig.from_pretrained`` + ``AutoModel.from_config``, no download) and their weights read through
:func:`ancestree.io.load_model`, so any format ancestree reads works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ancestree.errors import BadInputError, IncomparableError


@dataclass
class Runnable:
    """A model that can be run: module, input description and where it came from."""

    id: str
    module: torch.nn.Module
    kind: str  # "zoo" or "transformers"
    config: dict[str, Any]

    @property
    def takes_images(self) -> bool:
        """Images in: the zoo's models and Hugging Face vision models (``image_size`` or ``num_channels`` in
        their config and no vocabulary: ViT, ResNet)."""
        vision = ("image_size" in self.config or "num_channels" in self.config) and "vocab_size" not in self.config
        return self.kind == "zoo" or vision  # a vocabulary: tokens in (Fuyu has an image size too)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input (images: ``(C, H, W)``; token models: ``(L,)``, any length accepted)."""
        if self.kind == "zoo":
            return tuple(self.config["input_shape"])
        if self.takes_images:  # a convolutional model without ``image_size`` takes any size: -1
            size = self.config.get("image_size", -1)
            h, w = (size, size) if isinstance(size, int) else tuple(size)
            return (int(self.config.get("num_channels", 3)), int(h), int(w))
        return (-1,)

    @property
    def signature(self) -> dict[str, tuple[int, ...]]:
        """Parameter names and shapes."""
        return {n: tuple(p.shape) for n, p in self.module.named_parameters()}

    @property
    def head(self) -> str | None:
        """The module whose *input* is the features of a zoo model: its last module with parameters (the
        classification head), so models whose heads differ in size (other class counts) still compare.
        Hugging Face base models (``AutoModel``) have no head: their features are the last hidden state."""
        if self.kind != "zoo":
            return None
        last = list(self.module.named_parameters())[-1][0]
        return last.rsplit(".", 1)[0] if "." in last else None

    def comparable(self, other: Runnable) -> bool:
        """Same parameter names and shapes, except perhaps the head's (which the features do not use)."""
        a, b = self.signature, other.signature
        if a.keys() != b.keys():
            return False
        head = self.head
        return all(a[n] == b[n] for n in a if head is None or not n.startswith(head + "."))

    def params(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.module.named_parameters()}

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` with the given parameters, one row per input (flattened): the input of the
        head for zoo models, the last hidden state for Hugging Face models."""
        captured: list[torch.Tensor] = []
        hook = None
        if self.head is not None:
            module = dict(self.module.named_modules())[self.head]
            hook = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
        try:
            out = torch.func.functional_call(self.module, params, (x,))
        finally:
            if hook is not None:
                hook.remove()
        if captured:
            out = captured[-1]
        elif self.kind == "transformers":
            out = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return out.reshape(out.shape[0], -1)

    def features(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(self.params() if params is None else params, x)


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise IncomparableError(folder, "cannot run this model: no config.json next to the weights (needed by the data-based methods)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(path, f"unreadable config.json: {exc}") from None


def load_runnable(path: str | Path, model_id: str | None = None) -> Runnable:
    """A :class:`Runnable` for a model folder (zoo or Hugging Face ``transformers``)."""
    folder = Path(path)
    model_id = str(path) if model_id is None else model_id
    if not folder.is_dir():
        raise IncomparableError(path, "the data-based methods need a model folder with config.json")
    config = _config(folder)
    if str(config.get("model_type", "")).startswith("ancestree-"):
        from ancestree.zoo.architectures import load_module

        return Runnable(model_id, load_module(folder), "zoo", config)
    return Runnable(model_id, _load_transformers(folder), "transformers", config)


def _load_transformers(folder: Path) -> torch.nn.Module:
    try:
        from transformers import AutoConfig, AutoModel
    except ImportError:  # pragma: no cover - transformers is a dependency
        raise BadInputError(folder, "the data-based methods need the `transformers` package for this model") from None
    from ancestree.io import load_model

    own = _transformers_own_loading(folder)
    if own is not None:
        return own
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        # eager attention: the fused CPU kernels have no forward-mode AD, which the linearisation needs; float32
        # whatever config.json says (a float16 candidate beside a float32 child broke the Jacobian product)
        module = AutoModel.from_config(config, attn_implementation="eager").float()
    except (ValueError, OSError, KeyError) as exc:
        raise BadInputError(folder / "config.json", f"transformers cannot build this model offline: {exc}") from None
    with load_model(folder) as model:
        state = {n: torch.from_numpy(np.array(v, dtype=np.float32)) for n, v in
                 ((i.name, model.read(i.name)) for i in model.tensors.values())}
    _load_state(module, state, folder)
    return module.eval()


#: Share of a transformers model's parameters (its pooler aside) that may be missing from its checkpoint; more,
#: such as a whole layer, and the model would run with random weights there.
MISSING_SHARE = 0.05


def _transformers_own_loading(folder: Path) -> torch.nn.Module | None:
    """The model as ``transformers`` loads it (its own renames of checkpoint keys: transformers 5 reads ViT
    checkpoints under other module names than it builds), float32 and eager, when it can read the folder's
    weights and finds at least half of them; None otherwise (other formats are read by ancestree's readers)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar on stderr, once per model
    try:
        module, info = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager",
                                                 dtype=torch.float32, output_loading_info=True)
    except Exception:  # noqa: BLE001 - any failure: ancestree's own reading decides, with its own messages
        return None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    missing = set(info.get("missing_keys", ()))
    if len([n for n, _ in module.named_parameters() if n in missing]) > len(list(module.parameters())) // 2:
        return None  # names it cannot map: ancestree's own reading decides
    _check_missing(module, missing, folder)
    return module.float().eval()


def _check_missing(module: torch.nn.Module, missing: set[str], folder: Path) -> None:
    """Refuse a model whose checkpoint lacks more than :data:`MISSING_SHARE` of the parameters its features
    depend on (a whole layer would run at its random initial values). A pooler is not counted: the features
    are the last hidden state, and a base model built for a classification checkpoint has one it lacks (5.7 %
    of a tiny ViT)."""
    counted = [(n, p.numel()) for n, p in module.named_parameters() if not n.startswith("pooler.")]
    lacking = [(n, k) for n, k in counted if n in missing]
    if sum(k for _, k in lacking) > MISSING_SHARE * sum(k for _, k in counted):
        raise IncomparableError(folder, f"weights do not fit the architecture in config.json: {len(lacking)} of its "
                                        f"parameter tensors are not in the checkpoint (first: {lacking[0][0]})")


def _load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Load ``state`` into ``module`` tolerating a wrapper prefix (``bert.``) and a head it lacks."""
    own = module.state_dict()
    prefix = getattr(module, "base_model_prefix", "") + "."
    fixed = {}
    for name, value in state.items():
        key = name if name in own else name[len(prefix):] if name.startswith(prefix) else name
        if key in own and own[key].shape == value.shape:
            fixed[key] = value.to(own[key].dtype)
    _check_missing(module, {k for k, _ in module.named_parameters() if k not in fixed}, folder)
    module.load_state_dict(fixed, strict=False)
