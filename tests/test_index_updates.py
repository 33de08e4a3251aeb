"""Keeping one index file up to date: models re-uploaded under their name, aliases, messages, pipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ancestree.fingerprint import fingerprint
from ancestree.index import IndexStore
from conftest import small_tensors, write_hf_folder


def test_output_piped_into_head_exits_quietly(tmp_path: Path) -> None:
    """`ancestree index ls | head -1`: the reader goes away after one line; no complaint, status 0 or 141."""
    fp = fingerprint(write_hf_folder(tmp_path / "m", small_tensors()), model_id="m")
    with IndexStore(tmp_path / "big.db") as store:  # ~110 KB of table: more than a pipe holds
        for i in range(1200):
            fp.id = f"org/a-model-with-a-long-name-{i:05d}"
            store.add_model(fp, str(tmp_path / "m"), f"hash{i}", None, None)
    proc = subprocess.Popen([sys.executable, "-m", "ancestree", "index", "ls", "--db", str(tmp_path / "big.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline()  # what `head -1` reads, then it closes the pipe
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(30) in (0, 141) and err == "", err
