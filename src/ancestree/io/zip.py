"""A zip of a model folder (or of a single weight file).

The archive is checked before anything is written: absolute paths, ``..`` members, symlinks and
encrypted members are refused, and the total uncompressed size is capped (:data:`MAX_RATIO` times the
archive's size, at least :data:`MIN_LIMIT`) so a zip bomb cannot fill the disk; extraction also counts the
bytes actually inflated, in case the sizes in the directory lie. Members go into a temporary directory
owned by the returned model and removed by ``close()`` (or when the model is garbage collected).

The extracted content is opened with :func:`~ancestree.io.loader.load_model` (a single top-level folder is
entered first, and a model folder found below the top when the top holds no weights), so every format and
folder layout works inside a zip; a zip holding several models is refused, naming them. The returned model keeps
``model_id``; its ``format`` is ``"zip:<inner format>"`` (e.g. ``"zip:safetensors"``), ``meta.files`` names the
zip itself, and ``meta.extra["zip_member"]`` the folder or file inside the archive that holds the model.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import weakref
import zipfile
import zlib
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np

from ancestree.errors import BadInputError, listed
from ancestree.io.base import FileInfo, Model, TensorInfo

#: Uncompressed bytes allowed per compressed byte (weights barely compress; bombs compress ~1000x).
MAX_RATIO = 50
#: ... but a small archive may always expand to this many bytes.
MIN_LIMIT = 64 * 1024 * 1024
MAX_MEMBERS = 100_000
_CHUNK = 1 << 20


def check_members(zf: zipfile.ZipFile, path: Path, limit: int) -> list[zipfile.ZipInfo]:
    """The members to extract (files, not folders or macOS metadata), or a :class:`BadInputError`."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise BadInputError(path, f"zip has {len(infos)} members, more than the {MAX_MEMBERS} allowed")
    members, total = [], 0
    for info in infos:
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or (parts and parts[0].endswith(":")) or ".." in parts:
            raise BadInputError(path, f"zip member {info.filename!r} would be written outside the extraction folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BadInputError(path, f"zip member {info.filename!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise BadInputError(path, f"zip member {info.filename!r} is encrypted")
        if info.is_dir() or not parts or parts[0] == "__MACOSX":
            continue
        total += info.file_size
        members.append(info)
    if total > limit:
        raise BadInputError(path, f"zip would expand to {total:,} bytes, more than the {limit:,} allowed (zip bomb?)")
    return members


def extract(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo], into: Path, path: Path, limit: int) -> None:
    """Write the members below ``into``, counting inflated bytes against the sizes declared and ``limit``."""
    written = 0
    for info in members:
        target = into.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(target, "wb") as dst:
            size = 0
            while block := src.read(_CHUNK):
                size += len(block)
                written += len(block)
                if size > info.file_size or written > limit:
                    raise BadInputError(path, f"zip member {info.filename!r} inflates past its declared size (zip bomb?)")
                dst.write(block)


def inner_root(folder: Path) -> Path:
    """Enter single top-level folders (``model/`` in ``model.zip``) to reach the model."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        if len(entries) != 1 or not entries[0].is_dir():
            return folder
        folder = entries[0]


#: How many model names a "several models" message lists before counting the rest.
_NAMED = 4


def model_root(folder: Path, workdir: Path, path: Path) -> Path:
    """The one model below ``folder``: itself when it holds weights, else the only model a scan finds there.

    Weights directly in ``folder`` are one model (a zip of loose weight files or shards is one checkpoint),
    as for any folder given by path. Otherwise the folder is scanned as ``--scan`` would: one model is
    entered (``model/`` beside a ``README.md``); several are refused by name, since a zip is one model and
    guessing which one was meant would silently drop the others."""
    from ancestree.io.loader import scan_models, weight_files  # the loader imports this module lazily

    if weight_files(folder):
        return folder
    found = [p for _, p in scan_models(folder)]
    if len(found) == 1:
        return found[0]
    loose = {p.parent for p in found if p.is_file()}
    if len(found) > 1 and len(loose) == 1 and all(p.is_file() for p in found):
        return loose.pop()  # loose weight files in one folder (shards without an index): one checkpoint, as at the top
    if len(found) > 1:
        names = [p.relative_to(workdir).as_posix() for p in found]
        raise BadInputError(path, f"zip holds {len(found)} models ({listed(names, _NAMED)}), not one; unzip it and pass the folder with --scan")
    return folder  # no model at all: loading the folder says what is missing


def open_zip(path: str | Path, model_id: str | None = None) -> Model:
    """Extract ``path`` safely and open the model inside it; see the module docstring."""
    from ancestree.io.loader import load_model  # the loader imports this module lazily

    path = Path(path)
    model_id = str(path) if model_id is None else model_id
    limit = max(MIN_LIMIT, MAX_RATIO * path.stat().st_size)
    workdir = Path(tempfile.mkdtemp(prefix="ancestree-zip-"))
    try:
        with zipfile.ZipFile(path) as zf:
            members = check_members(zf, path, limit)
            if not members:
                raise BadInputError(path, "zip archive holds no files")
            free = shutil.disk_usage(workdir).free
            if sum(m.file_size for m in members) > free:
                raise BadInputError(path, f"not enough disk space to extract the zip ({free:,} bytes free)")
            extract(zf, members, workdir, path, limit)
        root = model_root(inner_root(workdir), workdir, path)
        inner = load_model(root, model_id)
    except BadInputError as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise _inside(exc, path, workdir) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        raise BadInputError(path, f"corrupt or unsupported zip archive ({exc.__class__.__name__}: {exc})") from None
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return ZipModel(path, model_id, inner, workdir, root.relative_to(workdir).as_posix())


def _inside(exc: BadInputError, path: Path, workdir: Path) -> BadInputError:
    """Re-aim an error about an extracted file at the zip, naming the member."""
    if exc.path is None or exc.path == str(path):
        return exc
    try:
        member = Path(exc.path).relative_to(workdir).as_posix()
    except ValueError:
        return exc
    where = "the archive's top folder" if member == "." else f"member {member!r}"
    return BadInputError(path, f"{where}: {exc.problem}")


class ZipModel(Model):
    """The model inside a zip: tensors and metadata of the extracted model, files of the zip."""

    def __init__(self, path: Path, model_id: str, inner: Model, workdir: Path, member: str) -> None:
        super().__init__(path, model_id)
        self.inner = inner
        self.format = f"zip:{inner.format}"
        self.meta = replace(inner.meta, format=self.format, files=[FileInfo.of(path)], extra=dict(inner.meta.extra))
        self.meta.extra["zip_member"] = member
        self.workdir = workdir  # where the archive was extracted; removed on close
        self._cleanup = weakref.finalize(self, shutil.rmtree, workdir, ignore_errors=True)

    @property
    def parameters(self) -> int:  # the inner format's count: a PEFT adapter's stored factors, not its dense updates
        return self.inner.parameters

    @property
    def dtype_counts(self) -> dict[str, int]:
        return self.inner.dtype_counts

    def _list(self) -> list[TensorInfo]:
        return list(self.inner.tensors.values())

    def _read(self, name: str) -> np.ndarray:
        return self.inner.read(name)

    def close(self) -> None:
        self.inner.close()
        self._cleanup()
