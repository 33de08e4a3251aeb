"""Fit the shipped direction model and confidence calibration from synthetic zoos with known truth.

    python -m ancestree.graph.train direction ZOO... [-o src/ancestree/graph/direction.json]
    python -m ancestree.graph.train calibration ZOO... [-o src/ancestree/graph/calibration.json]
    python -m ancestree.graph.train calibration ZOO... --no-declared [-o src/ancestree/graph/calibration-weights.json]

Direction is fitted on the true parent→child pairs (fine-tunes and merged adapters; merges and copies are oriented by
exact tests) of the zoos; calibration on the edges that recovery (with that direction model) produces on the zoos
given to it. The shipped files were both fitted on the same zoos (``lineage``, ``tiny`` seeds 1–3: each file's
``zoos`` says so); the calibration's reliability is measured on zoos neither saw (``reliability ZOO...``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ancestree.fingerprint import Fingerprint, FingerprintCache, fingerprint
from ancestree.graph.calibration import Calibration, reliability
from ancestree.graph.direction import DirectionModel, pair_features
from ancestree.graph.evaluate import _duplicate_rep
from ancestree.graph.model_graph import ModelGraph
from ancestree.graph.vectors import group_by_architecture, group_vectors

#: Relations whose direction the model learns (copies are oriented by exact tests, not by statistics).
LEARNED = ("finetune", "adapter")


def load_zoo(zoo: str | Path, cache: FingerprintCache | None = None) -> tuple[list[Fingerprint], ModelGraph]:
    """Fingerprints of every model of a zoo and its truth graph."""
    zoo = Path(zoo)
    truth = ModelGraph.load(zoo / "truth.json")
    fps = [fingerprint(zoo / m, cache, model_id=m) for m in truth.models]
    return fps, truth


def direction_features(fps: Sequence[Fingerprint], truth: ModelGraph) -> np.ndarray:
    """Features of every true parent→child pair of a learned relation (same architecture only)."""
    rows = []
    for key, members in group_by_architecture(fps).items():
        if key[0] == "adapter":
            continue
        gv = group_vectors(members)
        index = gv.index()
        pairs = [(index[p], index[c]) for p, c, d in truth.edges()
                 if d.get("relation") in LEARNED and p in index and c in index]
        if pairs:
            P, C = np.array(pairs).T
            rows.append(pair_features(gv, P, C))
    return np.vstack(rows) if rows else np.zeros((0, len(DirectionModel().coef)))


def fit_direction(zoos: Sequence[str | Path], cache: FingerprintCache | None = None) -> DirectionModel:
    X = np.vstack([direction_features(*load_zoo(z, cache)) for z in zoos])
    model = DirectionModel().fit(X)
    model.meta["zoos"] = [Path(z).name for z in zoos]
    return model


def edge_outcomes(zoo: str | Path, cache: FingerprintCache | None = None, **params) -> tuple[list[str], list[float], list[bool], list[float]]:
    """Recover a zoo's graph and say which edges are right: (kinds, raw scores, correct, confidences)."""
    from ancestree.graph.recover import GraphRecovery

    fps, truth = load_zoo(zoo, cache)
    rec = GraphRecovery(**params).fit(fps)
    rep = _duplicate_rep(truth)
    true_edges = {(rep[p], rep[c]) for p, c, d in truth.edges() if d["relation"] != "duplicate"}
    kinds, scores, correct, conf = [], [], [], []
    for e in rec.edges_:
        ok = rep[e.parent] == rep[e.child] if e.relation == "duplicate" else (rep[e.parent], rep[e.child]) in true_edges
        kinds.append(e.kind)
        scores.append(e.score)
        correct.append(bool(ok))
        conf.append(rec.calibration_.apply(e))
    return kinds, scores, correct, conf


def fit_calibration(zoos: Sequence[str | Path], cache: FingerprintCache | None = None,
                    rate_zoos: Sequence[str | Path] = (), **params) -> Calibration:
    """Fit the calibration on ``zoos``; the exact kinds' rates also count the edges of ``rate_zoos``."""
    kinds: list[str] = []
    scores: list[float] = []
    correct: list[bool] = []
    more_kinds: list[str] = []
    more_correct: list[bool] = []
    for z in [*zoos, *rate_zoos]:
        k, s, c, _ = edge_outcomes(z, cache, calibration=Calibration(), **params)
        if z in zoos:
            kinds, scores, correct = kinds + k, scores + s, correct + c
        else:
            more_kinds, more_correct = more_kinds + k, more_correct + c
    cal = Calibration().fit(kinds, scores, correct, (more_kinds, more_correct))
    cal.meta["zoos"] = [Path(z).name for z in zoos]
    if rate_zoos:
        cal.meta["rate_zoos"] = [Path(z).name for z in rate_zoos]
    return cal


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ancestree.graph.train", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["direction", "calibration", "reliability"])
    parser.add_argument("zoos", nargs="+")
    parser.add_argument("-o", "--output")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--rates-from", nargs="*", default=[], help="more zoos whose exact edges count for the rates only")
    parser.add_argument("--no-declared", action="store_true", help="recover from weights only (the calibration of `tree --no-declared`)")
    args = parser.parse_args(argv)
    params = {"use_declared": not args.no_declared}
    cache = FingerprintCache(args.cache) if args.cache else None
    if args.what == "reliability":
        _, _, correct, conf = [], [], [], []
        for z in args.zoos:
            _, _, c, p = edge_outcomes(z, cache, **params)
            correct += c
            conf += p
        print(json.dumps(reliability(conf, correct), indent=2))
        return
    model = fit_direction(args.zoos, cache) if args.what == "direction" else fit_calibration(args.zoos, cache, args.rates_from, **params)
    text = json.dumps(model.to_dict(), indent=2)
    if args.output:
        model.save(args.output)
    print(text)


if __name__ == "__main__":
    main()
