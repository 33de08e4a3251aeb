"""What every command shares: the console, output formats and writing results."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import Any

from rich.console import Console

from ancestree.atomic import write_text
from ancestree.errors import BadInputError, listed

# no markup: model ids and paths are printed everywhere, and "sweep[lr=1e-4]" or "runs[/b]" are names, not
# styles (the second made rich raise); styled words are rich Text with a style
# into a pipe or a log, lines are not wrapped nor table cells cut at 80 columns (rich's default there): a
# model id split over two lines, or cut to "hf-cache/models--acme--…", cannot be read back
# (a COLUMNS set by the user still rules)
PIPE_WIDTH = 10_000


def _width(stream) -> int | None:
    return None if stream.isatty() or os.environ.get("COLUMNS") else PIPE_WIDTH


console = Console(markup=False, width=_width(sys.stdout))
err_console = Console(stderr=True, markup=False, width=_width(sys.stderr))


def print_table(title: str, table: Any) -> None:
    """A rich table under its title on a line of its own: a table's own title wraps to the table's width, which
    split a long model id over two lines."""
    console.print(title, soft_wrap=True, highlight=False)
    console.print(table)


def print_notes(notes: list[dict[str, Any]]) -> None:
    """A graph's notes on stderr, one line each (also in logs): conflicts with declared lineage, then remarks."""
    from ancestree.graph.metadata import is_conflict

    for note in notes:
        kind = "conflict" if is_conflict(note) else "warning"
        err_console.print(f"{kind}: {note['model']}: {note['problem']}", soft_wrap=True)


def progress_bars(quiet: bool = False) -> bool:
    """Progress bars only for a person watching: stderr a terminal (a log or a pipe gets none, so that an
    error stays the one line on it) and not ``--quiet``."""
    return not quiet and sys.stderr.isatty()


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=_json_default) + "\n"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit(text: str, output: str | None) -> None:
    """Print ``text`` or write it (atomically) to ``output``."""
    if output:
        write_text(output, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


def collect_sources(paths: list[str], scan: list[str] | str | None) -> list[tuple[str, Path]]:
    """``(id, path)`` of every model: paths as given, then models found below each ``--scan`` folder (ids
    relative to it; one found below two folders gets its folder in front, see
    :func:`~ancestree.io.scan_folders`; an id that still names two models is refused)."""
    from ancestree.io import scan_folders

    sources = [(str(p), Path(p)) for p in paths]
    sources += scan_folders([scan] if isinstance(scan, str) else scan or [])
    if not sources:
        raise BadInputError(None, "no models given: pass model paths or --scan DIR")
    seen: dict[str, Path] = {}
    for mid, p in sources:
        if mid in seen:
            raise BadInputError(p, f"model id {mid!r} given twice")
        seen[mid] = p
    _refuse_one_model_twice(sources)
    warn_models_inside(sources)
    return sources


def warn_models_inside(sources: Iterable[tuple[str, str | Path]]) -> None:
    """Say which model folders hold more model folders (a Trainer's ``checkpoint-N``): neither a scan nor a
    model path reads them (a model folder is one model), and leaving them out silently hid a whole run."""
    from ancestree.io import models_inside

    sources = list(sources)
    given = {Path(path).resolve() for _, path in sources}
    for mid, path in sources:
        inside = [name for name in models_inside(Path(path)) if (Path(path) / name).resolve() not in given]
        if inside:
            err_console.print(f"warning: {mid}: holds {len(inside)} more model folder(s) ({listed(inside)}), read only when "
                              "given as paths: a model folder is one model", soft_wrap=True, highlight=False)


def _refuse_one_model_twice(sources: list[tuple[str, Path]]) -> None:
    """One model reached by two spellings (``base`` and ``./base``, a folder and its weight file, a path and
    a scan that finds it again, a cache repository and its current snapshot) was two models, each the other's
    "duplicate": two sources read from the same weight files, or a file given alone that another source reads,
    are refused, in whatever order they come. Folders sharing only some files (an unchanged shard linked
    into two revisions), a model folder inside another (a Trainer's ``out/checkpoint-500``) and a variant file
    beside the one a folder is read from (``model.fp16.safetensors``) are models of their own."""
    from ancestree.io.loader import model_files

    # looked up, not compared pair by pair: a scan of a hub mirror gives thousands of sources
    by_files: dict[frozenset[Path], str] = {}  # the set of files a source reads -> the source
    read_by: dict[Path, str] = {}  # every file a folder source reads -> the source
    single_files: dict[Path, str] = {}  # files given alone -> the source
    for mid, p in sources:
        single = not p.is_dir()
        files = frozenset({p.resolve()} if single else model_files(p))
        if not files:
            continue
        other = by_files.get(files)  # the same files
        if other is None and single:  # a file given alone that a folder given before reads
            other = read_by.get(next(iter(files)))
        if other is None:  # a folder reading a file given alone before
            other = next((single_files[f] for f in files if f in single_files), None)
        if other is not None:
            raise BadInputError(mid, f"is read from the files of {other!r}, given already (one model given twice)")
        by_files[files] = mid
        (single_files if single else read_by).update(dict.fromkeys(files, mid))


def check_not_in_zoo(output: str | Path, zoo: str | Path) -> None:
    """An output may go into a zoo folder, but must not replace its truth.json or land in one of its models."""
    from ancestree.atomic import check_not_an_input
    from ancestree.io import scan_models

    if Path(zoo).is_dir():  # otherwise the command names the missing zoo
        check_not_an_input(output, [Path(zoo) / "truth.json", *(p for _, p in scan_models(zoo))])

