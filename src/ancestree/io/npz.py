"""numpy ``.npz`` archives: one ``.npy`` member per tensor.

Opened with ``allow_pickle=False``; an object array (which only a pickle can rebuild) is refused when the
archive is opened. Shapes and dtypes come from the ``.npy`` headers alone; an uncompressed member is
memory-mapped in place, a compressed one is inflated only when that tensor is read.
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ancestree.errors import BadInputError
from ancestree.io.base import FileInfo, Model, TensorInfo
from ancestree.io.quant import fold, pair_by_name, read_folded
from ancestree.io.safetensors import to_float

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header, 30 bytes


@contextmanager
def read_npz(path: str | Path) -> Iterator[np.lib.npyio.NpzFile]:
    """``np.load`` of a whole ``.npz`` archive (no pickles), its file opened and closed here: given a path,
    np.load leaves its own handle open when the archive is damaged (found later by the garbage collector)."""
    with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:
        yield data


@dataclass(frozen=True)
class Member:
    info: TensorInfo
    member: zipfile.ZipInfo
    dtype: np.dtype
    fortran: bool
    offset: int | None  # absolute file offset of the raw array data when the member is stored uncompressed


class NpzModel(Model):
    """One ``.npz`` archive, read one array at a time."""

    format = "npz"

    def __init__(self, path: str | Path, model_id: str | None = None) -> None:
        super().__init__(path, model_id)
        # the file is opened here, not by numpy (see read_npz), and stays open for the lazy reads
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise BadInputError(self.path, f"not a valid .npz archive ({exc.__class__.__name__}: {exc})") from None
        try:
            try:
                self._npz = np.load(self._file, allow_pickle=False)
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
                raise BadInputError(self.path, f"not a valid .npz archive ({exc.__class__.__name__}: {exc})") from None
            if not isinstance(self._npz, np.lib.npyio.NpzFile):
                raise BadInputError(self.path, "a single .npy array, not an .npz archive of named tensors")
            self._members = {m.info.name: m for m in self._scan()}
        except BadInputError:
            self.close()
            raise
        self._quant = pair_by_name({n: m.info for n, m in self._members.items()})
        self.meta.files = [FileInfo.of(self.path)]

    def _scan(self) -> list[Member]:
        members = []
        for zinfo in self._npz.zip.infolist():
            if zinfo.filename.endswith(".npy"):
                members.append(self._member(zinfo))
        return members

    def _member(self, zinfo: zipfile.ZipInfo) -> Member:
        name = zinfo.filename[: -len(".npy")]
        try:
            with self._npz.zip.open(zinfo) as fh:
                version = np.lib.format.read_magic(fh)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(fh)
                header_len = fh.tell()
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise BadInputError(self.path, f"array {name!r} has a broken .npy header ({exc})") from None
        if dtype.hasobject:
            raise BadInputError(self.path, f"array {name!r} holds Python objects (dtype object); refusing to unpickle it")
        offset = None
        if zinfo.compress_type == zipfile.ZIP_STORED:
            offset = self._data_offset(zinfo) + header_len
            needed = offset + int(math.prod(shape)) * dtype.itemsize
            if needed > self.path.stat().st_size:
                raise BadInputError(self.path, f"array {name!r} runs past the end of the file (truncated?)")
        # listed by the values' type (">f4" is float32 written big-endian: it was taken for no float at all)
        return Member(TensorInfo(name, tuple(shape), str(dtype.newbyteorder("="))), zinfo, dtype, fortran, offset)

    def _data_offset(self, zinfo: zipfile.ZipInfo) -> int:
        """Where a member's bytes start: after its local header, whose extra field may differ from the directory's."""
        with open(self.path, "rb") as fh:
            fh.seek(zinfo.header_offset)
            head = fh.read(_LOCAL_HEADER.size)
        if len(head) < _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
            raise BadInputError(self.path, f"member {zinfo.filename!r} has a broken local header")
        fields = _LOCAL_HEADER.unpack(head)
        return zinfo.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1]

    def _list(self) -> list[TensorInfo]:
        return fold([m.info for m in self._members.values()], self._quant)

    def _read(self, name: str) -> np.ndarray:
        return read_folded(name, self._quant, self._read_stored)

    def _read_stored(self, name: str) -> np.ndarray:
        m = self._members[name]
        if m.offset is not None and m.info.numel > 0:
            order: Literal["C", "F"] = "F" if m.fortran else "C"
            flat = np.memmap(self.path, dtype=m.dtype, mode="r", offset=m.offset, shape=(m.info.numel,))
            values = flat.reshape(m.info.shape, order=order)
        else:
            try:
                values = self._npz[name]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
                raise BadInputError(self.path, f"cannot read array {name!r} ({exc.__class__.__name__}: {exc})") from None
        if not values.dtype.isnative:
            values = values.astype(values.dtype.newbyteorder("="))
        return to_float(values)

    def close(self) -> None:
        npz = getattr(self, "_npz", None)
        if isinstance(npz, np.lib.npyio.NpzFile):
            npz.close()
        self._file.close()
