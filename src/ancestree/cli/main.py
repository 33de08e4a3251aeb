"""Entry point: builds the typer app from the command modules and maps errors to exit codes.

Exit status: 0 success; 2 bad usage or bad input (one line on stderr naming the file); 1 anything else.
``--debug`` anywhere on the command line shows the traceback instead.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
import traceback
import types
from typing import NoReturn

import click
import typer

from ancestree.errors import BadInputError

_typer_click: types.ModuleType
try:  # typer >= 0.22 raises the exceptions of its own vendored copy of click
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - older typer uses click itself
    _typer_click = click.exceptions

_USAGE_ERRORS = (click.exceptions.ClickException, _typer_click.ClickException)
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)
_HELP_ON_NO_ARGS = tuple(
    getattr(m, "NoArgsIsHelpError") for m in (click.exceptions, _typer_click) if hasattr(m, "NoArgsIsHelpError")
)

#: Command modules; each has ``register(app)``. Missing optional dependencies hide a command, never break the CLI.
COMMAND_MODULES = ("inspect", "zoo", "parent", "lineage", "fingerprint", "compare", "index", "serve", "tree", "eval", "probex")

app = typer.Typer(
    name="ancestree",
    help="Recover the family history of neural networks from their weights.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



def _print_version(value: bool) -> None:
    if value:
        from ancestree import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Recover the family history of neural networks from their weights.

    Bad input exits with status 2 and one line naming the file; add --debug anywhere for a traceback.
    """


for _name in COMMAND_MODULES:
    importlib.import_module(f"ancestree.cli.{_name}").register(app)


#: Options that take several values (``--candidates A B C``), by command; click takes one value per flag.
MULTI_VALUE = {("parent",): ("--candidates", "-c"), ("probex", "search"): ("--classes",)}


def expand_multi_values(args: list[str]) -> list[str]:
    """``-c A B C`` -> ``-c A -c B -c C`` for the options of :data:`MULTI_VALUE`: greedy up to the next
    option, as argparse's ``nargs='+'`` does, so a positional argument goes before such an option and is
    never silently taken for one of its values."""
    options = next((opts for cmd, opts in MULTI_VALUE.items() if tuple(args[:len(cmd)]) == cmd), ())
    out: list[str] = []
    flag = None
    for i, arg in enumerate(args):
        if arg == "--":
            return out + args[i:]
        if arg.startswith("-"):
            flag = arg if arg in options else None
            out.append(arg)
        elif flag is not None and out[-1] != flag:
            out += [flag, arg]
        else:
            out.append(arg)
    return out


#: Exit status when the reader of our output went away (``ancestree index ls | head -1``): 128 + SIGPIPE, as a
#: Unix tool killed by that signal exits.
CLOSED_PIPE = 141


def _closed_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, a write to a closed pipe (typer turns one into
    ``sys.exit(1)`` inside its handler, so the pipe error is the exit's context)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EPIPE:
            return True
        seen = seen.__context__
    return False


def _exit_on_closed_pipe() -> NoReturn:
    """Stop quietly: no message, and the interpreter's last flush of stdout goes to /dev/null instead of
    failing again on the closed pipe (it would print 'Exception ignored ... BrokenPipeError')."""
    try:
        if sys.__stdout__ is not None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())
    except (AttributeError, OSError, ValueError):  # no real stdout: nothing left to flush there
        pass
    sys.exit(CLOSED_PIPE)


def _empty_argument(args: list[str]) -> str | None:
    """How to name the first empty argument (``''``, ``--db=``), or None when there is none."""
    for i, arg in enumerate(args):
        if arg == "":
            before = args[i - 1] if i and args[i - 1].startswith("-") else None
            return f"the value of {before}" if before else f"argument {i + 1}"
        if arg.startswith("--") and arg.endswith("=") and len(arg) > 3:
            return f"the value of {arg[:-1]}"
    return None


def run(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the contract's status codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    args = expand_multi_values(args)
    empty = _empty_argument(args)
    if empty is not None:  # '' meant '.' to some commands, the current folder to --cache, nothing to -o
        print(f"ancestree: error: {empty} is empty: give a path or value", file=sys.stderr)
        sys.exit(2)
    try:
        result = app(args=args, prog_name="ancestree", standalone_mode=False)
        sys.stdout.flush()  # a closed pipe is found here, not in the interpreter's flush at exit
    except SystemExit as exc:
        if _closed_pipe(exc):
            _exit_on_closed_pipe()
        raise
    except _EXITS as exc:
        sys.exit(exc.exit_code)
    except _HELP_ON_NO_ARGS as exc:  # bare `ancestree` or a bare group: the help is the answer
        text = exc.format_message()  # typer's rich help printed itself when the error was made (the text is empty)
        if text.strip():
            print(text)
        if args:  # a group without its command is a usage error
            print(f"ancestree: error: {exc.ctx.command_path} needs a command (listed above)", file=sys.stderr)
        sys.exit(0 if not args else 2)
    except _USAGE_ERRORS as exc:  # usage errors: one line naming the problem, status 2
        print(f"ancestree: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except _ABORTS as exc:
        if isinstance(exc.__context__, EOFError):  # click turns EOFError into a bare abort: say what it was
            if debug:
                traceback.print_exception(exc.__context__)
            print("ancestree: internal error: EOFError: a file ended early (empty or cut short) "
                  "(rerun with --debug for a traceback)", file=sys.stderr)
        sys.exit(1)
    except BadInputError as exc:
        if debug:
            traceback.print_exc()
        print(f"ancestree: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - the last line of defence promised by the contract
        if _closed_pipe(exc):  # e.g. the flush above
            _exit_on_closed_pipe()
        if debug:
            traceback.print_exc()
        print(f"ancestree: internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for a traceback)", file=sys.stderr)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)
