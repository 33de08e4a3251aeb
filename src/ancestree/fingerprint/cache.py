"""A content-keyed cache of fingerprints on disk.

Two levels, so a second run reads no tensor bytes and two copies of one model are stored once:

* ``stat/<key>.json`` maps a model's files by ``(realpath, size, mtime_ns)`` to a content key; finding
  it needs only a ``stat`` of each file (the model's headers are read to list its files);
* ``content/<entry_key>.npz`` holds the fingerprint under the identity of the learned values *and* of
  the way this file names and lays them out (tensor names, shapes, order): copies of one model with the
  same tensor names share an entry, while a duplicate in another format (ONNX names such as
  ``onnx::MatMul_269``, transposed matrices) gets its own, since name alignment needs its own names.

On a hit, the id and the declared metadata are refreshed from the open model (headers only), so the
same weights seen under another name or with another model card come back with that name and card.
Every write is atomic; a corrupt or foreign entry counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, replace
from pathlib import Path

from ancestree.atomic import write_bytes, write_text
from ancestree.errors import DAMAGED_FILE, BadInputError
from ancestree.fingerprint.store import from_bytes, to_bytes
from ancestree.fingerprint.types import FINGERPRINT_VERSION, Fingerprint, SketchSpec
from ancestree.io.base import Model

#: Environment variable overriding the default cache directory.
CACHE_ENV = "ANCESTREE_CACHE"

#: Version of the on-disk layout of the cache (not of the fingerprints it holds).
CACHE_LAYOUT = 2


def default_cache_dir() -> Path:
    """``$ANCESTREE_CACHE``, else ``~/.cache/ancestree``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ancestree"


class FingerprintCache:
    """Fingerprints stored under ``directory`` (default :func:`default_cache_dir`)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        # layout ".2": entries keyed by names as well as values (".1" served an ONNX duplicate's tensor
        # names to the safetensors original, since both have one content key)
        self.root = self.directory / f"fingerprints-v{FINGERPRINT_VERSION}.{CACHE_LAYOUT}"

    def __repr__(self) -> str:
        return f"FingerprintCache({str(self.directory)!r})"

    # -- keys ---------------------------------------------------------------------------------------
    @staticmethod
    def stat_key(model: Model, spec: SketchSpec) -> str | None:
        """Key of a model's files as they are now; ``None`` when it has no files (nothing to key on).

        Size and modification time alone missed other files unpacked over them by tools that restore the
        time (``unzip -o``, ``tar``, ``rsync -t``): the inode and the change time (which no tool sets) are in
        it too, as git keys its index."""
        if not model.meta.files:
            return None
        parts: list[object] = [FINGERPRINT_VERSION, asdict(spec)]
        for f in model.meta.files:
            try:
                st = os.stat(f.path)
            except OSError:
                return None
            parts.append([os.path.realpath(f.path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns])
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    @staticmethod
    def _spec_tag(spec: SketchSpec) -> str:
        return hashlib.sha256(json.dumps(asdict(spec)).encode()).hexdigest()[:12]

    def _stat_path(self, key: str) -> Path:
        return self.root / "stat" / key[:2] / f"{key}.json"

    @staticmethod
    def entry_key(fp: Fingerprint) -> str:
        """The learned values (``content_key``) together with this file's tensor names, shapes and order."""
        layout = [[t.name, list(t.shape), t.digest] for t in fp.tensors]
        return hashlib.sha256(json.dumps([fp.content_key, layout]).encode()).hexdigest()

    def _content_path(self, entry_key: str, spec: SketchSpec) -> Path:
        return self.root / "content" / entry_key[:2] / f"{entry_key}-{self._spec_tag(spec)}.npz"

    # -- use ----------------------------------------------------------------------------------------
    def get(self, model: Model, spec: SketchSpec | None = None) -> Fingerprint | None:
        """The cached fingerprint of ``model`` if its files are unchanged, else ``None``; reads no tensors."""
        spec = spec or SketchSpec()
        key = self.stat_key(model, spec)
        if key is None:
            return None
        content = None
        try:
            entry = json.loads(self._stat_path(key).read_text(encoding="utf-8"))
            content = self._content_path(str(entry["entry_key"]), spec)
            fp = from_bytes(content.read_bytes())[0]
        except DAMAGED_FILE + (BadInputError,):
            if content is not None and content.is_file():  # damaged: computed again, and put() writes it anew
                content.unlink(missing_ok=True)
            return None
        return _refresh(fp, model)

    def put(self, model: Model, fp: Fingerprint) -> None:
        """Store ``fp`` under its content key and remember which files gave it."""
        entry_key = self.entry_key(fp)
        content = self._content_path(entry_key, fp.spec)
        if not content.exists():
            write_bytes(content, to_bytes([fp]))
        key = self.stat_key(model, fp.spec)
        if key is not None:
            write_text(self._stat_path(key), json.dumps({"entry_key": entry_key, "content_key": fp.content_key, "id": fp.id}))


def _refresh(fp: Fingerprint, model: Model) -> Fingerprint:
    """The cached content with this model's id and declared metadata (both read from headers only)."""
    from ancestree.fingerprint.compute import declared_of

    return replace(
        fp, id=model.id, format=model.format, parameters=model.parameters, dtypes=model.dtype_counts,
        declared=declared_of(model),
    )


def as_cache(cache: FingerprintCache | str | os.PathLike[str] | bool | None) -> FingerprintCache | None:
    """Normalise the ``cache`` argument of the public functions."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return FingerprintCache()
    if isinstance(cache, FingerprintCache):
        return cache
    return FingerprintCache(cache)
