"""``ancestree serve``: the web atlas (a read-only JSON API and one page) over an index file."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from ancestree.cli.common import err_console
from ancestree.errors import BadInputError
from ancestree.index.store import DEFAULT_DB


def serve(
    db: Annotated[str, typer.Option("--db", help="The index file (SQLite) to serve, read-only.")] = DEFAULT_DB,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")] = 8000,
    experts: Annotated[str | None, typer.Option("--experts", help="ProbeX experts folder for text search.")] = None,
) -> None:
    """Serve the atlas: the Model Graph page at / and its JSON API under /api (schema at /openapi.json)."""
    import uvicorn

    from ancestree.web import create_app

    app = create_app(db, experts)
    port = _check_bindable(host, port)
    err_console.print(f"ancestree atlas of {db} on http://{host}:{port}/ (Ctrl-C to stop)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _check_bindable(host: str, port: int) -> int:
    """The port to listen on (port 0: a free one, so that the address printed is the one served); one line and
    status 2 for an address in use or a host that does not resolve (uvicorn would exit 3)."""
    if not host:  # every interface: asyncio's own rules, nothing to check here
        return port
    try:
        if port == 0:
            family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.bind(address)
                port = int(probe.getsockname()[1])
        # every address the name resolves to, bound as asyncio binds them (IPv6 sockets IPv6-only)
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind(address)
    except OSError as exc:
        raise BadInputError(f"{host}:{port}", f"cannot listen here ({exc.strerror or exc})") from None
    return port


def register(app: typer.Typer) -> None:
    app.command()(serve)
