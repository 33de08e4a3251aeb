"""``ancestree compare A B``: how two models are related, with the per-layer evidence."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ancestree.atomic import check_output
from ancestree.cli.common import OutputFormat, console, emit, print_table, to_json
from ancestree.cli.fingerprint import CacheDir, NoCache, cache_from_options
from ancestree.fingerprint import Fingerprint, fingerprint
from ancestree.relate import PairEvidence, Verdict, adapter_verdict, relate, verdict


def compare_record(ev: PairEvidence, v: Verdict) -> dict[str, Any]:
    """The JSON of ``compare``: the verdict, the model-level evidence and one record per layer pair."""
    return _record(ev.a, ev.b, v, ev.to_dict())


def _record(a: str, b: str, v: Verdict, evidence: dict[str, Any]) -> dict[str, Any]:
    return {"a": a, "b": b, "verdict": {"kind": v.kind, "label": v.label, "reason": v.reason}, "evidence": evidence}


def _print_verdict(v: Verdict) -> None:
    console.print(Text.assemble((v.label, "bold"), f": {v.reason}"))


def _shape(t) -> str:
    return "×".join(map(str, t.shape)) or "scalar"


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or x != x else format(x, fmt)


def _print(ev: PairEvidence, v: Verdict, fa: Fingerprint, fb: Fingerprint) -> None:
    _print_verdict(v)
    table = Table("layer", "shape", "rel. distance", "correlation", "rank of diff.", "identical")
    for l in ev.layers:
        name = l.a if l.a == l.b else f"{l.a} ↔ {l.b}{' (T)' if l.transposed else ''}"
        rank = "-" if l.diff_rank is None else f"{l.diff_rank}/{l.rank_limit}"
        table.add_row(name, _shape(l), _num(l.rel_distance, ".4f"), _num(l.correlation, ".3f"), rank, "yes" if l.identical else "")
    print_table(f"{ev.a}  vs  {ev.b}", table)
    # a name on both sides left unpaired holds tensors of other shapes (a resized vocabulary, another head)
    reshaped = [n for n in ev.unpaired_a if n in set(ev.unpaired_b)]
    if reshaped:
        console.print("other shapes: " + ", ".join(f"{n} ({_shape(fa[n])} vs {_shape(fb[n])})" for n in reshaped))
    for side, names in (("a", ev.unpaired_a), ("b", ev.unpaired_b)):
        if names := [n for n in names if n not in reshaped]:
            console.print(f"only in {side}: {', '.join(names)}")
    if ev.non_finite:
        console.print(f"left out (NaN or infinite values on one side): {', '.join(ev.non_finite)}")
    if ev.buffers:
        console.print(f"left out (masks or constants on both sides, not weights): {', '.join(ev.buffers)}")
    console.print(
        f"overall: relative distance {ev.rel_distance:.4f}, median correlation {_num(ev.correlation, '.3f')}, "
        f"identical {ev.identical_fraction:.1%} of paired parameters"
    )


def compare(
    a: Annotated[str, typer.Argument(help="First model (distances are relative to it).")],
    b: Annotated[str, typer.Argument(help="Second model.")],
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.text,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Write the JSON to this file.")] = None,
    cache: CacheDir = None,
    no_cache: NoCache = False,
) -> None:
    """Say whether B is the same weights as A, a quantized, pruned or low-rank-adapted copy, a fine-tuned relative, or unrelated."""
    if output:
        check_output(output, [a, b])
    store = cache_from_options(cache, no_cache)
    fa, fb = fingerprint(a, store), fingerprint(b, store)
    adapted = adapter_verdict(fa, fb)  # an adapter's weight differences are not compared with weights
    if adapted is not None:
        v, evidence = adapted
        if format is OutputFormat.json or output:
            emit(to_json(_record(fa.id, fb.id, v, evidence)), output)
        else:
            _print_verdict(v)
        return
    ev = relate(fa, fb)
    v = verdict(ev)
    if format is OutputFormat.json or output:
        emit(to_json(compare_record(ev, v)), output)
        return
    _print(ev, v, fa, fb)


def register(app: typer.Typer) -> None:
    app.command()(compare)


__all__ = ["compare", "compare_record", "register"]
