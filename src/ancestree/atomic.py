"""Write files all at once or not at all, so an error never leaves a half-written output behind."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ancestree.errors import BadInputError


def check_writable(target: str | Path) -> None:
    """Fail now, with a one-line error, if ``target`` cannot be written (a folder, under a file, a folder
    we may not write to): commands call it before long work rather than lose that work at the end.
    Writes nothing (no folder is created yet)."""
    target = Path(target)
    if not str(target).strip():
        raise BadInputError(None, "an output file name is empty")
    if str(target) == "-":
        return  # standard output (or a file "./-", which the write itself checks)
    if _special(target):  # written through, as a shell's `>` writes: the folder holding it is not written
        if not os.access(target, os.W_OK):
            raise BadInputError(target, "cannot write here (no permission to write to it)")
        return
    if target.is_dir():
        raise BadInputError(target, "is a folder: give a file name to write to")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(target, f"cannot write here ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(target, f"cannot write here (no permission to write in {parent})")


def check_not_an_input(target: str | Path, inputs: Iterable[str | Path], option: str = "output") -> None:
    """Refuse an output that is one of ``inputs`` or lies inside an input folder (a model folder, a zoo).

    A slip of tab completion (``-o b.safetensors``) would otherwise replace a model with a report. Paths are
    compared resolved (relative parts, symlinks) and, for files that exist, by identity (hard links).
    Call it before any work, with every path the command reads (models found by ``--scan`` included)."""
    if not target or not str(target).strip() or str(target) == "-":
        return  # check_writable names an empty output; "-" is standard output
    out = Path(target).resolve()
    for src in inputs:
        source = Path(src).resolve()
        if out == source or _same_file(out, source):
            raise BadInputError(target, f"{option} is one of the inputs (would overwrite it)")
        if out.is_relative_to(source) and _is_dir(source):
            raise BadInputError(target, f"{option} lies inside the input folder {src} (would change it)")


def _is_dir(path: Path) -> bool:
    """Whether ``path`` is a folder; False where it cannot be looked at (another user's folder, over NFS):
    the output cannot be written there either, which :func:`check_writable` says."""
    try:
        return path.is_dir()
    except OSError:
        return False


def check_output(target: str | Path, inputs: Iterable[str | Path] = (), option: str = "output") -> None:
    """Every check an output gets before a command's work: not one of (or inside) its inputs, and writable."""
    check_not_an_input(target, inputs, option)
    check_writable(target)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing paths are one file (a hard link is not caught by comparing names)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


def _special(target: Path) -> bool:
    """Whether ``target`` exists and is no regular file or folder (a device such as /dev/null, a FIFO, a
    socket), or names one of this process's open descriptors (``/dev/stdout`` redirected to a log): output
    goes through to it; replacing it by a file would destroy it (as root, /dev/null too; a log's lines)."""
    if str(target).startswith(("/dev/fd/", "/dev/std", "/proc/self/fd/")) or os.path.realpath(target).startswith("/proc/"):
        return True
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _std_stream(target: Path) -> TextIO | None:
    """``sys.stdout`` or ``sys.stderr`` when ``target`` is the very file (device and inode) one of them writes to."""
    try:
        st = os.stat(target)
    except OSError:
        return None
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        try:
            held = os.fstat(fd)
        except OSError:
            continue
        if (held.st_dev, held.st_ino) == (st.st_dev, st.st_ino) and hasattr(stream, "buffer"):
            return stream
    return None


@contextmanager
def _written_through(target: Path) -> Iterator[Path]:
    """Yield a temporary path; if the block succeeds its bytes go to ``target`` ("-": standard output)."""
    handle, name = tempfile.mkstemp(prefix="ancestree-out-")
    os.close(handle)
    tmp_path = Path(name)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as src:
            stream = sys.stdout if str(target) == "-" else _std_stream(target)
            if stream is not None:  # through the process's own stream: a second handle on `> log` kept
                stream.flush()      # another position, and stderr lines written later overwrote the graph
                shutil.copyfileobj(src, stream.buffer)
                stream.buffer.flush()
            else:  # appended, as a shell's `>>` opened it (a FIFO or device takes it alike)
                with open(target, "ab") as out:
                    shutil.copyfileobj(src, out)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    A symbolic link keeps being one: the file it names is replaced. ``-`` is standard output (``./-`` a file
    of that name), and a device or FIFO (``/dev/null``, a pipe another program reads, ``/dev/stdout``) is
    written through, not replaced."""
    raw = target
    target = Path(target)
    if raw == "-" or _special(target):
        target = Path("-") if raw == "-" else target
        check_writable(target)
        with _written_through(target) as tmp_path:
            yield tmp_path
        return
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    check_writable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _temp_beside(target)
    except OSError as exc:
        raise BadInputError(target, f"cannot write here ({exc.strerror or exc.__class__.__name__})") from None
    try:
        yield tmp_path
        os.chmod(tmp_path, _mode_for(target))
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _mode_for(target: Path) -> int:
    """The replaced file's permissions, or what ``open()`` would give a new file (mkstemp makes 0600)."""
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_all(files: dict[Path, str]) -> None:
    """Write several text files all or none: every new text is staged beside its target and every old file
    kept under a second name (a hard link: no space needed) first; then each target is replaced. If one
    replacement fails, or the run is interrupted, the targets already replaced get their old files back by
    renaming. A one-line :class:`BadInputError` names the file that failed."""
    staged: dict[Path, Path] = {}
    kept: dict[Path, Path | None] = {}
    done: list[Path] = []
    current = None
    try:
        for target, text in files.items():
            current = target = Path(target)
            check_writable(target)
            staged[target] = _temp_beside(target)
            staged[target].write_text(text, encoding="utf-8")
            os.chmod(staged[target], _mode_for(target))
            kept[target] = _keep(target)
        for target, tmp in staged.items():
            current = target
            os.replace(tmp, target)
            done.append(target)
    except BaseException as exc:
        stuck = _put_back(reversed(done), kept)
        if not isinstance(exc, OSError):
            raise
        outcome = ("no file of this run was changed" if not stuck else
                   "and these could not be put back, their old files are kept beside them: "
                   + ", ".join(f"{t} (old: {k.name})" for t, k in stuck))
        raise BadInputError(current, f"cannot write ({exc.strerror or exc.__class__.__name__}); {outcome}") from None
    finally:
        for path in [*staged.values(), *(k for k in kept.values() if k is not None)]:
            path.unlink(missing_ok=True)


def _put_back(targets: Iterable[Path], kept: dict[Path, Path | None]) -> list[tuple[Path, Path]]:
    """Give ``targets`` their kept files back (renames only: they work on a full disk too); returns those
    that failed, whose kept file is then left in place (taken out of ``kept``, so it is not deleted)."""
    stuck = []
    for target in targets:
        old = kept[target]
        try:
            if old is None:
                target.unlink(missing_ok=True)
            else:
                os.replace(old, target)
        except OSError:
            if old is not None:
                stuck.append((target, old))
                kept[target] = None
    return stuck


def _temp_beside(target: Path) -> Path:
    """A new empty file beside ``target`` (hidden, ``.part``): where a replacement is written first."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _keep(target: Path) -> Path | None:
    """A second name for ``target``'s current file (None when there is none yet)."""
    if not target.is_file():
        return None
    keep = _temp_beside(target)
    keep.unlink()
    try:
        os.link(target, keep)  # the same bytes under another name
    except OSError:  # no hard links here (FAT, some network file systems): a copy
        keep.write_bytes(target.read_bytes())
    return keep


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
