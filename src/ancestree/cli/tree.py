"""``ancestree tree``: recover the Model Graph of a set of models and write it in one of several formats."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ancestree.cli.common import collect_sources, emit, err_console, print_notes, progress_bars
from ancestree.atomic import check_output
from ancestree.errors import BadInputError, listed


class TreeFormat(str, Enum):
    text = "text"
    json = "json"
    dot = "dot"
    graphml = "graphml"
    mermaid = "mermaid"
    html = "html"


class Method(str, Enum):
    ours = "ours"
    mother = "mother"
    mother_lora = "mother-lora"


class KurtosisOrder(str, Enum):
    parent_higher = "parent-higher"
    parent_lower = "parent-lower"


#: Output suffix -> format, used when ``-o`` is given without ``--format``.
SUFFIX_FORMAT = {".json": "json", ".dot": "dot", ".gv": "dot", ".graphml": "graphml", ".mmd": "mermaid",
                 ".mermaid": "mermaid", ".html": "html", ".htm": "html", ".txt": "text"}


def readable(sources: list[tuple[str, Path]], cache: bool, skip: bool) -> tuple[list[tuple[str, Path]], list]:
    """The sources that can be read and their fingerprints; with ``skip``, each unreadable one is named on
    stderr and left out (without, the first one stops the command)."""
    from ancestree.fingerprint import fingerprint_many

    def report(exc: BadInputError) -> None:
        err_console.print(f"skipped: {exc}", highlight=False, soft_wrap=True)

    fps = fingerprint_many(sources, cache=True if cache else None, progress=progress_bars(),
                           on_unreadable=report if skip else None)
    kept = {f.id for f in fps}
    sources = [(mid, p) for mid, p in sources if mid in kept]
    if not sources:
        raise BadInputError(None, "no readable models: every one given was skipped")
    return sources, fps


def recover(sources: list[tuple[str, Path]], method: Method, trees: int | None, use_declared: bool, cache: bool,
            kurtosis_order: str = "parent-higher", fps: list | None = None):
    """The recovered :class:`~ancestree.graph.ModelGraph` (fingerprints for ours, raw weights for MoTHer;
    ``fps``: the sources' fingerprints when already computed)."""
    if method is Method.ours:
        from ancestree.graph import GraphRecovery

        if fps is None:
            fps = readable(sources, cache, skip=False)[1]
        return GraphRecovery(use_declared=use_declared).fit(fps).graph_
    from ancestree.graph import MoTHer

    distance = "lora" if method is Method.mother_lora else "rms"
    return MoTHer(n_trees=trees, distance=distance, kurtosis_order=kurtosis_order).fit([(mid, p) for mid, p in sources]).graph_


def tree(
    paths: Annotated[list[str] | None, typer.Argument(help="Model files or folders (ids are the paths as given).")] = None,
    scan: Annotated[list[str] | None, typer.Option("--scan", help="Also every model below this folder (ids relative to it); may be repeated.")] = None,
    format: Annotated[TreeFormat | None, typer.Option("--format", "-f", help="Output format (default: text on a terminal, else json; or from -o's suffix).")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write to this file (atomically) instead of stdout.")] = None,
    png: Annotated[str | None, typer.Option("--png", help="Also draw the graph into this PNG file.")] = None,
    method: Annotated[Method, typer.Option("--method", help="ours (default) or the MoTHer baseline (mother, mother-lora).")] = Method.ours,
    trees: Annotated[int | None, typer.Option("--trees", min=1, help="Number of trees K for --method mother (the paper gives it; without it, one per group of comparable models); ours estimates it.")] = None,
    kurtosis_order: Annotated[KurtosisOrder | None, typer.Option("--kurtosis-order", help="MoTHer only: parent-higher (the paper's rule) or parent-lower (its hand flip).")] = None,
    write_cards: Annotated[bool, typer.Option("--write-cards", help="Write base_model / base_model_relation into each model folder's README.md.")] = False,
    force: Annotated[bool, typer.Option("--force", help="With --write-cards: overwrite declared values.")] = False,
    declared: Annotated[bool, typer.Option("--declared/--no-declared", help="Use declared base models as a prior (ours).")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Cache fingerprints ($ANCESTREE_CACHE or ~/.cache/ancestree).")] = True,
    skip_unreadable: Annotated[bool, typer.Option("--skip-unreadable", help="Leave out models that cannot be read (each named on stderr) instead of stopping.")] = False,
) -> None:
    """Recover the Model Graph (which model came from which) from the weights alone."""
    from ancestree.present import WRITERS

    if output and not format and Path(output).suffix.lower() in (".png", ".svg", ".jpg", ".jpeg", ".pdf"):
        raise BadInputError(output, "-o writes text formats (json, dot, graphml, mermaid, html); use --png FILE for a picture")
    sources = collect_sources(list(paths or []), scan)
    if output and png and Path(output).resolve() == Path(png).resolve():
        raise BadInputError(png, "--png and --output name the same file")
    if png in ("-", "/dev/stdout") and output in (None, "", "-", "/dev/stdout"):  # one stream, a PNG and text in it
        raise BadInputError(png, "--png writes to standard output, where the graph goes too: give -o FILE for the graph")
    for target, option in ((output, "--output"), (png, "--png")):
        if target:  # before the recovery, and before either file is written
            check_output(target, [p for _, p in sources], option)
    fmt = format.value if format else SUFFIX_FORMAT.get(Path(output).suffix.lower(), "json") if output else (
        "text" if sys.stdout.isatty() else "json")
    if trees is not None and method is Method.ours:
        err_console.print("note: --trees is ignored by the default method, which estimates the number of trees")
    order = (kurtosis_order or KurtosisOrder.parent_higher).value
    if kurtosis_order is not None and method is Method.ours:
        err_console.print("note: --kurtosis-order only applies to --method mother / mother-lora")
    fps = None
    if skip_unreadable:  # read first, so that MoTHer too sees only what can be read
        sources, fps = readable(sources, cache, skip=True)
    graph = recover(sources, method, trees, declared, cache, order, fps)
    text = WRITERS[fmt](graph)
    cards = None
    if write_cards:  # every card read and checked before anything is printed or written
        from ancestree.present.cards import plan_cards

        cards = plan_cards(graph, dict(sources), force=force)
    if png:
        from ancestree.present.png import write_png

        write_png(graph, png)
    emit(text, output)
    if cards is not None:
        files = []
        for ch in cards.apply():
            if ch.action in ("kept", "overwritten"):
                err_console.print(f"card {ch.model}: declared base_model {ch.declared!r}, recovered {ch.base_model!r} ({ch.action})")
            elif ch.action == "skipped" and ch.reason == "not a model folder":
                files.append(ch.model)
            elif ch.action == "skipped":
                err_console.print(f"card {ch.model}: not written ({ch.reason})", soft_wrap=True)
        if files:  # said once: with every model a loose file, --write-cards wrote nothing and said nothing
            err_console.print(f"cards: {len(files)} model(s) with a recovered base are files, not folders, and have no card "
                              f"to write ({listed(files)})", soft_wrap=True, highlight=False)
    if fmt != "text" or output or not sys.stdout.isatty():  # text on the terminal lists them already
        print_notes(graph.notes)


def register(app: typer.Typer) -> None:
    app.command()(tree)


__all__ = ["collect_sources", "readable", "recover", "register", "tree"]
