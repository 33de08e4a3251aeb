"""``ancestree eval``: score a recovered Model Graph against ground truth."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ancestree.cli.common import OutputFormat, emit, print_table, to_json
from ancestree.errors import BadInputError


def eval_graph(
    predicted: Annotated[str, typer.Argument(help="The recovered graph (tree --format json).")],
    truth: Annotated[str, typer.Argument(help="The true graph (a zoo's truth.json).")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
) -> None:
    """Edge precision / recall / F1, direction, tree, relation and MoTHer-style accuracy."""
    from ancestree.graph.evaluate import evaluate, load_scored

    pred_graph, true_graph = load_scored(predicted), load_scored(truth)
    try:
        scores = evaluate(pred_graph, true_graph).to_dict()
    except ValueError as exc:  # no model id in common
        raise BadInputError(predicted, f"{exc} ({truth})") from None
    if format is OutputFormat.json:
        emit(to_json(scores), None)
        return
    table = Table("metric", "value")
    for key, value in scores.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    print_table(f"{predicted} vs {truth}", table)


def register(app: typer.Typer) -> None:
    app.command(name="eval")(eval_graph)


__all__ = ["eval_graph", "register"]
