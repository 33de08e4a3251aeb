"""What every command shares: the console, output formats and writing results."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Any

from rich.console import Console

from ancestree.atomic import write_text

console = Console()
err_console = Console(stderr=True)


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
