"""Cross-generation ranking: walk up from the child through the candidates, one generation at a time.

The most plausible parent among the candidates is generation 1; the most plausible parent of *that*
model among the remaining candidates is generation 2; and so on until "none of these" wins. Candidates
off the chain keep their own score and get no generation. Each step is an ordinary parent ranking, so
any method (weights, linearised, detector) can be walked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ancestree.lineage.pairs import Source
from ancestree.lineage.result import Ranking


def _id(source: Source) -> str:
    return getattr(source, "id", None) or str(source)


def rank_ancestors(rank: Callable[[Source, Sequence[Source]], Ranking], child: Source,
                   candidates: Sequence[Source], max_generations: int = 8) -> Ranking:
    """The child's ranking with the chain of ancestors first, each entry's ``generations`` filled in."""
    first = rank(child, candidates)
    by_id = {_id(c): c for c in candidates}
    child_scores = first.scores()
    chain, current, remaining = [], first, list(candidates)
    while current.parent is not None and len(chain) < max_generations:
        top = current.ranking[0]
        chain.append(top)
        top.generations = len(chain)
        # An older ancestor is further from the child than a younger one: keep only candidates the
        # child's own ranking scored below this ancestor (drops the child's siblings and cousins' kin).
        bar = child_scores[top.candidate]
        remaining = [c for c in remaining if _id(c) != top.candidate and child_scores.get(_id(c), bar) < bar]
        if not remaining:
            break
        current = rank(by_id[top.candidate], remaining)
    # Report every candidate with its score and probability as the *child's* parent ranking gave them;
    # the walk only orders the chain first and says how many generations up each ancestor sits.
    generations = {c.candidate: c.generations for c in chain}
    originals = {c.candidate: c for c in first.ranking}
    ordered = [originals[c.candidate] for c in chain] + [c for c in first.ranking if c.candidate not in generations]
    for c in ordered:
        c.generations = generations.get(c.candidate)
    first.ranking = ordered
    return first
