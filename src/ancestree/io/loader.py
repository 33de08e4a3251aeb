"""Open any supported model path as a :class:`~ancestree.io.base.Model`, and find models in a tree.

Which reader handles a file is decided by its suffix (table :data:`READERS`); which files of a folder
hold the weights by Hugging Face conventions (safetensors first, then PyTorch, ONNX, GGUF, npz).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import struct
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from ancestree.errors import DAMAGED_FILE, BadInputError
from ancestree.io.base import Model
from ancestree.io.folder import open_folder, shard_files

#: suffix -> "module:callable(path, model_id) -> Model"; formats live at the edge, one module each.
READERS: dict[str, str] = {
    ".safetensors": "ancestree.io.safetensors:SafetensorsModel",
    ".bin": "ancestree.io.torch_pickle:TorchModel",
    ".pt": "ancestree.io.torch_pickle:TorchModel",
    ".pth": "ancestree.io.torch_pickle:TorchModel",
    ".ckpt": "ancestree.io.torch_pickle:TorchModel",  # PyTorch Lightning: a torch.save of {"state_dict": ..., ...}
    ".onnx": "ancestree.io.onnx:OnnxModel",
    ".gguf": "ancestree.io.gguf:GGUFModel",
    ".npz": "ancestree.io.npz:NpzModel",
    ".zip": "ancestree.io.zip:open_zip",
}

#: Pickles that sit next to weights in training output but are not the model: never opened.
NOT_WEIGHTS = ("training_args", "optimizer", "scheduler", "rng_state", "scaler", "trainer_state")

#: Weight suffixes of a folder, in order of preference when a folder holds several formats.
FOLDER_PREFERENCE = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".gguf", ".npz")

#: The file names transformers (and diffusers) read in a folder: beside one of them, other files of that format
#: are variants (``model.fp16.safetensors``) or other layouts of the same weights (Mistral's
#: ``consolidated.safetensors``), not more shards, and are left alone as the libraries leave them.
CANONICAL = ("model", "pytorch_model", "diffusion_pytorch_model")

#: Side files whose presence makes a folder one model rather than a directory of loose files.
MODEL_MARKERS = ("config.json", "adapter_config.json", "model_index.json")


def _reader(suffix: str):
    module, attr = READERS[suffix].split(":")
    return getattr(importlib.import_module(module), attr)


def weight_files(folder: Path) -> list[Path]:
    """The files holding a folder's weights (all shards of the preferred format), or ``[]``."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    for suffix in FOLDER_PREFERENCE:
        indexes = sorted(p for p in files if p.name.endswith(f"{suffix}.index.json"))
        if indexes:
            return shard_files(folder, indexes[0])
        found = sorted(p for p in files if p.suffix == suffix and not p.stem.startswith(NOT_WEIGHTS))
        canonical = [p for p in found if p.stem in CANONICAL]
        if canonical:
            return canonical[:1]
        if found:
            return found
    return []


#: A Hugging Face cache ref holds a commit hash (40 hex digits): more bytes than this are not one.
REF_BYTES = 128


def _is_cache_repo(folder: Path) -> bool:
    """Whether ``folder`` is laid out as a Hugging Face cache repository (``models--org--name/snapshots/``),
    also under a link of another name."""
    name = folder.resolve().name if folder.is_symlink() else _own_name(folder)
    return name.startswith("models--") and (folder / "snapshots").is_dir()


def _own_name(folder: Path) -> str:
    """A folder's name as written, also for ``.`` or ``..`` (the name of the folder they stand for; a link
    keeps its own name, as a scan from above would see it)."""
    return folder.name if folder.name not in ("", ".", "..") else Path(os.path.abspath(folder)).name


def cache_revision(folder: Path) -> Path | None:
    """The snapshot a Hugging Face cache repository folder (``models--org--name``) stands for: the one its
    ``refs/main`` names, else its only snapshot; None for any other folder, or when neither is there."""
    if not _is_cache_repo(folder):
        return None
    snapshots = folder / "snapshots"
    commit, ref = "", folder / "refs" / "main"
    if ref.is_file():  # a regular file, read only as far as a hash goes (not a FIFO, not /dev/zero)
        try:
            with ref.open("rb") as f:
                commit = f.read(REF_BYTES).decode("ascii", errors="replace").strip()
        except OSError:
            pass
    if re.fullmatch(r"[0-9A-Za-z]+", commit) and (snapshots / commit).is_dir():  # a hash, never a path
        return snapshots / commit
    found = [p for p in snapshots.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return found[0] if len(found) == 1 else None


def in_cache(folder: Path) -> bool:
    """Whether ``folder`` is a Hugging Face cache repository folder or lies inside one (a snapshot, a
    component subfolder of one), also when reached through a link: their files are links into the cache's
    blobs, the cache's and not ours to write."""
    real = Path(folder).resolve()
    return any(_is_cache_repo(p) for p in (Path(folder), real, *real.parents))


def is_model_folder(folder: Path) -> bool:
    """A folder that is one model: weights beside a config, an adapter config, or a sharding index (or a
    Hugging Face cache repository folder whose current snapshot is one)."""
    if not folder.is_dir():
        return False
    if (snapshot := cache_revision(folder)) is not None:
        return is_model_folder(snapshot)
    names = {p.name for p in folder.iterdir()}
    marked = any(m in names for m in MODEL_MARKERS) or any(n.endswith(".index.json") for n in names)
    try:  # links to missing weight files (a cleaned cache): a model all the same, whose loading says so
        return marked and bool(weight_files(folder) or _dangling_weights(folder))
    except BadInputError:  # a damaged sharding index or a missing shard: a model all the same, whose loading
        return marked      # names the problem (a scan stopped at it, --skip-unreadable included)


def models_inside(folder: Path) -> list[str]:
    """Model folders directly inside the model folder ``folder`` (a Trainer's ``out/checkpoint-500``, besides
    its final weights in ``out``): a scan does not enter a model, so these are read only when given. A
    model assembled from sub-folders (sentence-transformers' ``modules.json``, a diffusers pipeline's
    ``model_index.json``) has parts there, not other models."""
    if not folder.is_dir() or cache_revision(folder) is not None:  # a cache repository's snapshots are its own
        return []
    parts = _component_folders(folder)
    return sorted(p.name for p in folder.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in parts and is_model_folder(p))


def _component_folders(folder: Path) -> set[str]:
    """Sub-folders that are parts of the model in ``folder``: sentence-transformers modules (``modules.json``
    paths such as ``2_Dense``) and a diffusers pipeline's components (``model_index.json`` keys)."""
    parts: set[str] = set()
    try:
        modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
        parts |= {str(m.get("path", "")) for m in modules if isinstance(m, dict)}
        index = json.loads((folder / "model_index.json").read_text()) if (folder / "model_index.json").is_file() else {}
        parts |= {str(k) for k in index} if isinstance(index, dict) else set()
    except (OSError, ValueError, TypeError, AttributeError):  # a damaged side file: warn of every model inside
        pass
    return parts


def model_files(folder: Path) -> set[Path]:
    """The resolved weight files a model folder is read from (its current snapshot's, for a cache
    repository); empty when there are none or they cannot be listed."""
    try:
        return {f.resolve() for f in weight_files(cache_revision(folder) or folder)}
    except (OSError, BadInputError):
        return set()


def _dangling_weights(folder: Path) -> list[str]:
    """Names of the folder's weight files that are links to missing files."""
    return sorted(p.name for p in folder.iterdir() if _is_weight_file(p) and p.is_symlink() and not p.exists())


def load_model(path: str | os.PathLike[str], model_id: str | None = None) -> Model:
    """Open the model at ``path`` (a weight file, a model folder or a zip of one).

    ``model_id`` defaults to the path exactly as given. Raises :class:`BadInputError` naming the path
    when it does not exist, is empty, or is not a model in a format ancestree reads.
    """
    p = Path(path)
    model_id = str(path) if model_id is None else model_id
    if not p.exists():
        if p.is_symlink():  # a dangling link or a loop of links: Path.exists() says False for both
            raise BadInputError(path, "a symbolic link that leads to no file (its target is missing, or links loop)")
        raise BadInputError(path, "no such file or folder")
    if p.is_dir():
        try:
            return _load_folder(p, model_id)
        except OSError as exc:  # an unreadable file inside (permissions): name it
            raise BadInputError(getattr(exc, "filename", None) or path, f"cannot read ({exc.strerror or _one_line(exc)})") from None
    suffix = p.suffix.lower()
    if suffix not in READERS:
        known = ", ".join(sorted(READERS))
        raise BadInputError(path, f"unknown model format {suffix or '(no extension)'!r}; expected one of {known} or a model folder")
    if p.stat().st_size == 0:
        raise BadInputError(path, "empty file (0 bytes)")
    try:
        return _reader(suffix)(p, model_id)
    except BadInputError:
        raise
    except READ_ERRORS as exc:  # a reader let a library's error through: still one line naming the file
        raise BadInputError(path, f"cannot read as {suffix[1:]}: {_one_line(exc)}") from None


#: What libraries raise on damaged files (the readers' parsers add struct's and zlib's); anything else is a
#: bug in ancestree and stays an internal error.
READ_ERRORS: tuple[type[BaseException], ...] = (*DAMAGED_FILE, struct.error, zlib.error)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{exc.__class__.__name__}: {text[:200]}"


def _load_folder(folder: Path, model_id: str) -> Model:
    folder = cache_revision(folder) or folder
    if (folder / "adapter_config.json").is_file():
        from ancestree.io.peft import PeftAdapterModel

        return PeftAdapterModel(folder, model_id)
    files = weight_files(folder)
    if not files and _is_cache_repo(folder):
        raise BadInputError(folder, "a Hugging Face cache folder whose current revision is unknown (no refs/main "
                                    "naming one of its snapshots): give one of its snapshots/<hash> folders")
    dangling = _dangling_weights(folder)
    if not files and dangling:  # the Hugging Face cache after its blobs were deleted, or an interrupted download
        raise BadInputError(folder, f"its weight files are links to missing files ({', '.join(dangling[:3])}"
                                    f"{' ...' if len(dangling) > 3 else ''}): an incomplete download or a cleaned cache")
    if not files:
        # a folder of models given as one (a hub mirror, the cache): say how to read what is below it
        raise BadInputError(folder, f"folder holds no weight files ({', '.join(FOLDER_PREFERENCE)})"
                            + ("; it holds models below it: use --scan to read them all" if _models_below(folder) else ""))
    from ancestree.io.peft import ADAPTER_FILES

    if any(f.name in ADAPTER_FILES for f in files):  # read as a model it would be one of LoRA factors, unrelated to all
        raise BadInputError(folder, "holds PEFT adapter weights but no adapter_config.json (its rank scaling and base "
                                    "are in that file): put it back beside them")
    return open_folder(folder, model_id, lambda f: load_model(f, f"{model_id}/{f.name}"), files)


def _is_weight_file(path: Path) -> bool:
    """A file a scan takes for a model: a format ancestree reads, not training state beside the weights."""
    return path.suffix.lower() in READERS and not path.stem.startswith(NOT_WEIGHTS)


def _models_below(folder: Path, depth: int = 2) -> bool:
    """Whether a model lies at most ``depth`` folders below ``folder`` (``org/name`` of a hub mirror), looked
    at only as far as that and never failing: it words an error, it must not replace it."""
    try:
        for child in folder.iterdir():
            if child.is_dir() and not child.name.startswith("."):
                if is_model_folder(child) or (depth > 1 and _models_below(child, depth - 1)):
                    return True
            elif _is_weight_file(child) and child.is_file():  # not a link to a missing file
                return True
    except (OSError, BadInputError):
        pass
    return False


def scan_models(root: str | os.PathLike[str]) -> Iterator[tuple[str, Path]]:
    """Every model below ``root`` as ``(id relative to root, path)``; a model folder is not searched further.

    A link to a folder is followed only to a folder outside ``root`` that the scan has not met: in training
    output links name a folder scanned anyway (``latest -> step200``) or an ancestor (a loop), while a hand-made
    folder of links to models elsewhere is a common way to gather them. Links to files are followed, as the
    Hugging Face cache needs (``snapshots/<hash>/model.safetensors -> ../../blobs/<sha>``); ``root`` itself
    may be a link. A cache repository folder (``models--org--name``) is one model, its current revision
    (:func:`cache_revision`); its other snapshots follow as models of their own."""
    root = Path(root)
    if not root.is_dir():
        raise BadInputError(root, "not a folder (models are searched below a folder)")
    if is_model_folder(root):  # the contract's id: the path relative to the folder scanned, "." (see scan_folders)
        yield from _model_folder(root, root, {root.resolve()})
        return
    yield from _scan(root, root, {root.resolve()})


def _model_folder(root: Path, folder: Path, seen: set[Path]) -> Iterator[tuple[str, Path]]:
    """A model folder found by a scan, and for a cache repository its snapshots other than the current one;
    ids are relative to ``root``."""
    yield folder.relative_to(root).as_posix(), folder
    current = cache_revision(folder)
    if current is None:
        return
    seen.add(current.resolve())
    for snapshot in sorted((folder / "snapshots").iterdir()):
        if snapshot.resolve() not in seen and is_model_folder(snapshot):
            seen.add(snapshot.resolve())
            yield snapshot.relative_to(root).as_posix(), snapshot


def scan_folders(folders: Iterable[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """:func:`scan_models` over several folders, each model once (by its resolved path). An id found below two
    folders (``runA/final`` and ``runB/final`` both give ``final``) is named with its folder, as given, in front,
    so that every id names one model. A folder holding no model is :class:`BadInputError`."""
    found: list[tuple[str, str, Path]] = []
    reached: set[Path] = set()
    for folder in folders:
        models = list(scan_models(folder))
        if not models:  # a typo'd or emptied folder: said by name, not as "no models given"
            raise BadInputError(folder, "no model found below this folder (weight files or model folders)")
        for mid, path in models:
            if path.resolve() not in reached:  # overlapping folders: the first name wins
                reached.add(path.resolve())
                found.append((str(folder), mid, path))
    counts = Counter(mid for _, mid, _ in found)
    # two scanned folders that are models themselves are both "." (the contract's relative id): named as given
    return [(mid if counts[mid] == 1 else Path(folder, mid).as_posix() if mid != "." else Path(folder).as_posix(), path)
            for folder, mid, path in found]


def _outside(target: Path, top: Path) -> bool:
    """Whether a resolved folder lies outside ``top``: neither below it nor one of its ancestors."""
    return target != top and top not in target.parents and target not in top.parents


def _scan(root: Path, folder: Path, seen: set[Path]) -> Iterator[tuple[str, Path]]:
    """``seen`` holds the resolved folders met so far: each is scanned once, whatever the links to it."""
    top = root.resolve()
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            target = child.resolve()
            if target in seen or (child.is_symlink() and not _outside(target, top)):
                continue  # the same models again, or a loop back up the tree (see scan_models)
            seen.add(target)
            if is_model_folder(child):
                yield from _model_folder(root, child, seen)
            else:
                yield from _scan(root, child, seen)
        elif _is_weight_file(child):
            yield child.relative_to(root).as_posix(), child

