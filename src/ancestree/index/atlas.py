"""The atlas: a persistent index of many models, kept up to date as models are added.

>>> atlas = Atlas("ancestree.db")                     # doctest: +SKIP
>>> atlas.add(scan=["/models"])                       # doctest: +SKIP
>>> atlas.show("org/model")["parents"]                # doctest: +SKIP

Reading models (:mod:`ancestree.index.ingest`) runs here or on Dask workers; everything else works from
the fingerprints stored in the SQLite file (:mod:`ancestree.index.store`).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ancestree.errors import BadInputError, several
from ancestree.fingerprint import from_bytes
from ancestree.index.ingest import Ingested, PathLike, ingest_dask, ingest_local, resolve_items
from ancestree.index.placement import Placement, place, rebuild, sync_declared
from ancestree.index.store import DEFAULT_DB, Edge, IndexStore, stored_declaration

if TYPE_CHECKING:
    from ancestree.graph.model_graph import ModelGraph


@dataclass
class AddReport:
    """What ``index add`` did."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)  # indexed names whose files changed: fingerprinted and placed again
    skipped: list[str] = field(default_factory=list)  # already indexed (same files)
    bad: list[str] = field(default_factory=list)  # "path: problem" lines
    #: indexed names whose card now declares another base (their weights as indexed): name -> stored declaration
    redeclared: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    placement: Placement | None = None
    ingest_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        p = self.placement or Placement()
        return {"added": len(self.added), "updated": len(self.updated), "skipped": len(self.skipped), "bad": self.bad,
                "placed": len(p.placed), "recovered_again": p.members, "trees_touched": p.trees_touched,
                "placed_locally": p.local, "fallbacks": p.fallbacks,
                "ingest_seconds": round(self.ingest_seconds, 3), "place_seconds": round(p.seconds, 3)}


@dataclass(frozen=True)
class Outcome:
    """What ``index add`` did with one model: ``status`` is added, updated, skipped or unreadable, as counted
    in :class:`AddReport`; ``detail`` says why when it was skipped or unreadable, or what an update found."""

    name: str
    status: str
    detail: str = ""
    same_as: str | None = None  # the indexed model holding the very same files (the name became its alias)


@contextmanager
def sole_writer(db: str | os.PathLike[str]) -> Iterator[None]:
    """Hold ``DB.lock`` for a run that writes the index: two runs at once interleaved their transactions and
    one stopped at a UNIQUE failure (exit 1); the second now says so and leaves the index alone."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: SQLite's own locking only
        yield
        return
    try:
        lock = open(f"{db}.lock", "a")  # noqa: SIM115 - held for the whole run
    except OSError:  # a folder we cannot write to: the index's own writes will say so
        yield
        return
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInputError(db, "another `index add` or `index rebuild` is writing this index now: run this one "
                                    "after it") from None
        except OSError:  # no locks here (NFS without a lock daemon): SQLite's own locking only
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _writes(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def one_at_a_time(self: Atlas, *args: Any, **kwargs: Any) -> Any:
        with sole_writer(self.store.path):
            return method(self, *args, **kwargs)

    return one_at_a_time


class Atlas:
    """An atlas file; ``read_only=True`` for serving it, ``create=False`` to refuse a missing one."""

    def __init__(self, db: str | os.PathLike[str] = DEFAULT_DB, read_only: bool = False, create: bool = True) -> None:
        self.store = IndexStore(db, read_only=read_only, create=create)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Atlas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------------
    @_writes
    def add(self, paths: Iterable[PathLike | tuple[str, PathLike]] = (), scan: Iterable[PathLike] = (),
            dask: str | None = None, threads: int = 1, on_model: Callable[[Outcome], None] | None = None) -> AddReport:
        """Index new models (each committed on its own) and place them in the graph.

        ``paths`` holds model paths (named as given) or ``(name, path)`` pairs; every model below a ``scan``
        folder is named by its path relative to the folder. A model's name is its identity: models whose files
        are already indexed are skipped by a ``stat`` of their files, or, at another path, by the hash of their
        files (indexed once, the other name kept as an alias); an indexed name whose files changed is updated
        (fingerprinted again, its edges dropped, placed again with the children that hung below its old
        weights). ``dask`` is a scheduler address: workers read the files. ``on_model`` hears of each model.
        """
        several(paths, "paths")
        several(scan, "scan")
        items = [(self._name_at(name, path), path) for name, path in resolve_items(paths, scan)]
        report = AddReport()
        run = self.store.start_run(" ".join(["index add", *sys.argv[3:]]) if sys.argv else "index add")
        start = time.perf_counter()
        status = "failed"
        try:
            refreshed, failed = self._refresh_stale(dask, threads)
            report.updated += refreshed
            report.bad += [f"{name}: {problem}" for name, problem in failed]
            known = self.store.known_stat_keys()
            results = ingest_dask(items, known, dask) if dask else ingest_local(items, known, threads)
            named: set[str] = set()  # names given to models in this run
            for result in results:
                outcome = self._store_one(result, run, report, named)
                if on_model is not None:
                    on_model(outcome)
            report.ingest_seconds = time.perf_counter() - start
            if report.redeclared:  # one transaction, one pass over the cards: a run stopped before it finds them again
                with self.store.transaction() as cur:
                    for name, declared in report.redeclared.items():
                        self.store.redeclare(name, declared, cur)
                    sync_declared(self.store, cur)
            report.placement = place(self.store)  # resolves every card again against the names indexed now
            status = "done"
        finally:
            self.store.finish_run(run, status, len(report.added), len(report.skipped))
        return report

    def _name_at(self, name: str, path: str) -> str:
        """The index name of the model at ``path`` found as ``name``: the same relative name below another
        scanned folder (``--scan A``, later ``--scan B``) names another model, not a re-upload of the indexed
        one, whose files are still at its path. It gets the folders above it in front, as few as make the name
        one no other model with files in place holds (``B/m0003``, then ``x/B/m0003`` beside a ``y/B/m0003``),
        and keeps that name run after run. A name another model's copy was found under (an alias, its files
        still in place) is taken alike, once the model here is known to be another (:meth:`_beside_aliases`)."""
        candidates = list(_with_folders(name, path))
        for k, candidate in enumerate(candidates):
            row = self.store.model(candidate)
            if row is None and self._alias_elsewhere(candidate, path):  # the name of another model's copy: the
                # model here was named with folders in front before, or is named once read (:meth:`_beside_aliases`)
                return next((c for c in candidates[k + 1:] if (r := self.store.model(c)) and not _elsewhere(r["path"], path)), candidate)
            if row is None or not _elsewhere(row["path"], path):
                return candidate
            held = self.store.model_of_alias(path)  # a path this model was read from before (moved away and back)
            if held is not None and held["id"] == row["id"]:
                return candidate
        return name  # every prefix taken: the run's own collision rule names it ``name@hash``

    def _beside_aliases(self, name: str, path: str) -> str:
        """The name of a new model (none of whose files are indexed) found as ``name`` at ``path``, when
        ``name`` is an alias: the files it was found holding, another model's, still lie at another path, so
        it names that model, and the new one takes folders in front as :meth:`_name_at` gives them. Decided
        here, not before reading: found holding that model's files, the name is that model's."""
        if not self._alias_elsewhere(name, path):
            return name
        return next((candidate for candidate in _with_folders(name, path)
                     if not self.store.name_taken(candidate) and not self._alias_elsewhere(candidate, path)), name)

    def _alias_elsewhere(self, name: str, path: str) -> bool:
        """``name`` was last found holding an indexed model's files at another path than ``path``, still there."""
        alias = self.store.alias_path(name)
        return alias is not None and _elsewhere(alias, path)

    def _store_one(self, result: Ingested, run: int, report: AddReport, named: set[str]) -> Outcome:
        if result.status == "bad":
            report.bad.append(result.error or result.path)
            return Outcome(result.name, "unreadable", result.error or "")
        if result.status == "known":
            if result.declared is not None:  # its card says otherwise now (written after the loop)
                report.redeclared[result.declared[0]] = result.declared[1:]
            same = self.store.model_of_alias(result.path) if result.alias else None
            if same is not None and self._read_from_here(result, same):
                self._also_at(result, same)
            report.skipped.append(result.name)
            return Outcome(result.name, "skipped", "already indexed")
        assert result.fingerprint is not None and result.file_hash is not None
        fp = from_bytes(result.fingerprint, result.path)[0]
        # a name indexed before this run names the same model: its files changed (re-uploaded); a name taken in
        # this run by another path names two models given the same name: both kept, distinctly
        existing = self.store.model(fp.id) if fp.id not in named else None
        named.add(fp.id)
        same = self.store.by_file_hash(result.file_hash)
        # its own files, touched or moved away and back (under this name, or as the second model a name was
        # given to in one run, ``name@hash``): nothing was re-uploaded
        own = same is not None and same["name"] in (fp.id, f"{fp.id}@{result.file_hash[:8]}")
        # re-uploaded: its old files held under another name too (an alias) live on under that name
        handed = self.store.hand_over(int(existing["id"])) if existing is not None and not own else None
        renewed = existing is not None  # this name held other files before
        existing = None if handed is not None else existing
        if same is not None and not own:  # the very same files as another model: remember the path
            if existing is not None:  # this name held other weights, and now holds a copy of that model's
                self.store.remove_model(int(existing["id"]))
            if renewed:
                report.updated.append(fp.id)
            else:
                report.skipped.append(result.name)
            # cards are resolved again with the name found only now, in one transaction: placing resolves them
            # too, but an alias is never placed, and a run stopped before placement would leave a card naming
            # it unlinked for good (the next run skips the name)
            self._also_at(result, same, then=lambda cur: sync_declared(self.store, cur))
            return Outcome(result.name, "updated" if renewed else "skipped", f"the very same files as {same['name']}", same["name"])
        if same is not None:  # its own files, touched or moved: remember their new stat, and what its card says now
            if Path(result.path).resolve() == Path(same["path"]).resolve():  # touched in place: its own row's stat
                with self.store.transaction() as cur:  # too (its alias row alone hid later card edits)
                    self.store.repath(int(same["id"]), same["path"], result.stat_key, cur)
            self._also_at(result, same)
            now, row = stored_declaration(fp.declared.base_model, fp.declared.relation), self.store.model(same["name"])
            if row is not None and now != stored_declaration(row["declared_base"], row["declared_relation"]):
                report.redeclared[same["name"]] = now
            report.skipped.append(result.name)
            return Outcome(result.name, "skipped", "already indexed")
        if existing is not None:
            self.store.update_model(int(existing["id"]), fp, result.path, result.file_hash, result.stat_key, run)
            report.updated.append(fp.id)
            return Outcome(fp.id, "updated", "its files changed")
        if existing is None and handed is None:  # a name still standing for another model's copy elsewhere is not free
            fp.id = self._beside_aliases(fp.id, result.path)
            named.add(fp.id)  # taken in this run: a model found under it later in the run is another model
        if self.store.name_taken(fp.id):  # another model of this run already goes by this name: keep both, distinctly
            fp.id = f"{fp.id}@{result.file_hash[:8]}"
        self.store.add_model(fp, result.path, result.file_hash, result.stat_key, run)
        if handed is not None:
            report.updated.append(fp.id)
            return Outcome(fp.id, "updated", f"its files changed; the old ones stay indexed as {handed}")
        report.added.append(fp.id)
        return Outcome(fp.id, "added")

    def _refresh_stale(self, dask: str | None = None, threads: int = 1) -> tuple[list[str], list[tuple[str, str]]]:
        """Fingerprint again, from their indexed paths, the models whose stored fingerprints an older ancestree
        computed (each committed on its own; they are placed again by the placement that follows); returns
        their names, and ``(name, problem)`` for those whose files cannot be read any more: they keep their
        fingerprints, which an index reads (:data:`~ancestree.fingerprint.types.OLDEST_READABLE`), and are
        named this once. ``dask`` / ``threads`` read them as ``add`` reads new models."""
        if self.store.prints_checked():
            return [], []
        ids = {name: (model, path) for model, name, path in self.store.stale_prints()}
        items = [(name, path) for name, (_, path) in ids.items()]
        refreshed, failed = [], []
        for result in (ingest_dask(items, {}, dask) if dask and items else ingest_local(items, {}, threads)):
            name, (model, path) = result.name, ids[result.name]
            if result.status == "bad" or result.fingerprint is None or result.file_hash is None:
                failed.append((name, f"fingerprinted by an older ancestree, and its files cannot be read again ({result.error});"
                                     " its old fingerprint is kept"))
                continue
            fp = from_bytes(result.fingerprint, path)[0]
            row = self.store.model(name)
            if row is not None and row["file_hash"] != result.file_hash:  # other files there now: indexed as a re-upload is
                self.store.update_model(model, fp, path, result.file_hash, result.stat_key, None)
            else:
                self.store.refresh_print(model, fp, result.stat_key)
            refreshed.append(name)
        self.store.mark_prints_current()
        return refreshed, failed

    def place(self) -> Placement:
        """Place models committed but not yet placed (after an interrupted run)."""
        return place(self.store)

    def _read_from_here(self, result: Ingested, same: Any) -> bool:
        """Whether an indexed model (``same``), whose files were found at ``result.path``, is read from there now:
        its files left the indexed path (a folder moved), or its own name holds them here while it is read from
        a copy under another name (its folder was away meanwhile)."""
        if not Path(same["path"]).exists():
            return True
        on_copy = self.store.alias_name(same["path"]) not in (None, same["name"])
        return result.name == same["name"] and result.path != same["path"] and on_copy

    def _also_at(self, result: Ingested, same: Any, then: Callable[[Any], object] | None = None) -> None:
        """Remember another path (and name) holding an indexed model's files; the model is read from here from
        now on when :func:`_read_from_here` says so."""
        moved = self._read_from_here(result, same)

        def write(cur: Any) -> None:
            if moved:
                self.store.repath(int(same["id"]), result.path, result.stat_key, cur)
            if then is not None:
                then(cur)

        self.store.add_alias(result.path, int(same["id"]), result.stat_key, result.name, then=write)

    @_writes
    def rebuild(self) -> Placement:
        """Recover the whole graph from the stored fingerprints (no model file is read, but once to
        fingerprint again those an older ancestree stored)."""
        run = self.store.start_run("index rebuild")
        _, failed = self._refresh_stale()  # the one case where a rebuild reads files: fingerprints of an older version
        result = rebuild(self.store)
        result.kept_old = [f"{name}: {problem}" for name, problem in failed]
        self.store.finish_run(run, "done", 0, 0)
        return result

    # -- reading ------------------------------------------------------------------------------------
    def ls(self) -> list[dict[str, Any]]:
        return self.store.models()

    def model(self, name: str) -> dict[str, Any]:
        """The stored row of ``name``; :class:`BadInputError` when the index has no such model."""
        row = self.store.model(name)
        if row is None:
            same = self.store.alias_of(name)
            if same is not None:  # byte-identical copies are indexed once: say under which name
                raise BadInputError(name, f"indexed as {same} (the very same files), not under this name")
            raise BadInputError(name, f"no such model in the index {self.store.path}")
        return row

    def show(self, name: str) -> dict[str, Any]:
        """A model with its parents, children (recovered and declared) and its lineage path to the root."""
        row = self.model(name)
        kept = self._declared_kept(name)
        touching, _ = combine_edges([e for e in self.store.edges(names=[name]) if e.source != "declared" or kept(e)])
        parents = [e.record() for e in touching if e.child == name]
        children = [e.record() for e in touching if e.parent == name]
        path = self.store.lineage(name, "recovered")
        if len(path) == 1:  # no recovered parent: follow what the models declare (the first base export keeps)
            while True:
                step = next((p for p in self.store.parents(path[-1], "declared")
                             if p not in path and kept(Edge(p, path[-1], "unknown", 1.0, "declared"))), None)
                if step is None:
                    break
                path.append(step)
        return {**{k: v for k, v in row.items() if k != "placed"}, "placed": row["placed"],
                "parents": parents, "children": children, "lineage": path}

    def _declared_kept(self, name: str) -> Callable[[Edge], bool]:
        """Whether :func:`combine_edges` over the whole index keeps a declared edge touching ``name`` or on its
        declared lineage, decided from ``name``'s ancestors alone: every cycle through such an edge runs through
        them. They are gathered once, along recovered edges and the declared ones not against the recovered
        direction (one search of recovered ancestors per declared parent); an edge is left out when it is
        against the recovered direction or both its ends lie in one strongly connected component of them."""
        import networkx as nx

        recovered_above = functools.cache(self.store.ancestors)
        up = nx.DiGraph()
        up.add_node(name)
        todo = [name]
        while todo:
            child = todo.pop()
            for parent in self.store.parents(child) + [p for p in self.store.parents(child, "declared")
                                                       if child not in recovered_above(p)]:
                if parent not in up:
                    todo.append(parent)
                up.add_edge(parent, child)
        component = {m: k for k, members in enumerate(nx.strongly_connected_components(up)) for m in members}

        def kept(e: Edge) -> bool:
            ring = e.parent in component and component[e.parent] == component.get(e.child)
            return not ring and e.child not in recovered_above(e.parent)

        return kept

    def graph(self, source: str = "recovered") -> ModelGraph:
        """The atlas as a :class:`ModelGraph`, edges as :func:`combine_edges` gives them (declared bases it
        leaves out are the graph's notes). Trees carry the index's ids, which `index ls` and `show` print; with
        ``all`` edges a tree is a connected component (whole indexed trees, joined where a card links two),
        numbered by the smallest of their ids. ``declared`` edges alone split indexed trees: their components
        are numbered from 0."""
        import networkx as nx

        from ancestree.graph.model_graph import ModelGraph

        g = ModelGraph()
        rows = self.store.models()
        for row in rows:
            attrs: dict[str, object] = {"declared_base_model": row["declared_base"]} if row["declared_base"] else {}
            g.add_model(row["name"], row["format"], row["parameters"], **attrs)
        stored = self.store.edges("recovered" if source == "recovered" else None)
        edges, notes = combine_edges(stored)
        if source != "recovered":  # the declared edges left out are decided over the whole index, whatever is exported
            g.notes = notes
        if source == "declared":  # as the cards declare them (relation and all), those combine_edges keeps
            kept = {(e.parent, e.child) for e in edges if e.source != "recovered"}
            edges = [e for e in stored if e.source == "declared" and (e.parent, e.child) in kept]
        for e in edges:  # an edge to a model committed after the models were read waits for the next reading
            if e.parent in g.graph and e.child in g.graph:
                g.add_edge(e.parent, e.child, e.relation, e.confidence, source=e.source)
        indexed = {row["name"]: row["tree"] for row in rows if row["tree"] is not None}
        if source != "declared" and len(indexed) == len(rows):  # every model placed (else numbered from 0)
            tree_of = dict(indexed)
            if source == "all":  # a component is whole indexed trees, joined where a card links two
                for comp in nx.weakly_connected_components(g.graph):
                    tree_of.update(dict.fromkeys(comp, min(indexed[m] for m in comp)))
            nx.set_node_attributes(g.graph, tree_of, "tree")
        return g

    def edges(self, source: str | None = None) -> list[Edge]:
        return self.store.edges(source)


def _elsewhere(where: str, path: str) -> bool:
    """``where`` (an indexed model's or alias's path) is another path than ``path``, and its files are still there."""
    old = Path(where)
    return old.resolve() != Path(path).resolve() and old.exists()


def _with_folders(name: str, path: str) -> Iterator[str]:
    """``name`` (relative to the folder scanned), then with ever more of the folders above it in front: for a
    model at ``…/x/B/m0003`` found as ``m0003``: ``m0003``, ``B/m0003``, ``x/B/m0003``, ... (a name that is
    no tail of its path gets its path's folders)."""
    parts, where = Path(name).parts, Path(path)
    tail = len(parts) if 0 < len(parts) < len(where.parts) and where.parts[-len(parts):] == parts else 0
    yield name
    above = where.parts[:len(where.parts) - tail] if tail else where.parts[:-1]
    for k in range(1, len(above)):  # the filesystem root itself is no folder name
        yield "/".join((*above[len(above) - k:], *parts))


def combine_edges(edges: Iterable[Edge]) -> tuple[list[Edge], list[dict[str, Any]]]:
    """One edge per (parent, child), and no cycle: ``(edges, notes)``.

    An edge both declared and recovered is one, with the recovered relation and confidence and source
    ``declared+recovered``. Recovered edges are acyclic by construction. A declared edge that would close a
    cycle is left out and named in a note, as ``tree`` does (a Model Graph is acyclic): first one against the
    recovered direction (a card naming the model's own recovered descendant), then every edge of a ring of
    cards naming each other (which card is wrong, the cards do not say). Neither depends on the order of the
    edges, and `show` decides both from a model's surroundings (:meth:`Atlas._declared_kept`).
    """
    import networkx as nx

    edges = list(edges)
    recovered = nx.DiGraph([(e.parent, e.child) for e in edges if e.source == "recovered"])
    recovered_above = functools.cache(lambda m: nx.ancestors(recovered, m) if m in recovered else set())
    notes: list[dict[str, Any]] = []
    declared = []
    for e in edges:
        if e.source != "declared":
            continue
        if e.child in recovered_above(e.parent):
            notes.append(_cycle_note(e, f"declared base model {e.parent} is already below it: the edge would close a cycle, left out"))
        else:
            declared.append(e)
    full = nx.DiGraph(recovered)
    full.add_edges_from((e.parent, e.child) for e in declared)
    component = {m: k for k, members in enumerate(nx.strongly_connected_components(full)) for m in members}
    taken = {(e.parent, e.child): e for e in edges if e.source == "recovered"}
    for e in declared:
        key = (e.parent, e.child)
        if component[e.parent] == component[e.child]:
            notes.append(_cycle_note(e, f"declared base model {e.parent} is named back by cards naming each other in a ring: "
                                        "the edge would close a cycle, left out (every edge of the ring)"))
        elif key in taken:
            taken[key] = replace(taken[key], source="declared+recovered")
        else:
            taken[key] = e
    return list(taken.values()), notes


def _cycle_note(e: Edge, problem: str) -> dict[str, Any]:
    return {"model": e.child, "declared_base_model": [e.parent], "problem": problem}


__all__ = ["AddReport", "Atlas", "Outcome", "combine_edges", "sole_writer"]
