"""``ancestree zoo``: make synthetic model zoos with known ground truth."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from ancestree.cli.common import OutputFormat, console, emit, progress_bars, to_json

zoo_app = typer.Typer(help="Synthetic model zoos with known ground truth.", no_args_is_help=True)


@zoo_app.command("make")
def make(
    out: Annotated[str, typer.Argument(help="Folder to write the zoo into (resumed if it holds an unfinished zoo).")],
    preset: Annotated[str, typer.Option("--preset", "-p", help="Preset name (see `ancestree zoo presets`).")] = "tiny",
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives byte-identical files.")] = 0,
    workers: Annotated[int, typer.Option("--workers", "-j", min=0, help="Worker processes (default: all cores).")] = 0,
    declare_fraction: Annotated[
        float, typer.Option("--declare-fraction", help="Fraction of non-root model cards that declare base_model.")
    ] = 0.5,
    dtype: Annotated[str, typer.Option(
        "--dtype", help="Float dtype the trained models are released in: float32 or bfloat16 (as most hub models; "
                        "training runs in float32 from the parent as released).")] = "float32",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train and write a zoo: one model folder per model and OUT/truth.json."""
    from ancestree.zoo import make_zoo

    path = make_zoo(out, preset, seed, workers or os.cpu_count() or 1, declare_fraction,
                    progress=progress_bars(quiet), dtype=dtype)
    console.print(f"wrote {path}", highlight=False)


@zoo_app.command("presets")
def presets(
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
) -> None:
    """List the presets with their models, relation kinds, size on disk and measured time."""
    from ancestree.zoo.presets import describe_presets

    rows = describe_presets()
    if format is OutputFormat.json:
        emit(to_json(rows), None)
        return
    table = Table("preset", "models", "relations", "size", "time (2 cores)", "description")
    for r in rows:
        table.add_row(r["name"], str(r["models"]), ", ".join(r["relations"]), r["size"] or "-", r["time"] or "-",
                      r["description"])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(zoo_app, name="zoo")
