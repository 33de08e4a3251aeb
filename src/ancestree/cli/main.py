"""Entry point: builds the typer app from the command modules and maps errors to exit codes.

Exit status: 0 success; 2 bad usage or bad input (one line on stderr naming the file); 1 anything else.
``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

from ancestree.errors import BadInputError

#: Command modules; each has ``register(app)``. Missing optional dependencies hide a command, never break the CLI.
COMMAND_MODULES = ("inspect", "zoo", "parent", "lineage", "fingerprint", "compare", "index", "serve", "tree", "eval", "probex")

app = typer.Typer(
    name="ancestree",
    help="Recover the family history of neural networks from their weights.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """Recover the family history of neural networks from their weights."""
    if version:
        from ancestree import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


for _name in COMMAND_MODULES:
    importlib.import_module(f"ancestree.cli.{_name}").register(app)


def run(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the contract's status codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        result = app(args=args, prog_name="ancestree", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors: click prints them, status 2
        exc.show()
        sys.exit(2)
    except click.exceptions.Abort:
        sys.exit(1)
    except BadInputError as exc:
        if debug:
            raise
        print(f"ancestree: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence promised by the contract
        if debug:
            raise
        print(f"ancestree: internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for a traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
