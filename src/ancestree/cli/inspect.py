"""``ancestree inspect``: what a model file or folder holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ancestree.cli.common import OutputFormat, console, emit, err_console, print_table, to_json
from ancestree.fingerprint.compute import unreadable_weights
from ancestree.io import load_model
from ancestree.io.loader import cache_revision


def inspect(
    path: Annotated[str, typer.Argument(help="A weight file, model folder or zip of one.")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    tensors: Annotated[bool, typer.Option("--tensors", help="Also list every tensor.")] = False,
) -> None:
    """Show a model's format, size, dtypes and declared base model."""
    with load_model(path) as model:
        record = model.summary()
        problem = unreadable_weights(model)
        if problem is not None:  # shown as stored; the other commands refuse it
            err_console.print(f"warning: {path}: {problem}; the parameters counted are its floating-point tensors only",
                              soft_wrap=True, highlight=False)
        if (snapshot := cache_revision(Path(path))) is not None:  # which of a cache repository's revisions was read
            record["revision"] = snapshot.name
        if tensors:
            record["tensor_list"] = [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in model.tensors.values()
            ]
        if format is OutputFormat.json:
            emit(to_json(record), None)
            return
        table = Table(show_header=False)
        table.add_row("format", record["format"])
        table.add_row("parameters", f"{record['parameters']:,}")
        table.add_row("tensors", str(record["tensors"]))
        table.add_row("dtypes", ", ".join(f"{k}: {v:,}" for k, v in record["dtypes"].items()))
        table.add_row("declared base model", str(record["declared_base_model"] or "-"))
        table.add_row("size on disk", f"{model.meta.size:,} bytes in {len(model.meta.files)} file(s)")
        if "revision" in record:
            table.add_row("revision", f"{record['revision']} (of the Hugging Face cache)")
        print_table(f"{record['id']}", table)
        if tensors:
            listing = Table("name", "shape", "dtype")
            for t in model.tensors.values():
                listing.add_row(t.name, "×".join(map(str, t.shape)) or "scalar", t.dtype)
            console.print(listing)


def register(app: typer.Typer) -> None:
    app.command()(inspect)


__all__ = ["inspect", "register", "Path"]
