"""Cross-generation ranking: walk up from the child through the candidates, one generation at a time.

The most plausible parent among the candidates is generation 1; the most plausible parent of *that*
model among the remaining candidates is generation 2; and so on until "none of these" is at least as
probable as all the candidates together. Candidates off the chain keep their own score and get no
generation. Each step is an ordinary parent ranking, so any method (weights, linearised, detector) can be
walked.

A step asks whether *some* remaining candidate is an ancestor, not which one is the parent: the remaining
candidates hold the model's parent and its older ancestors, which share the probability a ranking gives
ancestors, so "none" can be the single most probable answer (what :attr:`Ranking.parent` reports) while
less probable than an ancestor among them. With the detector, whose probabilities split so, the lineage
val/test walks (``bench_ancestors.py --detector``) went from 18 to 21 exact chains of 96 (stopped short 66
to 62, over-extended 1 and 1); the weights method's walks did not change.

Distances cannot tell the next generation up from a *child* of the oldest ancestor found: both are one
fine-tune away. Without a direction the walk went on past the oldest ancestor to one of its children (on
held-out zoos 48 of 80 ``vthr`` and 24 of 42 ``wild`` chains). So each step above the first must also be
older than the model below it by the weight statistics that order parent and child in tree recovery
(:class:`ancestree.graph.direction.DirectionModel`, learned on other zoos); the walk stops where they say
"younger" (``benchmarks/bench_ancestors.py`` measures both walks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ancestree.lineage.pairs import Source
from ancestree.lineage.result import Ranking

if TYPE_CHECKING:  # imported where used: fingerprints are only read by these checks
    import os

    from ancestree.fingerprint import Fingerprint, FingerprintCache

#: ``older(a, b)``: the probability that ``a`` is ``b``'s ancestor rather than its descendant.
Older = Callable[[Source, Source], float]


def _id(source: Source) -> str:
    return getattr(source, "id", None) or str(source)


def fingerprints_once(cache: FingerprintCache | str | os.PathLike[str] | bool | None = None) -> Callable[[Source], Fingerprint]:
    """A model's fingerprint, computed once per walk (through ``cache``, a FingerprintCache, when given)."""
    from ancestree.fingerprint import fingerprint

    prints: dict[str, Fingerprint] = {}

    def get(source: Source) -> Fingerprint:
        if _id(source) not in prints:
            prints[_id(source)] = fingerprint(source, cache) if cache is not None else fingerprint(source)
        return prints[_id(source)]

    return get


def older_by_direction(cache: FingerprintCache | str | os.PathLike[str] | bool | None = None,
                       prints: Callable[[Source], Fingerprint] | None = None) -> Older:
    """:data:`Older` from the learned direction model of tree recovery, on fingerprints (``prints``, or
    :func:`fingerprints_once` of ``cache``)."""
    from ancestree.graph.direction import DirectionModel, pair_features
    from ancestree.graph.vectors import group_vectors

    model, get = DirectionModel.load(), prints or fingerprints_once(cache)

    def older(a: Source, b: Source) -> float:
        gv = group_vectors([get(a), get(b)])
        return float(model.proba(pair_features(gv, np.array([0]), np.array([1])))[0])

    return older


#: ``copy_of(a, b)``: whether ``a`` holds ``b``'s weights stored otherwise (a duplicate, or a quantized or
#: pruned copy, either way round): the same model, never a generation above or below it.
CopyOf = Callable[[Source, Source], bool]


def copies_by_weights(cache: FingerprintCache | str | os.PathLike[str] | bool | None = None,
                      prints: Callable[[Source], Fingerprint] | None = None) -> CopyOf:
    """:data:`CopyOf` from the copy tests of tree recovery (:mod:`ancestree.graph.relations`), on fingerprints
    (``prints``, or :func:`fingerprints_once` of ``cache``)."""
    from ancestree.graph.relations import is_duplicate, is_pruned_copy, is_quantized_copy

    get = prints or fingerprints_once(cache)

    def copy_of(a: Source, b: Source) -> bool:
        fa, fb = get(a), get(b)
        return is_duplicate(fa, fb) or any(test(x, y) for test in (is_quantized_copy, is_pruned_copy) for x, y in ((fa, fb), (fb, fa)))

    return copy_of


def _an_ancestor_is_likely(ranking: Ranking) -> bool:
    """Some candidate is more probably an ancestor than none of them (see the module docstring)."""
    return bool(ranking.ranking) and ranking.p_none < 0.5


def rank_ancestors(rank: Callable[[Source, Sequence[Source]], Ranking], child: Source,
                   candidates: Sequence[Source], max_generations: int = 8, older: Older | None = None,
                   rank_above: Callable[[Source, Sequence[Source]], Ranking] | None = None,
                   copy_of: CopyOf | None = None) -> Ranking:
    """The child's ranking with the chain of ancestors first, each entry's ``generations`` filled in.

    ``older`` (e.g. :func:`older_by_direction`) ends the walk at a step whose proposed ancestor is more
    likely younger than the model below it; ``None`` walks on distances alone. ``rank_above`` ranks the
    steps above the first (default: ``rank``). ``copy_of`` (e.g. :func:`copies_by_weights`) leaves the
    copies of each ancestor found out of the steps above it: an int8, ONNX or pruned copy of the parent is
    one fine-tune away from the parent's parent as the parent is, and was walked as one generation up.
    """
    first = rank(child, candidates)
    by_id = {_id(c): c for c in candidates}
    child_scores = first.scores()
    chain, current, remaining, level, below = [], first, list(candidates), 0, None
    while _an_ancestor_is_likely(current) and level < max_generations:
        top = current.ranking[0]
        if below is not None and older is not None and older(by_id[top.candidate], by_id[below.candidate]) < 0.5:
            break
        level, below = level + 1, top
        # a merge child has each of its merge parents one generation up (the walk goes on above the first)
        step = [top] + ([c for c in first.ranking if c.candidate in first.merge_of and c.candidate != top.candidate]
                        if level == 1 and top.candidate in first.merge_of else [])
        for c in step:
            c.generations = level
        chain += step
        # An older ancestor is further from the child than a younger one: keep only candidates the
        # child's own ranking scored below this ancestor (drops the child's siblings and cousins' kin).
        bar = child_scores[top.candidate]
        taken = {c.candidate for c in step}
        remaining = [c for c in remaining if _id(c) not in taken and child_scores.get(_id(c), bar) < bar
                     and not (copy_of is not None and any(copy_of(c, by_id[t]) for t in taken))]
        if not remaining:
            break
        current = (rank_above or rank)(by_id[top.candidate], remaining)
    # Report every candidate with its score and probability as the *child's* parent ranking gave them;
    # the walk only orders the chain first and says how many generations up each ancestor sits.
    generations = {c.candidate: c.generations for c in chain}
    originals = {c.candidate: c for c in first.ranking}
    ordered = [originals[c.candidate] for c in chain] + [c for c in first.ranking if c.candidate not in generations]
    for c in ordered:
        c.generations = generations.get(c.candidate)
    first.ranking = ordered
    return first
