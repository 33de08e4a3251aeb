"""``ancestree lineage train ZOO -o detector.pt``: train the learned parent detector on a zoo."""

from __future__ import annotations

from typing import Annotated

import typer

lineage_app = typer.Typer(help="Learned parent detection (Neural Lineage's detector).", no_args_is_help=True)


@lineage_app.command("train")
def train(
    zoo: Annotated[str, typer.Argument(help="A zoo folder (with truth.json), e.g. from `ancestree zoo make --preset lineage`.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Where to write the detector (.pt).")] = "detector.pt",
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Training epochs.")] = 30,
    max_tasks: Annotated[int, typer.Option("--max-tasks", min=1, help="At most this many training tasks.")] = 400,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Train on the train split of ZOO's families (cross-generation and "none of these" tasks), on CPU."""
    from ancestree.cli.common import check_not_in_zoo, err_console
    from ancestree.lineage.detector import fit_on_zoo

    check_not_in_zoo(output, zoo)
    fit_on_zoo(zoo, output, epochs=epochs, max_tasks=max_tasks, seed=seed, log=lambda m: err_console.print(m))
    err_console.print(f"wrote {output}")


def register(app: typer.Typer) -> None:
    app.add_typer(lineage_app, name="lineage")


__all__ = ["lineage_app", "register", "train"]
