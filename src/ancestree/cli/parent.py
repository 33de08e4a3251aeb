"""``ancestree parent``: which candidate is a model's parent, or none of them."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ancestree.atomic import check_output
from ancestree.cli.common import OutputFormat, console, emit, print_table, err_console, to_json
from ancestree.errors import BadInputError


def parent(
    child: Annotated[str, typer.Argument(help="The model whose parent is sought.")],
    candidates: Annotated[Optional[list[str]], typer.Option("--candidates", "-c", help="Candidate parents (several paths may follow one --candidates, after CHILD).")] = None,
    probe_data: Annotated[Optional[str], typer.Option("--probe-data", help="Probe inputs (.npy, or .npz with an array 'x'/'inputs'/the first one).")] = None,
    detector: Annotated[Optional[str], typer.Option("--detector", help="A detector trained with `ancestree lineage train`.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="weights | linearized-{l1,l2,cka} | baseline-{l1,l2,cka} | detector (default: detector with --detector, linearized-l1 with --probe-data, else weights).")] = None,
    ancestors: Annotated[bool, typer.Option("--ancestors", help="Rank grandparents and older too, with generations apart.")] = False,
    evidence: Annotated[bool, typer.Option("--evidence", help="Include each candidate's raw evidence in the JSON.")] = False,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the result to this file.")] = None,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="Cache the weights method's fingerprints ($ANCESTREE_CACHE or ~/.cache/ancestree).")] = True,
) -> None:
    """Rank candidate parents of CHILD (a score and a probability each; parent null when none is plausible)."""
    from ancestree.lineage import rank_parents

    paths = list(candidates or [])
    if not paths:
        raise BadInputError(child, "no candidates given (use --candidates PATH...)")
    if output:
        check_output(output, [child, *paths, *(p for p in (probe_data, detector) if p)])
    result = rank_parents(child, paths, method=method, probe_data=probe_data, detector=detector, ancestors=ancestors,
                          cache=True if cache else None)
    for note in result.notes:  # on stderr in every format: stdout stays the result
        err_console.print(f"warning: {note['model']}: {note['problem']}", soft_wrap=True)
    if format is OutputFormat.json or output:
        emit(to_json(result.to_dict(with_evidence=evidence)), output)
        return
    _print(result)


def _print(result) -> None:
    table = Table()
    for col in ("candidate", "score", "probability", "generations"):
        table.add_column(col)
    for c in result.ranking:
        table.add_row(c.candidate, f"{c.score:.3f}", f"{c.probability:.3f}", "" if c.generations is None else str(c.generations))
    table.add_row("(none of these)", "", f"{result.p_none:.3f}", "")
    print_table(f"parent of {result.child} ({result.method}): {result.parent or 'none of these'}", table)
    if result.merge_of:
        console.print(f"merge: {result.child} is an exact combination of {' and '.join(result.merge_of)} "
                      "(tree recovery over the child and the candidates); each is one of its parents", soft_wrap=True)
    for cand, reason in result.incomparable.items():
        console.print(Text.assemble(("incomparable", "yellow"), f": {cand}: {reason}"))


def register(app: typer.Typer) -> None:
    app.command()(parent)


__all__ = ["parent", "register"]
