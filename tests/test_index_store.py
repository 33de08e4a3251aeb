"""The atlas's SQLite store and its ingestion: transactions, skipping indexed models, resuming after SIGKILL."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ancestree.errors import BadInputError
from ancestree.fingerprint import fingerprint
from ancestree.index import Atlas, Edge, IndexStore
from ancestree.index.ingest import ingest
from ancestree.index.neighbours import NeighbourIndex, embed
from ancestree.index.store import SCHEMA_VERSION
from conftest import write_hf_folder


def family(root: Path, name: str, seed: int, children: int, size: int = 48) -> list[Path]:
    """A root model and ``children`` fine-tune-like copies (root + 5% noise): one family of related models."""
    rng = np.random.default_rng(seed)
    base = {f"layer.{i}.weight": rng.standard_normal((size, size)).astype(np.float32) for i in range(3)}
    paths = [write_hf_folder(root / f"{name}-root", base)]
    for c in range(children):
        tensors = {k: v + 0.05 * rng.standard_normal(v.shape).astype(np.float32) for k, v in base.items()}
        paths.append(write_hf_folder(root / f"{name}-ft{c}", tensors))
    return paths


def test_store_round_trip_and_transactions(tmp_path: Path) -> None:
    paths = family(tmp_path / "zoo", "a", 0, 1)
    fps = [fingerprint(p, model_id=p.name) for p in paths]
    with IndexStore(tmp_path / "x.db") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        for i, fp in enumerate(fps):
            store.add_model(fp, str(paths[i]), f"hash{i}", f"stat{i}", None)
        # a failing transaction leaves nothing behind
        with pytest.raises(RuntimeError), store.transaction() as cur:
            store.replace_recovered([fps[0].id, fps[1].id], [Edge(fps[0].id, fps[1].id, "finetune", 0.9)],
                                    [(fps[0].id, [fps[0].id, fps[1].id])], cur)
            raise RuntimeError("boom")
        assert store.edges() == [] and store.unplaced() == sorted(fp.id for fp in fps)
        with store.transaction() as cur:
            store.replace_recovered([fps[0].id, fps[1].id], [Edge(fps[0].id, fps[1].id, "finetune", 0.9)],
                                    [(fps[0].id, [fps[0].id, fps[1].id])], cur)
        assert store.edges() == [Edge(fps[0].id, fps[1].id, "finetune", 0.9, "recovered")]
        assert store.unplaced() == [] and store.trees()[0]["root"] == fps[0].id
        back = store.fingerprints([fps[1].id])[0]
        assert back.content_key == fps[1].content_key
        assert np.array_equal(back.tensors[0].sketch, fps[1].tensors[0].sketch)
        assert set(store.known_stat_keys()) == {("a-root", "stat0"), ("a-ft0", "stat1")}
        # foreign keys hold: an edge to a model that does not exist is refused
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as cur:
            cur.execute("INSERT INTO edges VALUES (1, 999, 'finetune', 0.5, 'recovered')")
    with IndexStore(tmp_path / "x.db", read_only=True) as ro:
        assert ro.count() == 2
        with pytest.raises(PermissionError):
            ro.add_alias("x", 1, None)


def test_not_an_index_is_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BadInputError, match="junk.db"):
        IndexStore(junk)
    with pytest.raises(BadInputError, match="no such index"):
        IndexStore(tmp_path / "missing.db", read_only=True)
    # an index written by another schema version (here: an older aliases table) is refused by its version
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                           "INSERT INTO meta VALUES ('schema', '2');"
                           "CREATE TABLE aliases (path TEXT PRIMARY KEY, model INTEGER, stat_key TEXT);")
    for read_only in (False, True):
        with pytest.raises(BadInputError, match=f"schema version 2, this ancestree reads {SCHEMA_VERSION}"):
            IndexStore(old, read_only=read_only)


def test_embeddings_find_relatives_not_strangers(tmp_path: Path) -> None:
    paths = family(tmp_path / "zoo", "a", 1, 3) + family(tmp_path / "zoo", "b", 2, 3)
    fps = [fingerprint(p, model_id=p.name) for p in paths]
    nn = NeighbourIndex().fit([f.id for f in fps], np.stack([embed(f) for f in fps]))
    for fp in fps:
        found = [name for name, _ in nn.query(embed(fp), k=len(fps))]
        assert set(found) == {f.id for f in fps if f.id[0] == fp.id[0]}, fp.id  # the same family, and all of it


def test_ingest_skips_known_stat_keys(tmp_path: Path) -> None:
    path = family(tmp_path / "zoo", "a", 3, 0)[0]
    first = ingest("a", str(path))
    assert first.status == "new" and first.fingerprint and first.file_hash
    assert ingest("a", str(path), {("a", first.stat_key): (None, None)}).status == "known"
    assert ingest("b", str(path), {("a", first.stat_key): (None, None)}).status == "new"  # the same files under another name
    bad = ingest("nope", str(tmp_path / "nope"))
    assert bad.status == "bad" and "no such file" in bad.error


def _count(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT count(*) FROM models").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def test_sigkill_mid_run_loses_nothing_committed(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    for f in range(6):
        family(zoo, f"f{f}", 10 + f, 5, size=128)
    total = 36
    db = tmp_path / "atlas.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ancestree", "index", "add", "--scan", str(zoo), "--db", str(db), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while _count(db) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    committed = _count(db)
    assert 3 <= committed < total, f"kill came too late or too early ({committed} committed)"
    with Atlas(db) as atlas:
        before = {r["name"] for r in atlas.ls()}
        assert len(before) == committed and not any(r["placed"] for r in atlas.ls())
        assert atlas.store.runs()[-1]["status"] == "running"  # the killed run never finished
        report = atlas.add(scan=[zoo])
        assert set(report.skipped) == before  # committed models are not fingerprinted again
        assert len(report.added) == total - committed and not report.bad
        rows = atlas.ls()
        assert len(rows) == total and all(r["placed"] for r in rows)
        # the six families come back as six trees of six models
        assert sorted(t["size"] for t in atlas.store.trees()) == [6] * 6


def test_each_model_is_committed_as_it_is_read_and_never_fingerprinted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SIGKILL test above kills after the third commit, so it cannot tell commits made while reading from
    commits made after reading everything (a run that read all models first lost them all when killed), nor
    a resumed run that fingerprints the committed models again from one that skips them."""
    import ancestree.index.atlas as atlas_module
    import ancestree.index.ingest as ingest_module

    zoo = tmp_path / "zoo"
    for f in range(3):
        family(zoo, f"f{f}", 20 + f, 4)
    real_ingest, real_fingerprint = atlas_module.ingest_local, ingest_module.compute_fingerprint

    def stops_after_four(items, known, threads=1):  # the run dies while reading the fifth model
        for i, result in enumerate(real_ingest(items, known, threads)):
            if i == 4:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(atlas_module, "ingest_local", stops_after_four)
    with Atlas(tmp_path / "atlas.db") as atlas, pytest.raises(KeyboardInterrupt):
        atlas.add(scan=[zoo])
    monkeypatch.setattr(atlas_module, "ingest_local", real_ingest)
    read: list[str] = []
    monkeypatch.setattr(ingest_module, "compute_fingerprint", lambda model: read.append(model.id) or real_fingerprint(model))
    with Atlas(tmp_path / "atlas.db") as atlas:
        assert len(atlas.ls()) == 4
        report = atlas.add(scan=[zoo])
        assert len(report.skipped) == 4 and len(read) == len(report.added) == 15 - 4 and len(atlas.ls()) == 15


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` (a file or folder) made read-only for real: by its mode, or for root (whom modes do not stop)
    with the immutable attribute; skips when neither stops a write here."""
    mode = path.stat().st_mode
    immutable = os.geteuid() == 0 and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    if not immutable:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        try:
            (path / "probe").touch() if path.is_dir() else path.open("ab").close()
        except OSError:
            yield
        else:
            pytest.skip("cannot make a file read-only here")
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


def test_an_index_that_cannot_be_written_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ancestree.cli.main import run

    model, child = family(tmp_path / "zoo", "a", 4, 1)
    db = tmp_path / "ro" / "atlas.db"
    with Atlas(db) as atlas:
        atlas.add([model])
    for name in ("atlas.db-wal", "atlas.db-shm"):  # closed cleanly: the journal files are gone
        assert not (db.parent / name).exists()
    # its folder (where SQLite makes the -wal and -shm files), for it or for a new index; the file itself
    cases = [(db.parent, db), (db.parent, db.parent / "new.db"), (db, db)]
    for locked, target in cases:
        with unwritable(locked):
            with pytest.raises(SystemExit) as exit_:
                run(["index", "add", str(child), "--db", str(target)])
            err = capsys.readouterr().err
            assert exit_.value.code == 2 and f"{target}: cannot be written" in err, err
            assert "not an ancestree index" not in err and len(err.strip().splitlines()) == 1
            if target == db:  # reading it still works
                with Atlas(db, read_only=True) as atlas:
                    assert [r["name"] for r in atlas.ls()] == [str(model)]
