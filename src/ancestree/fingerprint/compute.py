"""Fingerprint a model in one streaming pass: one tensor in memory at a time.

Per tensor, the two content hashes (BLAKE3 digest and layout hash) run on a worker thread while the
moments run on the calling thread (``blake3`` and numpy release the GIL; this split balances the two
threads' CPU time), then the sketch is taken from the now-cached pages.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from ancestree.blas import one_blas_thread
from ancestree.errors import BadInputError, several
from ancestree.fingerprint.sketch import take_sketch
from ancestree.fingerprint.stats import (content_digest, content_hashes, flat_view, is_small, moments, rounding_step,
                                         small_summary)
from ancestree.fingerprint.types import Declared, Fingerprint, SketchSpec, TensorPrint
from ancestree.io import load_model
from ancestree.io.base import FileInfo, Model, TensorInfo

if TYPE_CHECKING:
    from ancestree.fingerprint.cache import FingerprintCache

Source = str | os.PathLike[str] | Model


#: Below this size a tensor's hashes are computed on the calling thread.
THREAD_MIN_BYTES = 1 << 20

#: Models smaller than this are not read ahead: the kernel's own read-ahead of a few MB covers them, and a
#: thread per model plus a lock per tensor cost more than it saves.
READ_AHEAD_MIN_BYTES = 16 << 20


def tensor_print(info: TensorInfo, values: np.ndarray, spec: SketchSpec, pool: ThreadPoolExecutor | None = None) -> TensorPrint:
    """Summarise one tensor (``values`` as returned by :meth:`Model.read`)."""
    flat = flat_view(values)
    if is_small(flat):  # moments and layout hash in one compiled call: small tensors cost calls, not bytes
        mom, layout = small_summary(flat)
        digest = content_digest(flat)
    else:
        # Small tensors hash faster than a hand-off to the worker thread and back costs (~0.1 ms).
        pending = pool.submit(content_hashes, flat) if pool is not None and flat.nbytes >= THREAD_MIN_BYTES else None
        mom = moments(flat)
        digest, layout = pending.result() if pending is not None else content_hashes(flat)
    return TensorPrint(
        name=info.name,
        shape=tuple(int(d) for d in info.shape),
        dtype=info.dtype,
        quantized=bool(info.quantized),
        digest=digest,
        layout_hash=layout,
        mean=mom.mean,
        variance=mom.variance,
        skewness=mom.skewness,
        kurtosis=mom.kurtosis,
        norm=mom.norm,
        absmax=mom.absmax,
        zeros=mom.zeros,
        sketch=take_sketch(values.reshape(info.shape) if values.shape != info.shape else values, spec),
        step=rounding_step(flat, info.dtype) if info.quantized else None,
    )


def stored_bytes(info: TensorInfo) -> int:
    """Bytes the tensor takes in its file (about: quantized tensors add their scales)."""
    try:
        itemsize = np.dtype(info.dtype).itemsize
    except TypeError:  # bfloat16, float8, GGUF block types: about a byte or two an entry
        itemsize = 2 if "16" in info.dtype else 1
    return math.prod(info.shape) * itemsize


def declared_of(model: Model) -> Declared:
    """The metadata a model declares about itself, in fingerprint form."""
    meta = model.meta
    config = meta.config or {}
    adapter = meta.adapter_config or {}
    ranks: list[int] = []
    if isinstance(adapter.get("r"), int):
        ranks.append(int(adapter["r"]))
    pattern = adapter.get("rank_pattern")
    if isinstance(pattern, dict):
        ranks.extend(int(v) for v in pattern.values() if isinstance(v, int))
    archs = config.get("architectures")
    return Declared(
        base_model=meta.declared_base_model,
        relation=meta.declared_relation,
        adapter=meta.adapter_config is not None,
        lora_ranks=sorted(set(ranks)),
        model_type=str(config["model_type"]) if config.get("model_type") else None,
        architectures=[str(a) for a in archs] if isinstance(archs, list) else [],
        files=[{"name": f.path.name, "size": int(f.size), "mtime": float(f.mtime)} for f in meta.files],
    )


def content_key(tensors: Iterable[TensorPrint], files: Sequence[FileInfo] = ()) -> str:
    """A key equal for the same learned values whatever the names, order, format or orientation.

    A model with no learned (floating-point) tensor, e.g. an integer-only export whose scales live elsewhere,
    has no values to key on: the hash of nothing would make every such model a duplicate of every other, so
    its files' bytes are the key (byte-identical files are still duplicates)."""
    parts = sorted(f"{'x'.join(map(str, sorted(t.shape)))}:{t.layout_hash}" for t in tensors)
    if not parts:
        parts = ["files:" + ",".join(sorted(f.sha256 for f in files))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


class ReadAhead:
    """Reads a model's files sequentially on a background thread, a bounded distance ahead of the consumer.

    Readers memory-map the files, and a cold memory map is read page fault by page fault, in small
    requests the CPU waits on. Large sequential reads here fill the page cache first (like a plain read of
    the file), so the hashing and moments find cached pages and the disk works while the CPU computes.
    At most ``ahead`` bytes are read before the consumer has caught up (:meth:`advance`), so a model
    larger than memory does not evict its own pages; the only buffer is one ``block``. With ``active``
    false it does nothing (small models).
    """

    def __init__(self, paths: Sequence[os.PathLike[str] | str], ahead: int = 256 << 20, block: int = 4 << 20,
                 active: bool = True) -> None:
        self.paths, self.ahead, self.block, self.active = list(paths), ahead, block, active
        self._read = self._consumed = 0
        self._stop = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="ancestree-readahead", daemon=True)

    def __enter__(self) -> ReadAhead:
        if self.active:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.active:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()

    def advance(self, nbytes: int) -> None:
        """The consumer has used ``nbytes`` more of the files."""
        if not self.active:
            return
        with self._cond:
            self._consumed += nbytes
            self._cond.notify_all()

    def _run(self) -> None:
        view = memoryview(bytearray(self.block))
        for path in self.paths:
            try:
                with open(path, "rb", buffering=0) as fh:
                    while self._wait_for_room() and (n := fh.readinto(view)):
                        with self._cond:
                            self._read += n
            except OSError:  # the reader proper reports unreadable files; read-ahead is only a hint
                continue

    def _wait_for_room(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: self._stop or self._read - self._consumed < self.ahead)
            return not self._stop


def compute_fingerprint(model: Model, spec: SketchSpec | None = None, threads: bool = True) -> Fingerprint:
    """Fingerprint an open model, reading every learned tensor exactly once."""
    spec = spec or SketchSpec()
    _require_tensors(model)
    pool = ThreadPoolExecutor(1, thread_name_prefix="ancestree-hash") if threads else None
    tensors: list[TensorPrint] = []
    try:
        # One BLAS thread: the sketches' small products gain nothing from BLAS threads on a busy machine.
        files = model.meta.files
        with ReadAhead([f.path for f in files], active=sum(f.size for f in files) >= READ_AHEAD_MIN_BYTES) as ahead, \
                one_blas_thread():
            for info, values in model.iter_tensors():
                tensors.append(tensor_print(info, values, spec, pool))
                ahead.advance(stored_bytes(info))
                del values  # else it lives on while the next tensor is read (a dequantized copy: 2x the memory)
    finally:
        if pool is not None:
            pool.shutdown()
    return Fingerprint(
        id=model.id,
        format=model.format,
        parameters=model.parameters,
        dtypes=model.dtype_counts,
        declared=declared_of(model),
        tensors=tensors,
        content_key=content_key(tensors, files),
        spec=spec,
    )


def fingerprint(
    source: Source,
    cache: FingerprintCache | str | os.PathLike[str] | bool | None = None,
    *,
    model_id: str | None = None,
    spec: SketchSpec | None = None,
) -> Fingerprint:
    """The fingerprint of a model path (file, folder, zip) or an open :class:`Model`.

    ``cache``: ``None``/``False`` computes afresh; ``True`` uses the default cache directory
    (``$ANCESTREE_CACHE`` or ``~/.cache/ancestree``); a path or a :class:`FingerprintCache` uses that one.
    A cache hit reads only the model's headers, never its tensors.
    """
    from ancestree.fingerprint.cache import as_cache

    store = as_cache(cache)
    if isinstance(source, Model):  # opened with its own id: the one given here names it all the same
        fp = _fingerprint_open(source, store, spec)
        fp.id = fp.id if model_id is None else model_id
        return fp
    with load_model(source, model_id) as model:
        return _fingerprint_open(model, store, spec)


#: Name endings of the integer tensors of packed low-bit layouts this reader does not unpack, and what they
#: are (a float tensor of such a name, a VQ codebook or a layer called ``q_weight``, is an ordinary weight).
PACKED_LAYOUTS = ((".qweight", "GPTQ/AWQ-packed low-bit weights", ""),
                  (".quant_state.bitsandbytes__nf4", "bitsandbytes 4-bit (NF4) weights", ""),
                  (".quant_state.bitsandbytes__fp4", "bitsandbytes 4-bit (FP4) weights", ""),
                  (".weight_packed", "compressed-tensors packed low-bit weights", ""),
                  (".q_weight", "EXL2-packed weights", ""),
                  (".W_q", "HQQ-packed weights", ""),
                  (".codes", "AQLM codebook-quantized weights", ".codebooks"))  # the third: a companion it needs


def unreadable_weights(model: Model) -> str | None:
    """Why the weights of ``model`` cannot be read as weights (packed low-bit layouts this reader does not
    unpack, integer matrices without their scales), or None."""
    for ending, layout, companion in PACKED_LAYOUTS:
        packed = next((n for n, t in model.tensors.items() if n.endswith(ending) and t.dtype.startswith(("int", "uint"))
                       and (not companion or n[: -len(ending)] + companion in model.tensors)), None)
        if packed is not None:
            return f"holds {layout} ({packed!r}), which ancestree does not unpack: give it a dequantized copy of the model"
    ops = model.meta.extra.get("onnx_packed_ops")
    if ops:
        return (f"holds weights packed for onnxruntime's {', '.join(ops)}, which ancestree does not unpack: "
                "give it a dequantized copy of the model")
    if not any(t.learned for t in model.tensors.values()):
        ints = [t for t in model.tensors.values() if len(t.shape) >= 2]
        if ints:
            return (f"holds no floating-point weights: its {len(ints)} integer matrices ({ints[0].name!r}, "
                    f"{ints[0].dtype}) come without scales to read them by")
    return None


def _require_tensors(model: Model) -> None:
    """Refuse a model with nothing this reader can compare, saying why (instead of fingerprinting its
    scales, or nothing, as if they were its weights)."""
    if not model.tensors:  # a header of {}, an ONNX graph without initializers: no lineage to read
        raise BadInputError(model.path, "holds no tensors: nothing to fingerprint")
    problem = unreadable_weights(model)
    if problem is not None:
        raise BadInputError(model.path, problem)


def _fingerprint_open(model: Model, store: FingerprintCache | None, spec: SketchSpec | None) -> Fingerprint:
    spec = spec or SketchSpec()
    _require_tensors(model)  # before the cache: one fingerprinted by an older version may be stored
    if store is not None:
        hit = store.get(model, spec)
        if hit is not None:
            return hit
    fp = compute_fingerprint(model, spec)
    if store is not None:
        store.put(model, fp)
    return fp


def fingerprint_many(
    sources: Sequence[Source] | Sequence[tuple[str, Source]],
    cache: FingerprintCache | str | os.PathLike[str] | bool | None = None,
    *,
    spec: SketchSpec | None = None,
    progress: bool = True,
    on_unreadable: Callable[[BadInputError], None] | None = None,
) -> list[Fingerprint]:
    """Fingerprints of several models, in order, with a progress bar on stderr.

    ``sources`` holds paths or models, or ``(model_id, path)`` pairs (what :func:`scan_models` yields).
    A model that cannot be read raises :class:`BadInputError`; with ``on_unreadable`` it is left out and
    the error handed to it instead (a scan of a hub mirror goes on past one damaged upload).
    """
    from ancestree.fingerprint.cache import as_cache

    several(sources, "sources")
    store = as_cache(cache)
    out: list[Fingerprint] = []
    for item in tqdm(list(sources), desc="fingerprinting", unit="model", disable=not progress, leave=False):
        model_id, src = _split(item)
        try:
            out.append(fingerprint(src, store, model_id=model_id, spec=spec))
        except BadInputError as exc:
            if on_unreadable is None:
                raise
            on_unreadable(exc)
    return out


def _split(item: Any) -> tuple[str | None, Source]:
    if isinstance(item, tuple):
        return str(item[0]), item[1]
    return None, item


__all__ = ["fingerprint", "fingerprint_many", "compute_fingerprint", "tensor_print", "content_key", "declared_of", "ReadAhead"]
