"""Reading models for the index: the one function that touches model files, run locally or on Dask workers.

:func:`ingest` opens a model, skips it when its files are already indexed (a ``stat`` of each file
against the index's known stat keys), else fingerprints it and hashes its files. It returns plain bytes
and strings (:class:`Ingested`), so a Dask worker can send the result back cheaply and the index
process, the only writer of the SQLite file, stores it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ancestree.errors import BadInputError
from ancestree.fingerprint import FingerprintCache, SketchSpec, compute_fingerprint, to_bytes
from ancestree.fingerprint.compute import declared_of
from ancestree.io import load_model
from ancestree.io.base import Model
from ancestree.index.store import stored_declaration


@dataclass(frozen=True)
class Ingested:
    """What a worker returns for one model: ``status`` is ``new``, ``known`` or ``bad`` (then ``error`` says why)."""

    name: str
    path: str
    status: str
    stat_key: str | None = None
    file_hash: str | None = None
    fingerprint: bytes | None = None  # ``ancestree.fingerprint.to_bytes`` of one fingerprint
    declared: tuple[str, str | None, str | None] | None = None  # ``known``, its card declaring otherwise now: (indexed name, base, relation)
    alias: bool = False  # ``known`` as the files of another name: an alias of an indexed model
    error: str | None = None
    seconds: float = 0.0


def file_hash(model: Model) -> str:
    """sha256 over the model's files (names relative to the model, sizes and bytes): equal files, equal hash."""
    digest = hashlib.sha256()
    for f in sorted(model.meta.files, key=lambda f: f.path.name):
        digest.update(f"{f.path.name}\0{f.size}\0{f.sha256}\n".encode())
    return digest.hexdigest()


def ingest(name: str, path: str, known: Known | None = None) -> Ingested:
    """Fingerprint the model at ``path`` under ``name``, unless ``(name, its stat key)`` is in ``known``
    (:meth:`~ancestree.index.store.IndexStore.known_stat_keys`: then only its card is read)."""
    import time

    start = time.perf_counter()
    try:
        with load_model(path, name) as model:
            key = FingerprintCache.stat_key(model, SketchSpec())
            if key is not None and known and (name, key) in known:  # the weights as indexed; the card read again
                indexed, *stored = known[name, key]
                declared = declared_of(model)
                now = stored_declaration(declared.base_model, declared.relation)
                # an alias's card is not the model's
                changed = (indexed, *now) if indexed is not None and now != tuple(stored) else None
                return Ingested(name, path, "known", stat_key=key, declared=changed,
                                alias=indexed is None, seconds=time.perf_counter() - start)
            fp = compute_fingerprint(model)
            digest = file_hash(model)
    except BadInputError as exc:
        return Ingested(name, path, "bad", error=str(exc), seconds=time.perf_counter() - start)
    return Ingested(name, path, "new", stat_key=key, file_hash=digest, fingerprint=to_bytes([fp]),
                    seconds=time.perf_counter() - start)


Known = Mapping[tuple[str, str], tuple[str | None, str | None, str | None]]


def ingest_local(items: Sequence[tuple[str, str]], known: Known, threads: int = 1) -> Iterator[Ingested]:
    """:func:`ingest` each ``(name, path)`` in this process, yielding results in order as they finish."""
    if threads <= 1:
        for name, path in items:
            yield ingest(name, path, known)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="ancestree-ingest") as pool:  # ``known`` is only read
        yield from pool.map(lambda item: ingest(item[0], item[1], known), items)


def ingest_dask(items: Sequence[tuple[str, str]], known: Known, address: str) -> Iterator[Ingested]:
    """:func:`ingest` each ``(name, path)`` on the Dask cluster at ``address``, yielding results as they complete.

    Workers read the files (so the paths must be visible to them); only fingerprints travel back. The
    set of known stat keys is sent to every worker once.
    """
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - dask[distributed] is a dependency
        raise BadInputError(None, f"--dask needs dask.distributed ({exc})") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:  # ValueError: not an address ("missing port number")
        raise BadInputError(address, f"cannot reach the Dask scheduler ({exc})") from None
    try:
        # wrapped in a list: scatter would otherwise send each item of the mapping as its own piece of data
        known_future = client.scatter([dict(known)], broadcast=True)[0]
        run = uuid.uuid4().hex[:12]  # keys of this run only: runs at once on one cluster shared tasks of one name
        futures = [client.submit(ingest, name, path, known_future, pure=False, key=f"ingest-{run}-{i}-{name}")
                   for i, (name, path) in enumerate(items)]
        for future in as_completed(futures):
            yield future.result()
            future.release()
    finally:
        client.close()


PathLike = str | os.PathLike[str]


def resolve_items(paths: Iterable[PathLike | tuple[str, PathLike]], scan: Iterable[PathLike] = ()) -> list[tuple[str, str]]:
    """``(name, absolute path)`` for each model: the path as given (or a given ``(name, path)`` pair), and
    for each ``scan`` folder, every model below it named by its path relative to the folder (with the folder
    in front when two folders hold the same relative path: :func:`~ancestree.io.scan_folders`). A scan folder
    holding no model is an item of its own, which indexing reports as unreadable as it does a given empty
    folder (a batch goes on past it)."""
    from ancestree.io import scan_folders, scan_models

    items = [(str(p[0]), str(Path(p[1]).resolve())) if isinstance(p, tuple) else (str(p), str(Path(p).resolve()))
             for p in paths]
    scan = list(scan)
    for folder in scan:
        if not Path(folder).is_dir():
            raise BadInputError(folder, "not a folder (--scan needs a folder to search for models)")
    empty = [folder for folder in scan if next(iter(scan_models(folder)), None) is None]
    items.extend((_index_name(name, path), str(Path(path).resolve())) for name, path in scan_folders([f for f in scan if f not in empty]))
    items.extend((str(folder), str(Path(folder).resolve())) for folder in empty)
    seen: set[str] = set()
    unique = []
    for name, path in items:
        if path not in seen:
            seen.add(path)
            unique.append((name, path))
    return unique


def _index_name(name: str, path: Path) -> str:
    """A scan id as an index name: a scanned folder that is itself a model is "." to `tree` (the contract's id,
    relative to the folder), but a name is a model's identity in the index: two such folders would both be
    ".", the second taken for a re-upload of the first. Such a folder is named by its own name (a cache
    repository's older snapshots below it)."""
    where = Path(os.path.abspath(path))
    if name == ".":
        return where.name
    if name.startswith("snapshots/") and where.parent.name == "snapshots" and where.parent.parent.name.startswith("models--"):
        return f"{where.parent.parent.name}/{name}"
    return name


__all__ = ["Ingested", "Known", "file_hash", "ingest", "ingest_dask", "ingest_local", "resolve_items"]
