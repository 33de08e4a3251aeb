"""The errors ancestree reports to users.

A :class:`BadInputError` always names the offending file and says what is wrong with it in one line;
the CLI turns it into exit status 2 without a traceback.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from os import PathLike

#: What the loaders we call (numpy, torch, json, zipfile) raise for a file that is damaged, truncated or empty:
#: catch these around a read to turn them into a :class:`BadInputError` naming the file. (``EOFError`` matters
#: twice: an empty .npy or .pt raises it, and click would turn it into a silent abort.)
DAMAGED_FILE: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, KeyError, TypeError, IndexError,
                                                 zipfile.BadZipFile, pickle.UnpicklingError, RuntimeError)


def listed(names: Sequence[str], first: int = 3) -> str:
    """``names`` for a message: the first ``first`` of them, then how many more (``a, b, c and 4 more``)."""
    return ", ".join(names[:first]) + (f" and {len(names) - first} more" if len(names) > first else "")


def several(value: object, name: str) -> None:
    """Refuse one path where a list of them is expected: a string is a sequence too, and would be read letter
    by letter (``search(q, experts, "models/")`` searched the folders ``m``, ``o``, ...)."""
    if isinstance(value, (str, bytes, PathLike)):
        raise TypeError(f"{name} takes a list, not one {type(value).__name__}: write [{value!r}]")


class AncestreeError(Exception):
    """Base class of every error ancestree raises on purpose."""


class BadInputError(AncestreeError):
    """The input (a file, a folder, an argument) cannot be used; ``path`` names it."""

    def __init__(self, path: str | PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = " ".join(str(problem).split())  # always one line
        shown = _printable(self.path) if self.path else None  # a newline in a file name would split the line
        super().__init__(f"{shown}: {self.problem}" if shown else self.problem)


def _printable(name: str) -> str:
    """``name`` with control characters escaped (``\\n``), as one line of a message."""
    return name if name.isprintable() else "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)


class IncomparableError(BadInputError):
    """Two models cannot be compared (e.g. different architectures)."""
