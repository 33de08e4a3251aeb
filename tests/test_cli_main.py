"""The CLI's exit statuses for usage errors, --version and bare invocations (the contract's promises)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ancestree import __version__


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ancestree", *args], capture_output=True, text=True, timeout=120)


def test_version_prints_and_exits_0() -> None:
    done = _run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, __version__)


def test_bare_command_prints_help_once_and_exits_0() -> None:
    """The help was printed twice (typer's rich help prints itself when the no-arguments error is made)."""
    done = _run()
    assert done.returncode == 0 and "inspect" in done.stdout and "tree" in done.stdout
    assert done.stdout.count("Usage") == 1 and not done.stderr


def test_a_group_without_its_command_prints_its_help_once_and_says_so() -> None:
    done = _run("zoo")
    assert done.returncode == 2 and done.stdout.count("Usage") == 1 and "make" in done.stdout
    assert done.stderr.strip() == "ancestree: error: ancestree zoo needs a command (listed above)"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("inspect", "--bogus", "x"), "No such option: --bogus"),
        (("inspect",), "Missing argument"),
        (("tree", "--format", "nope", "x"), "'nope' is not one of"),
        (("no-such-command",), "No such command"),
        (("zoo",), "needs a command"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_no_traceback(args: tuple[str, ...], needle: str) -> None:
    done = _run(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    if needle:
        assert needle in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_multi_value_options_are_greedy_like_argparse() -> None:
    """`-c A B C` and `--classes X Y` take every value up to the next option, so a positional argument
    written after them is never silently taken for one of them (the command then misses it: exit 2)."""
    from ancestree.cli.main import expand_multi_values

    assert expand_multi_values(["parent", "child", "-c", "a", "b", "--format", "json"]) == \
        ["parent", "child", "-c", "a", "-c", "b", "--format", "json"]
    assert expand_multi_values(["probex", "search", "q", "--classes", "red", "blue", "--in", "d"]) == \
        ["probex", "search", "q", "--classes", "red", "--classes", "blue", "--in", "d"]
    assert expand_multi_values(["tree", "a", "b", "-o", "x"]) == ["tree", "a", "b", "-o", "x"]  # other commands untouched
    assert expand_multi_values(["parent", "child", "-c", "a", "--", "-b"]) == ["parent", "child", "-c", "a", "--", "-b"]


def test_query_after_classes_is_a_usage_error(tmp_path, capsys) -> None:
    from ancestree.cli.main import run

    with pytest.raises(SystemExit) as exc:
        run(["probex", "search", "--experts", str(tmp_path), "--in", str(tmp_path), "--classes", "red", "blue", "a model of red"])
    assert exc.value.code == 2 and "Missing argument" in capsys.readouterr().err
