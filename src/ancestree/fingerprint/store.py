"""Save and load fingerprints: one ``.npz`` file holds one or many.

Layout: ``header`` is the UTF-8 JSON of every field except the sketches (floats written with Python's
shortest round-trip repr, so moments survive exactly); ``sketches`` is all sketches concatenated as one
float32 array, each tensor's record giving its offset and shape. No pickle is involved in loading.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from ancestree.atomic import atomic_path
from ancestree.errors import DAMAGED_FILE, BadInputError
from ancestree.fingerprint.types import FINGERPRINT_VERSION, Declared, Fingerprint, SketchSpec, TensorPrint

MAGIC = "ancestree-fingerprints"
_SCALARS = ("digest", "layout_hash", "mean", "variance", "skewness", "kurtosis", "norm", "absmax", "zeros")


def _tensor_record(t: TensorPrint, offset: int) -> dict[str, Any]:
    record: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "quantized": t.quantized}
    record.update({k: getattr(t, k) for k in _SCALARS})
    record["sketch"] = [offset, list(t.sketch.shape)]
    if t.step is not None:
        record["step"] = t.step
    return record


def _model_record(fp: Fingerprint, offset: int) -> tuple[dict[str, Any], int]:
    tensors = []
    for t in fp.tensors:
        tensors.append(_tensor_record(t, offset))
        offset += t.sketch.size
    record = {
        "id": fp.id,
        "format": fp.format,
        "parameters": fp.parameters,
        "dtypes": fp.dtypes,
        "declared": asdict(fp.declared),
        "content_key": fp.content_key,
        "spec": asdict(fp.spec),
        "version": fp.version,
        "tensors": tensors,
    }
    return record, offset


def to_bytes(fingerprints: Sequence[Fingerprint]) -> bytes:
    """The ``.npz`` bytes of one or many fingerprints."""
    records, offset = [], 0
    for fp in fingerprints:
        record, offset = _model_record(fp, offset)
        records.append(record)
    header = json.dumps({"format": MAGIC, "models": records}).encode("utf-8")
    sketches = [t.sketch.astype(np.float32, copy=False).ravel() for fp in fingerprints for t in fp.tensors]
    flat = np.concatenate(sketches) if sketches else np.zeros(0, np.float32)
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(header, dtype=np.uint8), sketches=flat)
    return buf.getvalue()


def _tensor_from(record: dict[str, Any], sketches: np.ndarray) -> TensorPrint:
    offset, shape = record["sketch"]
    size = int(math.prod(shape))
    sketch = sketches[offset : offset + size].reshape(shape)
    scalars = {k: record[k] for k in _SCALARS}
    return TensorPrint(
        name=record["name"], shape=tuple(record["shape"]), dtype=record["dtype"], quantized=record["quantized"],
        sketch=sketch, step=record.get("step"), **scalars,
    )


def _model_from(record: dict[str, Any], sketches: np.ndarray) -> Fingerprint:
    return Fingerprint(
        id=record["id"],
        format=record["format"],
        parameters=int(record["parameters"]),
        dtypes={k: int(v) for k, v in record["dtypes"].items()},
        declared=Declared(**record["declared"]),
        tensors=[_tensor_from(t, sketches) for t in record["tensors"]],
        content_key=record["content_key"],
        spec=SketchSpec(**record["spec"]),
        version=int(record["version"]),
    )


def _check_versions(records: list[dict[str, Any]], oldest: int) -> None:
    found = {int(r.get("version", 0)) for r in records} - set(range(oldest, FINGERPRINT_VERSION + 1))
    if found:
        raise ValueError(f"fingerprint version {min(found)}, this ancestree reads {FINGERPRINT_VERSION}: compute them again")


def stored_version(data: bytes) -> int:
    """The oldest fingerprint version in ``.npz`` bytes of :func:`to_bytes` (0 when unreadable): whether
    they must be computed again, without reading them."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            header = json.loads(npz["header"].tobytes().decode("utf-8"))
        return min(int(r.get("version", 0)) for r in header["models"])
    except DAMAGED_FILE:
        return 0


def from_bytes(data: bytes, source: str | os.PathLike[str] | None = None, oldest: int = FINGERPRINT_VERSION) -> list[Fingerprint]:
    """Fingerprints from ``.npz`` bytes; :class:`BadInputError` naming ``source`` when they are not ours
    (or of a version before ``oldest``: an index reads those of :data:`OLDEST_READABLE` on)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            header = json.loads(npz["header"].tobytes().decode("utf-8"))
            sketches = np.array(npz["sketches"], dtype=np.float32)
        if header.get("format") != MAGIC:
            raise ValueError("not an ancestree fingerprint file")
        _check_versions(header["models"], oldest)
        return [_model_from(r, sketches) for r in header["models"]]
    except DAMAGED_FILE as exc:
        raise BadInputError(source, f"cannot read fingerprints ({exc.__class__.__name__}: {str(exc) or 'empty or cut short'})") from None


def save_fingerprints(fingerprints: Fingerprint | Sequence[Fingerprint], path: str | os.PathLike[str]) -> None:
    """Write one or many fingerprints to ``path`` (atomically)."""
    fps = [fingerprints] if isinstance(fingerprints, Fingerprint) else list(fingerprints)
    with atomic_path(path) as tmp:
        tmp.write_bytes(to_bytes(fps))


def load_fingerprints(path: str | os.PathLike[str]) -> list[Fingerprint]:
    """Every fingerprint stored in ``path``."""
    try:
        data = open(path, "rb").read()
    except OSError as exc:
        raise BadInputError(path, f"cannot open ({exc.strerror or exc})") from None
    return from_bytes(data, path)
