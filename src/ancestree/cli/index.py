"""``ancestree index``: a persistent atlas of many models (add, ls, show, export, rebuild)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ancestree.atomic import check_not_an_input, check_output
from ancestree.cli.common import OutputFormat, console, emit, err_console, print_notes, to_json, warn_models_inside
from ancestree.index.store import DEFAULT_DB

index_app = typer.Typer(help="A persistent index of many models: add, list, show, export, rebuild.",
                        no_args_is_help=True)

DbOption = Annotated[str, typer.Option("--db", help="The index file (SQLite).")]


class ExportFormat(str, Enum):
    json = "json"
    graphml = "graphml"
    dot = "dot"
    mermaid = "mermaid"
    html = "html"


def _open(db: str, read_only: bool = True, create: bool = False):
    from ancestree.index import Atlas

    atlas = Atlas(db, read_only=read_only, create=create)
    if read_only and atlas.store.count() and not atlas.store.prints_checked():  # reading: nothing is refreshed here
        err_console.print(f"warning: {db}: made by an older ancestree; `ancestree index add` (of any model) or "
                          "`ancestree index rebuild` reads its models again as this version does", soft_wrap=True, highlight=False)
    return atlas


@index_app.command("add")
def add(
    paths: Annotated[list[str] | None, typer.Argument(help="Model files, folders or zips.")] = None,
    scan: Annotated[list[str] | None, typer.Option("--scan", help="Index every model below this folder.")] = None,
    db: DbOption = DEFAULT_DB,
    dask: Annotated[str | None, typer.Option("--dask", help="Fingerprint on this Dask scheduler (tcp://host:port).")] = None,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Models fingerprinted at once in this process.")] = 1,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No line per model on stderr.")] = False,
) -> None:
    """Fingerprint new models (skipping indexed ones) and place them in the graph incrementally."""
    from ancestree.errors import BadInputError
    from ancestree.index.ingest import resolve_items

    if not paths and not scan:
        raise BadInputError(None, "give model paths or --scan DIR")
    items = resolve_items(paths or [], scan or [])  # the folders are walked once, for the check and the add
    warn_models_inside(items)
    check_not_an_input(db, [path for _, path in items], "--db")

    def progress(outcome) -> None:  # the words and counts of the summary line
        if not quiet:
            detail = f"  ({outcome.detail})" if outcome.detail and outcome.status != "unreadable" else ""
            err_console.print(f"{outcome.status:>10}  {outcome.name}{detail}", highlight=False)

    with _open(db, read_only=False, create=True) as atlas:
        report = atlas.add(items, dask=dask, threads=threads, on_model=progress)
    summary = report.summary()
    if format is OutputFormat.json:
        emit(to_json(summary), None)
        _fail_on_unreadable(report.bad)
        return
    joined = (f" into {summary['trees_touched']} indexed trees ({summary['placed_locally']} by their neighbourhood,"
              f" {summary['recovered_again']} models re-examined)" if summary["trees_touched"] else "")
    console.print(f"added {summary['added']}, updated {summary['updated']}, skipped {summary['skipped']} already indexed, "
                  f"{len(report.bad)} unreadable; "
                  f"placed {summary['placed']}{joined} in {summary['ingest_seconds'] + summary['place_seconds']:.2f} s",
                  highlight=False)
    _fail_on_unreadable(report.bad)


def _fail_on_unreadable(bad: list[str]) -> None:
    """Exit 2 when some input could not be read (one line each on stderr, never wrapped); what was read
    is indexed and committed all the same."""
    for line in bad:
        err_console.print(f"unreadable: {' '.join(line.split())}", highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(2)


@index_app.command("ls")
def ls(
    db: DbOption = DEFAULT_DB,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
) -> None:
    """List the indexed models with their trees."""
    with _open(db) as atlas:
        rows = atlas.ls()
    if format is OutputFormat.json:
        emit(to_json([{k: r[k] for k in ("name", "path", "format", "parameters", "tree", "declared_base")} for r in rows]), None)
        return
    table = Table("model", "format", "parameters", "tree", "declared base")
    for r in rows:
        table.add_row(r["name"], r["format"], f"{r['parameters']:,}", str(r["tree"] if r["tree"] is not None else "-"),
                      str(r["declared_base"] or "-"))
    console.print(table)
    console.print(f"{len(rows)} models", highlight=False)


@index_app.command("show")
def show(
    model: Annotated[str, typer.Argument(help="A model name as `index ls` prints it.")],
    db: DbOption = DEFAULT_DB,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
) -> None:
    """A model's parents, children (relation, confidence, declared or recovered) and lineage to its root."""
    with _open(db) as atlas:
        record = atlas.show(model)
    if format is OutputFormat.json:
        emit(to_json(record), None)
        return
    console.print(Text.assemble((record["name"], "bold"), f"  {record['format']}, {record['parameters']:,} parameters, "
                                f"tree {record['tree']}\n{record['path']}"), highlight=False)
    for title, key, other in (("parents", "parents", "parent"), ("children", "children", "child")):
        table = Table(title, "relation", "confidence", "source", title=title, title_justify="left")
        for e in record[key]:
            table.add_row(e[other], e["relation"], f"{e['confidence']:.2f}", e["source"])
        console.print(table if record[key] else f"{title}: none")
    console.print("lineage: " + " ← ".join(record["lineage"]), highlight=False)


@index_app.command("export")
def export(
    db: DbOption = DEFAULT_DB,
    format: Annotated[ExportFormat, typer.Option("--format", "-f", help="Output format.")] = ExportFormat.json,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write here (atomically) instead of stdout.")] = None,
    source: Annotated[str, typer.Option("--edges", help="recovered, declared or all.")] = "recovered",
) -> None:
    """Write the atlas's Model Graph as json, graphml, dot, mermaid or html."""
    from ancestree.errors import BadInputError
    from ancestree.present import render

    if source not in ("recovered", "declared", "all"):
        raise BadInputError(None, f"--edges must be recovered, declared or all, not {source!r}")
    if output:  # SQLite keeps the index in the file and its -wal / -shm companions (checked before opening it)
        check_output(output, [db, f"{db}-wal", f"{db}-shm"])
    with _open(db) as atlas:
        if output:  # and never into an indexed model
            check_not_an_input(output, atlas.store.paths())
        graph = atlas.graph(source)
    emit(render(graph, format.value), output)
    print_notes(graph.notes)


@index_app.command("rebuild")
def rebuild(
    db: DbOption = DEFAULT_DB,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
) -> None:
    """Recover the whole graph again from the stored fingerprints (reads no model file)."""
    with _open(db, read_only=False) as atlas:
        result = atlas.rebuild()
    for line in result.kept_old:  # their files are gone: recovered from the fingerprints an older version stored
        err_console.print(f"warning: {line}", soft_wrap=True, highlight=False)
    record = {"models": result.members, "trees": result.trees_touched, "seconds": round(result.seconds, 3)}
    if format is OutputFormat.json:
        emit(to_json(record), None)
    else:
        console.print(f"rebuilt the graph of {record['models']} models ({record['trees']} trees) in {record['seconds']} s",
                      highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
