"""``ancestree fingerprint``: fingerprint models (cached) and optionally save the fingerprints to one file."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from ancestree.atomic import check_output
from ancestree.cli.common import OutputFormat, collect_sources, console, emit, progress_bars, to_json
from ancestree.errors import BadInputError
from ancestree.fingerprint import FingerprintCache, fingerprint_many, save_fingerprints

CacheDir = Annotated[Optional[str], typer.Option("--cache", help="Cache directory (default $ANCESTREE_CACHE or ~/.cache/ancestree).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the fingerprint cache.")]


def cache_from_options(cache: str | None, no_cache: bool) -> FingerprintCache | None:
    """The cache the ``--cache`` / ``--no-cache`` options ask for (shared by every command that fingerprints)."""
    if no_cache and cache:
        raise BadInputError(None, "--cache and --no-cache exclude each other")
    return None if no_cache else FingerprintCache(cache)


def gather(paths: list[str] | None, scan: list[str] | str | None) -> list[tuple[str, str]]:
    """``(id, path)`` of the models named on the command line and found under each ``--scan`` folder."""
    return [(model_id, str(path)) for model_id, path in collect_sources(list(paths or []), scan)]


def fingerprint_cmd(
    paths: Annotated[Optional[list[str]], typer.Argument(help="Weight files, model folders or zips.")] = None,
    scan: Annotated[Optional[list[str]], typer.Option("--scan", help="Also fingerprint every model below this folder; may be repeated.")] = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Save all fingerprints to this .npz file.")] = None,
    cache: CacheDir = None,
    no_cache: NoCache = False,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format of the summary.")] = OutputFormat.text,
) -> None:
    """Fingerprint models: per-tensor hashes, exact moments and sketches, in one streaming pass each."""
    store = cache_from_options(cache, no_cache)
    items = gather(paths, scan)
    if output:
        check_output(output, [p for _, p in items])  # before fingerprinting, not after
        if not output.endswith(".npz"):  # the file is always an npz archive: another name would mislead
            raise BadInputError(output, "--output takes a .npz file (fingerprints are arrays); --format json prints their summaries")
    fps = fingerprint_many(items, store, progress=format is OutputFormat.text and progress_bars())
    if output:
        save_fingerprints(fps, output)
    if format is OutputFormat.json:
        emit(to_json([fp.summary() for fp in fps]), None)
        return
    table = Table("id", "format", "parameters", "tensors", "dtypes", "content key", "declared base")
    for fp in fps:
        s = fp.summary()
        dtypes = ", ".join(f"{k}" for k in s["dtypes"])
        table.add_row(s["id"], s["format"], f"{s['parameters']:,}", str(s["tensors"]), dtypes, s["content_key"][:12], str(s["declared_base_model"] or "-"))
    console.print(table)
    if output:
        console.print(f"saved {len(fps)} fingerprint(s) to {output}")


def register(app: typer.Typer) -> None:
    app.command("fingerprint")(fingerprint_cmd)


__all__ = ["cache_from_options", "fingerprint_cmd", "gather", "register"]
