"""The atlas on disk: one SQLite file (WAL journal, foreign keys, one transaction per write).

Tables:

* ``models``: one row per indexed model: its id, path, file hash (sha256 over its files' bytes), content
  key (the fingerprint's key of the learned values), format, parameters, what it declares (base model,
  relation), its tree and whether it has been placed in the graph yet;
* ``prints``: each model's fingerprint as a blob (the ``.npz`` bytes of :mod:`ancestree.fingerprint.store`),
  so the graph can be rebuilt without reading a file, and its embedding for nearest-neighbour search. They
  live apart from ``models`` because SQLite rewrites a whole row on UPDATE: placing a tree of models would
  otherwise copy every member's fingerprint (~200 KB each) to change one integer;
* ``edges``: ``parent -> child`` with relation and confidence, ``source`` = ``declared`` (a model card /
  adapter config says so) or ``recovered`` (read from the weights);
* ``trees``: one row per connected component of the recovered graph, with its root and size;
* ``runs``: one row per ``index add`` / ``rebuild`` (what ran, when, how many models, how it ended);
* ``aliases``: other paths (and the names they were given) found holding the very same files as an
  indexed model: indexed once, under the first name.

Every model is committed on its own, so a run killed mid-way (even with SIGKILL) loses only the model
being written; the next run finds the committed ones by their file hash and continues.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ancestree.errors import BadInputError
import numpy as np

from ancestree.fingerprint import FINGERPRINT_VERSION, Fingerprint, from_bytes, to_bytes
from ancestree.fingerprint.store import stored_version
from ancestree.fingerprint.types import OLDEST_READABLE
from ancestree.index.neighbours import DIM, embed, from_blob, to_blob

#: Bumped when the schema changes; an index of another version is refused rather than misread.
SCHEMA_VERSION = 3

#: Default index file (``--db``).
DEFAULT_DB = "ancestree.db"

#: SQLite error names (and their extended forms) saying the file, or the folder its WAL journal goes into,
#: cannot be opened or written: a read-only file, folder or file system, not something else than an index.
UNWRITABLE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")

#: SQLite error names saying another connection holds the file.
BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    status TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    added INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS trees (
    id INTEGER PRIMARY KEY,
    root INTEGER REFERENCES models(id) ON DELETE SET NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL,
    file_hash TEXT NOT NULL UNIQUE,
    stat_key TEXT,
    content_key TEXT NOT NULL,
    format TEXT NOT NULL,
    parameters INTEGER NOT NULL,
    declared_base TEXT,
    declared_relation TEXT,
    tree INTEGER REFERENCES trees(id) ON DELETE SET NULL,
    placed INTEGER NOT NULL DEFAULT 0,
    added REAL NOT NULL,
    run INTEGER REFERENCES runs(id) ON DELETE SET NULL
);
CREATE TABLE IF NOT EXISTS prints (
    model INTEGER PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    fingerprint BLOB NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS models_content ON models(content_key);
CREATE INDEX IF NOT EXISTS models_stat ON models(stat_key);
CREATE INDEX IF NOT EXISTS models_tree ON models(tree);
CREATE INDEX IF NOT EXISTS models_placed ON models(placed);
CREATE TABLE IF NOT EXISTS edges (
    parent INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    child INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    relation TEXT NOT NULL,
    confidence REAL NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('declared', 'recovered')),
    PRIMARY KEY (parent, child, source)
);
CREATE INDEX IF NOT EXISTS edges_child ON edges(child);
CREATE TABLE IF NOT EXISTS aliases (
    path TEXT PRIMARY KEY,
    model INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    stat_key TEXT,
    name TEXT
);
CREATE INDEX IF NOT EXISTS aliases_stat ON aliases(stat_key);
CREATE INDEX IF NOT EXISTS aliases_name ON aliases(name);
"""

#: The columns of a model row that are cheap to read (everything but the fingerprint blob).
MODEL_COLUMNS = ("id", "name", "path", "file_hash", "content_key", "format", "parameters", "declared_base",
                 "declared_relation", "tree", "placed", "added")


PRINTS = "SELECT m.name, p.fingerprint FROM models m JOIN prints p ON p.model = m.id"


def _forget_alias_name(cur: sqlite3.Cursor, name: str) -> None:
    """A name that now names a model of its own is no other model's alias any more: a stale alias row kept
    its old files' stat (a later scan skipped the name as holding them) and was handed the name back on a
    re-upload of the other model (a UNIQUE failure that stopped every later run)."""
    cur.execute("DELETE FROM aliases WHERE name = ?", (name,))


@dataclass(frozen=True)
class Edge:
    """One edge of the atlas, by model names."""

    parent: str
    child: str
    relation: str
    confidence: float
    source: str = "recovered"

    def record(self) -> dict[str, Any]:
        return {"parent": self.parent, "child": self.child, "relation": self.relation,
                "confidence": round(float(self.confidence), 4), "source": self.source}


class IndexStore:
    """An atlas file. ``read_only`` opens it without the right to write (what the web server uses).

    >>> store = IndexStore("atlas.db")             # doctest: +SKIP
    >>> store.count()                              # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str] = DEFAULT_DB, read_only: bool = False, timeout: float = 30.0,
                 create: bool = True) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.create = create
        if self.path.is_dir():
            raise BadInputError(path, "is a folder, not an index file")
        if (read_only or not create) and not self.path.is_file():
            raise BadInputError(path, "no such index (create one with `ancestree index add`)")
        self.conn = self._connect(timeout)
        if not read_only:
            self._create()
        self._check_version()

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        """Never touch another program's SQLite database (nor an empty file unless creating): reads only."""
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" in names:
            return
        if names:
            conn.close()
            raise BadInputError(self.path, f"is a SQLite database of something else (tables: {', '.join(sorted(names)[:3])}), "
                                           "not an ancestree index")
        if not self.create:
            conn.close()
            raise BadInputError(self.path, "is empty, not an ancestree index (create one with `ancestree index add`)")

    # -- connection ---------------------------------------------------------------------------------
    def _connect(self, timeout: float) -> sqlite3.Connection:
        try:
            if self.read_only:
                conn = self._connect_read_only(timeout)
            else:
                self._make_folder()
                conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
                self._refuse_foreign(conn)  # before WAL mode: that pragma is written into the file
                conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable across process kills in WAL mode (only a power cut can lose the last commit).
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.row_factory = sqlite3.Row
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise self._problem(exc, "not an ancestree index") from None
        return conn

    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only file system, a file where a folder should be
            raise BadInputError(self.path.parent, f"cannot make the index's folder ({exc.strerror})") from None

    def _problem(self, exc: sqlite3.Error, otherwise: str) -> BadInputError:
        """The one-line problem of an SQLite error met while opening the index: cannot be written (or read),
        held by another process, or ``otherwise`` (the error says the file is no index we can use)."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(UNWRITABLE):
            if self.read_only:
                return BadInputError(self.path, f"cannot be read ({exc})")
            return BadInputError(self.path, f"cannot be written ({exc}; the index writes the file and, beside it, "
                                            "its -wal and -shm files)")
        if name.startswith(BUSY):
            return BadInputError(self.path, f"is held by another process ({exc})")
        return BadInputError(self.path, f"{otherwise} ({exc})")

    def _connect_read_only(self, timeout: float) -> sqlite3.Connection:
        """``mode=ro``; in a folder we may not write to (no WAL shared-memory file can be made), the file is
        opened as immutable: nothing else can be writing to it there either."""
        uri = self.path.resolve().as_uri()
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, check_same_thread=False)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            if os.access(self.path.parent, os.W_OK):
                raise
            conn.close()
            conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=timeout, check_same_thread=False)
        return conn

    def _create(self) -> None:
        try:
            with self.transaction() as cur:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        cur.execute(statement)
                cur.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                # a new index holds fingerprints of this version only; an older one is checked once (prints_checked)
                cur.execute("INSERT OR IGNORE INTO meta SELECT 'fingerprints', ? WHERE NOT EXISTS (SELECT 1 FROM models)",
                            (str(FINGERPRINT_VERSION),))
        except sqlite3.DatabaseError as exc:
            self._check_version()  # an index of another schema version says so
            raise self._problem(exc, "cannot create the index tables") from None

    def _check_version(self) -> None:
        try:
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BadInputError(self.path, f"not an ancestree index ({exc})") from None
        if row is None or int(row[0]) != SCHEMA_VERSION:
            found = row[0] if row else "none"
            raise BadInputError(self.path, f"index schema version {found}, this ancestree reads {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: all of it is committed, or none of it (``BEGIN IMMEDIATE`` takes the lock early)."""
        if self.read_only:
            raise PermissionError(f"{self.path}: opened read-only")
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> IndexStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- runs ---------------------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        with self.transaction() as cur:
            cur.execute("INSERT INTO runs (command, started) VALUES (?, ?)", (command, time.time()))
            return _inserted(cur)

    def finish_run(self, run: int, status: str, added: int, skipped: int) -> None:
        with self.transaction() as cur:
            cur.execute("UPDATE runs SET finished = ?, status = ?, added = ?, skipped = ? WHERE id = ?",
                        (time.time(), status, added, skipped, run))

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM runs ORDER BY id")]

    # -- models -------------------------------------------------------------------------------------
    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM models").fetchone()[0])

    def known_stat_keys(self) -> dict[tuple[str, str], tuple[str | None, str | None, str | None]]:
        """``(name, stat key)`` of every indexed file set and its aliases -> ``(model, declared base as stored,
        relation)``: a model found under a name that already holds those files needs only a ``stat``, and its
        card read again (``model`` names the row it is the card of; None for an alias, whose card the index
        does not keep). Known files under another name are no skip: a Hugging Face cache repository whose
        ``refs/main`` moved back names the files of an older snapshot."""
        # models first: a model's own name and stat also held by an alias row of its path must read its card again
        rows = [*self.conn.execute("SELECT name, stat_key, file_hash, name, declared_base, declared_relation FROM models"
                                   " WHERE stat_key IS NOT NULL"),
                *self.conn.execute("SELECT coalesce(a.name, m.name), a.stat_key, '', NULL, NULL, NULL FROM aliases a"
                                   " JOIN models m ON m.id = a.model WHERE a.stat_key IS NOT NULL")]
        known: dict[tuple[str, str], tuple[str | None, str | None, str | None]] = {}
        for name, key, file_hash, model, base, relation in rows:
            known.setdefault((name, key), (model, base, relation))
            if file_hash and name.endswith(f"@{file_hash[:8]}"):  # a name given twice in one run: found under the name given
                known.setdefault((name[: -len(file_hash[:8]) - 1], key), (model, base, relation))
        return known

    def paths(self) -> list[str]:
        """Every path the index read a model from (its own and its aliases')."""
        return [r[0] for r in self.conn.execute("SELECT path FROM models UNION SELECT path FROM aliases")]

    def by_file_hash(self, file_hash: str) -> sqlite3.Row | None:
        return self.conn.execute("SELECT id, name, path FROM models WHERE file_hash = ?", (file_hash,)).fetchone()

    def name_taken(self, name: str) -> bool:
        return self.conn.execute("SELECT 1 FROM models WHERE name = ?", (name,)).fetchone() is not None

    def add_model(self, fp: Fingerprint, path: str, file_hash: str, stat_key: str | None, run: int | None) -> int:
        """Insert and commit one model (not yet placed in the graph); returns its row id."""
        with self.transaction() as cur:
            cur.execute("INSERT INTO models (name, path, file_hash, stat_key, content_key, format, parameters, declared_base,"
                        " declared_relation, added, run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (fp.id, *_content_row(fp, path, file_hash, stat_key, run)))
            model = _inserted(cur)
            cur.execute("INSERT INTO prints VALUES (?, ?, ?)", (model, to_bytes([fp]), to_blob(embed(fp))))
            _forget_alias_name(cur, fp.id)
            return model

    def stale_prints(self) -> list[tuple[int, str, str]]:
        """``(id, name, path)`` of the models whose stored fingerprint an older ancestree computed (a newer one
        reads some formats otherwise). Reads every stored fingerprint's header: callers ask only while
        :meth:`prints_checked` says no."""
        rows = self.conn.execute("SELECT m.id, m.name, m.path, p.fingerprint FROM models m JOIN prints p ON p.model = m.id"
                                 " ORDER BY m.id")  # one blob at a time: an index of many models is not held at once
        return [(int(r[0]), r[1], r[2]) for r in rows if stored_version(r[3]) != FINGERPRINT_VERSION]

    def prints_checked(self) -> bool:
        """Whether the index records that its fingerprints are of this version (cheap: no blob is read); an
        index an older ancestree made says no until an ``add`` or ``rebuild`` fingerprints its models again."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'fingerprints'").fetchone()
        return row is not None and row[0] == str(FINGERPRINT_VERSION)

    def mark_prints_current(self) -> None:
        """Record that the stored fingerprints were checked against this version (:meth:`prints_checked`)."""
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprints', ?)", (str(FINGERPRINT_VERSION),))

    def refresh_print(self, model: int, fp: Fingerprint, stat_key: str | None) -> None:
        """Store ``fp``, the model's same files fingerprinted by this version, with what it decides of the
        model's row (content key, format, parameters; the stat key of its files now), and commit: the model
        and its recovered children are left to be placed again; its aliases and declared base stay."""
        with self.transaction() as cur:
            self._unplace(model, cur, files_changed=False)
            cur.execute("UPDATE models SET stat_key = ?, content_key = ?, format = ?, parameters = ? WHERE id = ?",
                        (stat_key, fp.content_key, fp.format, int(fp.parameters), model))
            cur.execute("UPDATE prints SET fingerprint = ?, embedding = ? WHERE model = ?", (to_bytes([fp]), to_blob(embed(fp)), model))

    def update_model(self, model: int, fp: Fingerprint, path: str, file_hash: str, stat_key: str | None,
                     run: int | None) -> None:
        """Replace the content of an indexed model (its files changed under the same name) and commit: its
        edges go, and it and its recovered children are left to be placed again."""
        with self.transaction() as cur:
            self._unplace(model, cur)
            cur.execute("UPDATE models SET path = ?, file_hash = ?, stat_key = ?, content_key = ?, format = ?,"
                        " parameters = ?, declared_base = ?, declared_relation = ?, added = ?, run = ? WHERE id = ?",
                        (*_content_row(fp, path, file_hash, stat_key, run), model))
            cur.execute("UPDATE prints SET fingerprint = ?, embedding = ? WHERE model = ?",
                        (to_bytes([fp]), to_blob(embed(fp)), model))
            _forget_alias_name(cur, cur.execute("SELECT name FROM models WHERE id = ?", (model,)).fetchone()[0])

    def hand_over(self, model: int) -> str | None:
        """Give an indexed model's row to another name found holding the very same files (an alias whose folder is
        still there), before the model's own name takes other content, and commit: the alias keeps that content,
        its place in the graph and the other aliases (they hold the same files); returns the alias's name, None
        when there is none (the caller then updates or removes the row)."""
        with self.transaction() as cur:
            own = cur.execute("SELECT name FROM models WHERE id = ?", (model,)).fetchone()[0]
            rows = cur.execute("SELECT path, stat_key, name FROM aliases WHERE model = ? AND name IS NOT NULL AND name != ?"
                               " ORDER BY rowid", (model, own)).fetchall()
            row = next((r for r in rows if Path(r[0]).exists()), None)  # an alias whose folder is gone holds nothing
            if row is None:
                return None
            cur.execute("DELETE FROM aliases WHERE model = ? AND (path = ? OR name = ?)", (model, row[0], own))
            cur.execute("UPDATE models SET name = ?, path = ?, stat_key = ? WHERE id = ?", (row[2], row[0], row[1], model))
            return str(row[2])

    def remove_model(self, model: int) -> None:
        """Remove an indexed model and commit; its recovered children are left to be placed again."""
        with self.transaction() as cur:
            self._unplace(model, cur)
            cur.execute("DELETE FROM models WHERE id = ?", (model,))  # cascades to its print, edges and aliases

    def _unplace(self, model: int, cur: sqlite3.Cursor, files_changed: bool = True) -> None:
        """Take ``model`` and its recovered children out of the graph (inside the caller's transaction): the
        model's own edges (its declared ones are read again from its new files), the children's recovered
        parents, their trees; paths found holding its old files are forgotten when ``files_changed``."""
        rows = cur.execute("SELECT DISTINCT c.id FROM edges e JOIN models c ON c.id = e.child"
                           " WHERE e.parent = ? AND e.source = 'recovered' AND c.id != ?", (model, model)).fetchall()
        ids = [model, *(int(r[0]) for r in rows)]
        marks = ",".join("?" * len(ids))
        trees = [r[0] for r in cur.execute(f"SELECT DISTINCT tree FROM models WHERE id IN ({marks}) AND tree IS NOT NULL", ids)]
        cur.execute("DELETE FROM edges WHERE parent = ? AND source = 'recovered'", (model,))
        cur.execute("DELETE FROM edges WHERE child = ?", (model,))
        cur.execute(f"DELETE FROM edges WHERE source = 'recovered' AND child IN ({marks})", ids)
        cur.execute(f"UPDATE models SET tree = NULL, placed = 0 WHERE id IN ({marks})", ids)
        if files_changed:
            cur.execute("DELETE FROM aliases WHERE model = ?", (model,))
        for tree in trees:  # what is left of each tree keeps its row; a root taken out leaves it without one
            cur.execute("DELETE FROM trees WHERE id = ? AND NOT EXISTS (SELECT 1 FROM models WHERE tree = ?)", (tree, tree))
            cur.execute("UPDATE trees SET size = (SELECT count(*) FROM models WHERE tree = ?),"
                        " root = CASE WHEN root IN (SELECT id FROM models WHERE tree = ?) THEN root END WHERE id = ?",
                        (tree, tree, tree))

    def embeddings(self) -> tuple[list[str], list[int | None], np.ndarray]:
        """Names, trees and the ``(N, DIM)`` embedding matrix of every model (for nearest-neighbour search)."""
        rows = self.conn.execute("SELECT m.name, m.tree, p.embedding FROM models m JOIN prints p ON p.model = m.id"
                                 " ORDER BY m.id").fetchall()
        damaged = next((r[0] for r in rows if not isinstance(r[2], bytes) or len(r[2]) != DIM * 4), None)
        if damaged is not None:
            raise BadInputError(self.path, f"damaged index: the stored embedding of {damaged} is not {DIM} float32 values"
                                           " (`index rebuild` cannot mend it: make the index again with `index add`)")
        vectors = np.stack([from_blob(r[2]) for r in rows]) if rows else np.zeros((0, DIM), np.float32)
        return [r[0] for r in rows], [r[1] for r in rows], vectors

    def add_alias(self, path: str, model: int, stat_key: str | None, name: str | None = None,
                  then: Callable[[sqlite3.Cursor], None] | None = None) -> None:
        """Remember another path (and name) holding ``model``'s files; ``then`` writes more in the same transaction.

        A path found again under the model's own name (its files touched) keeps the other name it was found
        under before: the alias row is that name's only record."""
        with self.transaction() as cur:
            before = cur.execute("SELECT a.model, a.name, m.name FROM aliases a JOIN models m ON m.id = ? WHERE a.path = ?",
                                 (model, path)).fetchone()
            if before is not None and before[0] == model and before[1] is not None and name == before[2]:
                name = before[1]
            # a new row (not an update in place): names are read in the order their paths were recorded last
            cur.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)", (path, model, stat_key, name))
            if then is not None:
                then(cur)

    def redeclare(self, name: str, declared: tuple[str | None, str | None], cur: sqlite3.Cursor) -> None:
        """What the card of the model indexed under ``name`` declares now, as :func:`stored_declaration` gives
        it (inside the caller's transaction)."""
        row = cur.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return
        model = int(row[0])
        cur.execute("UPDATE models SET declared_base = ?, declared_relation = ? WHERE id = ?", (*declared, model))
        # the stored fingerprint too: recovery (`place`, `rebuild`) reads the card's prior from it
        blob = cur.execute("SELECT fingerprint FROM prints WHERE model = ?", (model,)).fetchone()
        if blob is not None:
            fp = from_bytes(blob[0], oldest=OLDEST_READABLE)[0]
            base = json.loads(declared[0]) if declared[0] is not None else None
            fp.declared = replace(fp.declared, base_model=base, relation=declared[1])
            cur.execute("UPDATE prints SET fingerprint = ? WHERE model = ?", (to_bytes([fp]), model))

    def repath(self, model: int, path: str, stat_key: str | None, cur: sqlite3.Cursor) -> None:
        """Where an indexed model's files are read from now (inside the caller's transaction)."""
        cur.execute("UPDATE models SET path = ?, stat_key = ? WHERE id = ?", (path, stat_key, model))

    def alias_of(self, name: str) -> str | None:
        """The indexed model whose files another name was found holding (None when ``name`` is no alias)."""
        row = self.conn.execute("SELECT m.name FROM aliases a JOIN models m ON m.id = a.model WHERE a.name = ?"
                                " ORDER BY a.rowid DESC LIMIT 1", (name,)).fetchone()
        return row[0] if row else None

    def alias_path(self, name: str) -> str | None:
        """The path at which ``name`` was last found holding an indexed model's files (None: no alias)."""
        row = self.conn.execute("SELECT path FROM aliases WHERE name = ? ORDER BY rowid DESC LIMIT 1", (name,)).fetchone()
        return row[0] if row else None

    def alias_name(self, path: str) -> str | None:
        """The name the alias at ``path`` was found under (None: no alias there, or one without a name)."""
        row = self.conn.execute("SELECT name FROM aliases WHERE path = ?", (path,)).fetchone()
        return row[0] if row else None

    def model_of_alias(self, path: str) -> sqlite3.Row | None:
        """``(id, name, path)`` of the indexed model whose files the alias at ``path`` holds."""
        return self.conn.execute("SELECT m.id, m.name, m.path FROM aliases a JOIN models m ON m.id = a.model WHERE a.path = ?",
                                 (path,)).fetchone()

    def names(self) -> list[tuple[str, str]]:
        """``(name, model)`` for every indexed model (its own name, in the order they were indexed), then for
        every other name found holding the very same files as one (an alias; a name found at several paths
        once, for the model at its most recently recorded path, as :meth:`alias_of`)."""
        rows = self.conn.execute("SELECT name, name FROM models UNION ALL SELECT * FROM (SELECT a.name, m.name FROM aliases a"
                                 " JOIN models m ON m.id = a.model WHERE a.name IS NOT NULL AND a.name != m.name AND a.rowid ="
                                 " (SELECT MAX(b.rowid) FROM aliases b WHERE b.name = a.name) ORDER BY a.rowid)")
        return [(r[0], r[1]) for r in rows]

    def models(self, where: str = "", params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Model rows (without fingerprints) as dicts, ordered by name; ``where`` is an SQL condition."""
        sql = f"SELECT {', '.join(MODEL_COLUMNS)} FROM models {'WHERE ' + where if where else ''} ORDER BY name"
        return [_model_dict(r) for r in self.conn.execute(sql, params)]

    def model(self, name: str) -> dict[str, Any] | None:
        rows = self.models("name = ?", (name,))
        return rows[0] if rows else None

    def ids_by_name(self, names: Iterable[str] | None = None) -> dict[str, int]:
        if names is None:
            return {r[0]: r[1] for r in self.conn.execute("SELECT name, id FROM models")}
        out: dict[str, int] = {}
        for chunk in _chunks(list(dict.fromkeys(names)), 500):
            marks = ",".join("?" * len(chunk))
            out.update((r[0], int(r[1])) for r in self.conn.execute(f"SELECT name, id FROM models WHERE name IN ({marks})", chunk))
        return out

    def fingerprints(self, names: Iterable[str] | None = None) -> list[Fingerprint]:
        """Stored fingerprints (all of them, or of ``names``), in name order; no model file is read."""
        rows: Iterable[Any]
        if names is None:
            rows = self.conn.execute(f"{PRINTS} ORDER BY m.name")
        else:
            wanted = sorted(set(names))
            rows = (r for chunk in _chunks(wanted, 500) for r in self.conn.execute(
                f"{PRINTS} WHERE m.name IN ({','.join('?' * len(chunk))}) ORDER BY m.name", chunk))
        out = []
        for name, blob in rows:
            fp = from_bytes(blob, f"{self.path}#{name}", oldest=OLDEST_READABLE)[0]
            fp.id = name  # the index's name is authoritative (ids are renamed on collision)
            out.append(fp)
        return out

    def unplaced(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT name FROM models WHERE placed = 0 ORDER BY name")]

    def search(self, text: str, limit: int = 20) -> list[dict[str, Any]]:
        """Models whose name or path contains ``text`` (case-insensitive), names starting with it first."""
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql = (f"SELECT {', '.join(MODEL_COLUMNS)} FROM models WHERE name LIKE ? ESCAPE '\\' OR path LIKE ? ESCAPE '\\'"
               " ORDER BY (instr(lower(name), lower(?)) = 1) DESC, length(name), name LIMIT ?")
        return [_model_dict(r) for r in self.conn.execute(sql, (pattern, pattern, text, limit))]

    # -- edges --------------------------------------------------------------------------------------
    def edges(self, source: str | None = None, names: Iterable[str] | None = None) -> list[Edge]:
        """Edges by model name (``source`` = declared / recovered / None for both), optionally touching ``names``."""
        sql = ("SELECT p.name, c.name, e.relation, e.confidence, e.source FROM edges e "
               "JOIN models p ON p.id = e.parent JOIN models c ON c.id = e.child")
        conds, params = [], []
        if source is not None:
            conds.append("e.source = ?")
            params.append(source)
        if names is not None:
            wanted = list(names)
            marks = ",".join("?" * len(wanted))
            conds.append(f"(p.name IN ({marks}) OR c.name IN ({marks}))")
            params.extend(wanted + wanted)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        sql += " ORDER BY c.name, p.name, e.source"
        return [Edge(*r) for r in self.conn.execute(sql, params)]

    def replace_recovered(self, members: Iterable[str], edges: Iterable[Edge], trees: list[tuple[str | None, list[str]]],
                          cur: sqlite3.Cursor) -> None:
        """Replace the recovered edges and trees of ``members`` (inside the caller's transaction).

        ``trees`` lists ``(root, member names)`` per connected component; every member ends up placed.
        """
        ids = self.ids_by_name(members)
        idlist = list(ids.values())
        for chunk in _chunks(idlist, 500):
            marks = ",".join("?" * len(chunk))
            cur.execute(f"DELETE FROM edges WHERE source = 'recovered' AND (child IN ({marks}) OR parent IN ({marks}))",
                        chunk + chunk)
            old = [r[0] for r in cur.execute(f"SELECT DISTINCT tree FROM models WHERE id IN ({marks}) AND tree IS NOT NULL", chunk)]
            cur.execute(f"UPDATE models SET tree = NULL WHERE id IN ({marks})", chunk)
            for tree in old:
                cur.execute("DELETE FROM trees WHERE id = ? AND NOT EXISTS (SELECT 1 FROM models WHERE tree = ?)", (tree, tree))
        for e in edges:
            cur.execute("INSERT OR REPLACE INTO edges VALUES (?, ?, ?, ?, 'recovered')",
                        (ids[e.parent], ids[e.child], e.relation, float(e.confidence)))
        for root, names in trees:
            cur.execute("INSERT INTO trees (root, size) VALUES (?, ?)", (ids.get(root) if root else None, len(names)))
            tree = _inserted(cur)
            for chunk in _chunks([ids[n] for n in names], 500):
                cur.execute(f"UPDATE models SET tree = ?, placed = 1 WHERE id IN ({','.join('?' * len(chunk))})", [tree, *chunk])

    def splice_recovered(self, children: Iterable[str], edges: Iterable[Edge], tree: int, joined: Iterable[str],
                         cur: sqlite3.Cursor, merged: Iterable[int] = ()) -> None:
        """Replace the recovered parents of ``children`` by ``edges``, put ``joined`` (new models) and the
        members of the ``merged`` trees into ``tree`` (inside the caller's transaction); every other edge
        and tree stays as it is."""
        edges = list(edges)
        ids = self.ids_by_name({*children, *(n for e in edges for n in (e.parent, e.child)), *joined})
        for chunk in _chunks([ids[n] for n in children], 500):
            cur.execute(f"DELETE FROM edges WHERE source = 'recovered' AND child IN ({','.join('?' * len(chunk))})", chunk)
        for e in edges:
            cur.execute("INSERT OR REPLACE INTO edges VALUES (?, ?, ?, ?, 'recovered')",
                        (ids[e.parent], ids[e.child], e.relation, float(e.confidence)))
        for chunk in _chunks([ids[n] for n in joined], 500):
            cur.execute(f"UPDATE models SET tree = ?, placed = 1 WHERE id IN ({','.join('?' * len(chunk))})", [tree, *chunk])
        for other in merged:
            cur.execute("UPDATE models SET tree = ? WHERE tree = ?", (tree, other))
            cur.execute("DELETE FROM trees WHERE id = ?", (other,))
        cur.execute("UPDATE trees SET size = (SELECT count(*) FROM models WHERE tree = ?) WHERE id = ?", (tree, tree))

    def set_declared(self, edges: Iterable[Edge], cur: sqlite3.Cursor) -> None:
        """Add declared edges (inside the caller's transaction); an existing one is kept."""
        for e in edges:
            ids = self.ids_by_name([e.parent, e.child])
            cur.execute("INSERT OR IGNORE INTO edges VALUES (?, ?, ?, ?, 'declared')",
                        (ids[e.parent], ids[e.child], e.relation, float(e.confidence)))

    def replace_declared(self, edges: Iterable[Edge], cur: sqlite3.Cursor) -> None:
        """Make ``edges`` the declared edges (inside the caller's transaction): others go, missing ones come;
        a few bulk statements, whatever the number of edges."""
        wanted = list(edges)
        ids = self.ids_by_name({n for e in wanted for n in (e.parent, e.child)})
        keep = {(ids[e.parent], ids[e.child]): e for e in wanted}
        stored = {(int(r[0]), int(r[1])) for r in cur.execute("SELECT parent, child FROM edges WHERE source = 'declared'")}
        cur.executemany("DELETE FROM edges WHERE parent = ? AND child = ? AND source = 'declared'", sorted(stored - keep.keys()))
        cur.executemany("INSERT OR IGNORE INTO edges VALUES (?, ?, ?, ?, 'declared')",
                        [(p, c, e.relation, float(e.confidence)) for (p, c), e in keep.items() if (p, c) not in stored])

    def parents(self, name: str, source: str = "recovered") -> list[str]:
        """Names of the parents of ``name`` (one indexed lookup by child)."""
        sql = ("SELECT p.name FROM models c JOIN edges e ON e.child = c.id JOIN models p ON p.id = e.parent"
               " WHERE c.name = ? AND e.source = ? ORDER BY p.name")
        return [r[0] for r in self.conn.execute(sql, (name, source))]

    def ancestors(self, name: str, source: str = "recovered") -> set[str]:
        """Every model above ``name`` along ``source`` edges (each parent of a merge followed; one query a model)."""
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return set()
        sql = "SELECT p.id, p.name FROM edges e JOIN models p ON p.id = e.parent WHERE e.child = ? AND e.source = ?"
        found: dict[int, str] = {}
        todo = [int(row[0])]
        while todo:
            for pid, pname in self.conn.execute(sql, (todo.pop(), source)).fetchall():
                if int(pid) not in found:
                    found[int(pid)] = pname
                    todo.append(int(pid))
        return set(found.values())

    def lineage(self, name: str, source: str = "recovered") -> list[str]:
        """``name`` and its ancestors up to a root, following the most confident parent (one query a step)."""
        row = self.conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            return []
        path, seen, current = [name], {int(row[0])}, int(row[0])
        sql = ("SELECT p.id, p.name FROM edges e JOIN models p ON p.id = e.parent WHERE e.child = ? AND e.source = ?"
               " ORDER BY e.confidence DESC, p.name")
        while True:
            parents = [(int(r[0]), r[1]) for r in self.conn.execute(sql, (current, source)) if int(r[0]) not in seen]
            if not parents:
                return path
            current = parents[0][0]
            seen.add(current)
            path.append(parents[0][1])

    def version(self) -> tuple[int, ...]:
        """Changes whenever the index does (for caches of whole-graph answers)."""
        row = self.conn.execute("SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM edges),"
                                " (SELECT coalesce(max(id), 0) FROM runs), (SELECT count(*) FROM runs WHERE finished IS NOT NULL),"
                                " (SELECT coalesce(max(id), 0) FROM trees)").fetchone()
        return tuple(int(v) for v in row)

    def tree_members(self, trees: Iterable[int]) -> list[str]:
        wanted = list(set(trees))
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        return [r[0] for r in self.conn.execute(f"SELECT name FROM models WHERE tree IN ({marks}) ORDER BY name", wanted)]

    def tree_root(self, tree: int) -> str | None:
        row = self.conn.execute("SELECT m.name FROM trees t JOIN models m ON m.id = t.root WHERE t.id = ?", (tree,)).fetchone()
        return row[0] if row else None

    def trees(self) -> list[dict[str, Any]]:
        sql = "SELECT t.id, m.name AS root, t.size FROM trees t LEFT JOIN models m ON m.id = t.root ORDER BY t.size DESC, t.id"
        return [dict(r) for r in self.conn.execute(sql)]

    def clear_recovered(self, cur: sqlite3.Cursor) -> None:
        """Forget every recovered edge and tree (what ``rebuild`` starts from)."""
        cur.execute("DELETE FROM edges WHERE source = 'recovered'")
        cur.execute("UPDATE models SET tree = NULL, placed = 0")
        cur.execute("DELETE FROM trees")


def _inserted(cur: sqlite3.Cursor) -> int:
    """The row id of the row ``cur`` just inserted."""
    assert cur.lastrowid is not None  # set by an INSERT
    return int(cur.lastrowid)


def stored_declaration(base: str | list[str] | None, relation: str | None) -> tuple[str | None, str | None]:
    """A card's ``base_model`` and relation as the index stores them (the base as JSON)."""
    return (json.dumps(base) if base is not None else None, relation)


def _content_row(fp: Fingerprint, path: str, file_hash: str, stat_key: str | None, run: int | None) -> tuple[Any, ...]:
    """The columns of a model row that its files decide (all but its name), in the order the statements use."""
    return (path, file_hash, stat_key, fp.content_key, fp.format, int(fp.parameters),
            *stored_declaration(fp.declared.base_model, fp.declared.relation), time.time(), run)


def _model_dict(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    base = record.get("declared_base")
    record["declared_base"] = json.loads(base) if base else None
    record["placed"] = bool(record.get("placed"))
    return record


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


__all__ = ["DEFAULT_DB", "Edge", "IndexStore", "SCHEMA_VERSION", "stored_declaration"]
