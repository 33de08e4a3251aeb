"""The atlas server: a read-only JSON API over an index file, and the one page that explores it.

Everything it answers comes from the index (opened read-only, one SQLite connection per server thread);
the only files it reads are the page's own static files, and, for text search (ProbeX experts given with
``--experts``), the weight files of models that are in the index. The OpenAPI schema is at ``/openapi.json`` (browsable at ``/docs``).
"""

from __future__ import annotations

import os
import threading
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from ancestree import __version__
from ancestree.errors import BadInputError
from ancestree.fingerprint.types import short_name
from ancestree.index.atlas import Atlas
from ancestree.index.store import Edge, IndexStore

STATIC = Path(str(resources.files("ancestree.web") / "static"))

Name = Annotated[str, Query(min_length=1, max_length=1024, description="A model name as the index lists it.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many results.")]
EdgeSource = Annotated[str, Query(pattern="^(recovered|declared|all)$", description="Which edges: recovered, declared or all.")]


class AtlasReader:
    """Read-only access to an index from many server threads: one connection per thread, shared caches."""

    def __init__(self, db: str | os.PathLike[str]) -> None:
        self.db = Path(db)
        IndexStore(self.db, read_only=True).close()  # fail now, with a clear message, if it is not an index
        self._local = threading.local()
        self._lock = threading.Lock()
        self._graph: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {}

    @property
    def atlas(self) -> Atlas:
        atlas = getattr(self._local, "atlas", None)
        if atlas is None:
            atlas = self._local.atlas = Atlas(self.db, read_only=True)
        return atlas

    def graph(self, source: str) -> dict[str, Any]:
        """The graph JSON (contract shape plus ``source`` per edge and a short ``label`` per model, as the
        pictures draw it), cached until the index changes."""
        version = self.atlas.store.version()
        cached = self._graph.get(source)
        if cached is not None and cached[0] == version:
            return cached[1]
        store = self.atlas.store
        graph = self.atlas.graph(source)  # what `index export --edges SOURCE` writes: its edges, notes and tree ids
        tree_of = graph.trees()  # models as that one read saw them (an `add` may commit more meanwhile)
        models = [{"id": m, "format": a["format"], "parameters": a["parameters"], "tree": tree_of[m],
                   "declared_base_model": a.get("declared_base_model"), "label": short_name(m, 18)}
                  for m, a in sorted(graph.graph.nodes(data=True))]
        edges = [Edge(p, c, a["relation"], a["confidence"], a["source"]).record() for p, c, a in graph.edges()]
        payload = {"models": models, "edges": edges, "trees": store.trees(), "notes": graph.notes}
        with self._lock:
            self._graph[source] = (version, payload)
        return payload


def create_app(db: str | os.PathLike[str], experts: str | os.PathLike[str] | None = None) -> FastAPI:
    """The FastAPI app serving the index at ``db``; ``experts`` is a ProbeX experts folder for text search."""
    reader = AtlasReader(db)
    probex = _load_experts(experts)
    probex_lock = threading.Lock()
    app = FastAPI(title="ancestree atlas", version=__version__,
                  description="Read-only JSON API over an ancestree index: models, lineage, the Model Graph, search.")

    def known(name: str) -> dict[str, Any]:
        row = reader.atlas.store.model(name)
        if row is None:  # anything not in the index, a path included, is refused
            raise HTTPException(404, f"no model named {name!r} in the index")
        return row

    @app.get("/api/status", summary="What the index holds")
    def status() -> dict[str, Any]:
        version = reader.atlas.store.version()
        return {"index": reader.db.name, "models": version[0], "edges": version[1],
                "trees": len(reader.atlas.store.trees()), "experts": probex is not None, "version": __version__}

    @app.get("/api/models", summary="Indexed models, by name")
    def models(tree: Annotated[int | None, Query(ge=0, le=2**62, description="Only this tree.")] = None,
               limit: Limit = 100, offset: Annotated[int, Query(ge=0, le=2**62)] = 0) -> dict[str, Any]:
        store = reader.atlas.store
        rows = store.models("tree = ?", (tree,)) if tree is not None else store.models()
        return {"total": len(rows), "models": [_public(r) for r in rows[offset:offset + limit]]}

    @app.get("/api/model", summary="One model: parents, children, lineage path to its root")
    def model(id: Name) -> dict[str, Any]:
        known(id)
        record = reader.atlas.show(id)
        return _public(record) | {k: record[k] for k in ("parents", "children", "lineage")}

    @app.get("/api/graph", summary="The Model Graph (models, edges, trees)")
    def graph(edges: EdgeSource = "recovered") -> dict[str, Any]:
        return reader.graph(edges)

    @app.get("/api/search", summary="Models whose name contains the query")
    def search(q: Annotated[str, Query(min_length=1, max_length=200, description="Part of a model name.")],
               limit: Limit = 20) -> dict[str, Any]:
        return {"query": q, "results": [_public(r) for r in reader.atlas.store.search(q, limit)]}

    @app.get("/api/text-search", summary="Models whose weights match a sentence (ProbeX experts)")
    def text_search(q: Annotated[str, Query(min_length=1, max_length=200, description="What the model was trained on.")],
                    limit: Limit = 20) -> dict[str, Any]:
        if probex is None:
            raise HTTPException(503, "no experts loaded (start the server with --experts DIR)")
        # every indexed model whose files are still there; the experts read their weights (O(N) a query)
        paths = [(r["name"], r["path"]) for r in reader.atlas.store.models() if Path(r["path"]).exists()]
        with probex_lock:  # the experts keep caches: one query at a time
            found = probex.search(q, paths)
        # a query unlike every class the experts know is still ranked, with a note saying so
        return {"query": q, "results": found["results"][:limit], **({"note": found["note"]} if "note" in found else {})}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a model row (no hashes of files, no internal ids)."""
    return {"id": row["name"], "path": row["path"], "format": row["format"], "parameters": row["parameters"],
            "tree": row["tree"], "declared_base_model": row["declared_base"],
            "declared_relation": row["declared_relation"], "content_key": row.get("content_key")}


def _load_experts(experts: str | os.PathLike[str] | None) -> Any:
    """ProbeX experts for text search, or None (then the page hides its text search box)."""
    if experts is None:
        return None
    try:
        from ancestree.probex import ProbeXExperts
    except ImportError as exc:  # this install has no ProbeX: say so instead of a traceback
        raise BadInputError(experts, f"text search needs ancestree.probex ({exc})") from None
    return ProbeXExperts.load(experts)


__all__ = ["AtlasReader", "create_app"]
