"""``ancestree probex``: train tree experts on a zoo, say what a model was trained on, find models by text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ancestree.cli.common import OutputFormat, check_not_in_zoo, console, emit, print_table, err_console, progress_bars, to_json
from ancestree.atomic import check_writable
from ancestree.errors import BadInputError
from ancestree.io import scan_models

probex_app = typer.Typer(help="Learn from weights what a model was trained on (ProbeX tree experts).", no_args_is_help=True)


@probex_app.command("train")
def train(
    zoo: Annotated[Path, typer.Argument(help="A zoo folder with truth.json (classes and splits per model).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write the experts to (resumable).")],
    method: Annotated[str, typer.Option("--method", help="'ours' or 'faithful' (the paper's ProbeX).")] = "ours",
    epochs: Annotated[int, typer.Option("--epochs", min=0, help="Training epochs per expert (0: the method's default).")] = 0,
    text_encoder: Annotated[str, typer.Option("--text-encoder", help="'minilm' or 'clip:/local/clip/folder'.")] = "minilm",
) -> None:
    """Train one expert per Model Tree found in ZOO (trees recovered from weights, layer chosen on val)."""
    from ancestree.probex import ProbeXExperts
    from ancestree.probex.model import PRESETS, with_overrides
    from ancestree.probex.text import check_text_encoder

    if method not in PRESETS:
        raise typer.BadParameter(f"--method must be one of {sorted(PRESETS)}")
    check_text_encoder(text_encoder)
    if output.exists() and (not output.is_dir() or (any(output.iterdir()) and not (output / "experts.json").is_file()
                                                    and not (output / "cache").is_dir())):
        raise BadInputError(output, "is not an (unfinished) experts folder; give a new or empty folder")
    check_not_in_zoo(output, zoo)
    check_writable(output / "experts.json")
    config = with_overrides(PRESETS[method], epochs=epochs) if epochs > 0 else PRESETS[method]
    experts = ProbeXExperts(config, text_encoder=text_encoder, resume_dir=output, progress=progress_bars()).fit(zoo)
    experts.save(output)
    for model_id, problem in experts.skipped_.items():
        err_console.print(f"warning: {model_id}: {problem}; left out of training")
    groups = len(experts.router.trees)
    split = f" ({groups} groups by weight layout)" if groups != experts.trees_ else ""
    console.print(f"{len(experts.experts)} expert(s) for {experts.trees_} tree(s){split} written to {output}", style="green")


@probex_app.command("predict")
def predict(
    model: Annotated[str, typer.Argument(help="A model file or folder.")],
    experts: Annotated[Path, typer.Option("--experts", help="Folder written by `probex train`.")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    top: Annotated[int, typer.Option("--top", min=1, help="Classes shown in text output.")] = 10,
) -> None:
    """Route MODEL to its tree's expert and print the classes it was most likely trained on."""
    from ancestree.probex import ProbeXExperts

    record = ProbeXExperts.load(experts).predict(model)
    if format is OutputFormat.json:
        emit(to_json(record), None)
        return
    if record["tree"] is None:
        console.print(f"{model}: no expert for this tree (the model matches none of the trees the experts know)")
        return
    table = Table("class", "probability")
    for c in record["classes"][:top]:
        table.add_row(c["name"], f"{c['probability']:.3f}")
    print_table(f"{model}  (tree: {record['tree']})", table)


@probex_app.command("search")
def search(
    text: Annotated[str, typer.Argument(help='What to look for, e.g. "a model that knows red striped triangles".')],
    experts: Annotated[Path, typer.Option("--experts", help="Folder written by `probex train`.")],
    folder: Annotated[Path, typer.Option("--in", help="Folder of models to search.")],
    classes: Annotated[list[str] | None, typer.Option("--classes", help="Class names to rank against (may be unseen; several names may follow one --classes, after the query).")] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    top: Annotated[int, typer.Option("--top", min=1, help="Results shown in text output.")] = 10,
) -> None:
    """Rank the models in --in by how well their weights match TEXT (zero-shot over class names)."""
    from ancestree.probex import ProbeXExperts

    models = list(scan_models(folder))
    if not models:
        raise BadInputError(folder, "no models found below this folder")
    record = ProbeXExperts.load(experts).search(text, models, classes)
    damaged = record.get("damaged", {})
    for model_id, problem in damaged.items():
        err_console.print(f"warning: {model_id}: {problem}; skipped")
    if "note" in record:
        err_console.print(f"note: {record['note']}")
    if format is OutputFormat.json:
        emit(to_json(record), None)
        return
    table = Table("rank", "model", "score")
    for rank, r in enumerate(record["results"][:top], 1):
        table.add_row(str(rank), r["model"], f"{r['score']:.4f}")
    print_table(f"search: {text}", table)
    skipped = len(models) - len(record["results"]) - len(damaged)
    if skipped:
        console.print(f"{skipped} model(s) skipped: no expert for their tree")


def register(app: typer.Typer) -> None:
    app.add_typer(probex_app, name="probex")
