"""``ancestree serve``: the web atlas (a read-only JSON API and one page) over an index file."""

from __future__ import annotations

from typing import Annotated

import typer

from ancestree.cli.common import err_console
from ancestree.index.store import DEFAULT_DB


def serve(
    db: Annotated[str, typer.Option("--db", help="The index file (SQLite) to serve, read-only.")] = DEFAULT_DB,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on.")] = 8000,
    experts: Annotated[str | None, typer.Option("--experts", help="ProbeX experts folder for text search.")] = None,
) -> None:
    """Serve the atlas: the Model Graph page at / and its JSON API under /api (schema at /openapi.json)."""
    import uvicorn

    from ancestree.web import create_app

    app = create_app(db, experts)
    err_console.print(f"ancestree atlas of {db} on http://{host}:{port}/ (Ctrl-C to stop)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    app.command()(serve)
