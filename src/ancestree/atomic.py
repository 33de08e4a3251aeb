"""Write files all at once or not at all, so an error never leaves a half-written output behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ancestree.errors import BadInputError


def check_writable(target: str | Path) -> None:
    """Fail now, with a one-line error, if ``target`` cannot be written (a folder, under a file, a folder
    we may not write to): commands call it before long work rather than lose that work at the end.
    Writes nothing (no folder is created yet)."""
    target = Path(target)
    if not str(target).strip():
        raise BadInputError(None, "an output file name is empty")
    if target.is_dir():
        raise BadInputError(target, "is a folder: give a file name to write to")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(target, f"cannot write here ({parent} is a file)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(target, f"cannot write here (no permission to write in {parent})")


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds."""
    target = Path(target)
    check_writable(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise BadInputError(target, f"cannot write here ({exc.strerror or exc.__class__.__name__})") from None
    os.close(fd)
    tmp_path = Path(tmp)
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


def write_text(target: str | Path, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: str | Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
