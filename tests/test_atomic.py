"""Atomic writes: all or nothing, and the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ancestree.atomic import atomic_path, write_text


def test_failed_block_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_new_file_gets_umask_permissions_and_replacement_keeps_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "x")
        assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("a")
        kept.chmod(0o600)
        write_text(kept, "b")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_text() == "b"
    finally:
        os.umask(old)


def test_an_input_that_cannot_be_looked_at_does_not_stop_the_check(tmp_path, monkeypatch) -> None:
    """`index export -o` checks the output against every indexed path: one the user may not stat (another
    user's folder, NFS) raised PermissionError (exit 1, no export)."""
    from pathlib import Path

    from ancestree.atomic import check_not_an_input

    real = Path.is_dir

    def denied(self):
        if "private" in str(self):
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "is_dir", denied)
    check_not_an_input(tmp_path / "out.json", [tmp_path / "private" / "model"])  # no error: not inside it
