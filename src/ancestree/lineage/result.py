"""What every parent-detection method returns: a ranking of candidates with scores and probabilities.

A method turns each comparable candidate into one *score* (higher = more plausibly the parent). The
probabilities are a softmax over the scores with a calibrated temperature plus one virtual "none of these"
candidate whose score is a calibrated threshold: ``parent`` is null exactly when that virtual candidate is
the most probable. Candidates that cannot be compared with the child at all (another architecture) are
listed apart as incomparable, never ranked as merely unlikely. Warnings about how far a ranking can be
trusted (a small probe set, a method that did not apply) travel with it as ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Softmax temperature and the score of the virtual "none of these" candidate."""

    temperature: float = 1.0
    none_score: float = 0.0

    def probabilities(self, scores: np.ndarray) -> tuple[np.ndarray, float]:
        """``(p_candidates, p_none)``: a softmax over ``scores`` and the none score."""
        logits = np.append(np.asarray(scores, dtype=np.float64), self.none_score) / self.temperature
        logits -= logits.max()
        weights = np.exp(logits)
        p = weights / weights.sum()
        return p[:-1], float(p[-1])

    def to_dict(self) -> dict[str, float]:
        return {"temperature": self.temperature, "none_score": self.none_score}


@dataclass
class CandidateScore:
    """One ranked candidate; ``evidence`` holds the method's raw numbers (not part of the JSON contract)."""

    candidate: str
    score: float
    probability: float = 0.0
    generations: int | None = None
    evidence: dict[str, float] = field(default_factory=dict)

    def to_dict(self, with_evidence: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate": self.candidate, "score": round(float(self.score), 6),
                               "probability": round(float(self.probability), 6)}
        if self.generations is not None:
            out["generations"] = self.generations
        if with_evidence:
            out["evidence"] = {k: round(float(v), 6) for k, v in self.evidence.items()}
        return out


@dataclass
class Ranking:
    """The answer for one child: candidates best first, the chosen parent (or None) and incomparables."""

    child: str
    method: str
    ranking: list[CandidateScore]
    p_none: float
    incomparable: dict[str, str] = field(default_factory=dict)
    #: ``{"model": file or id, "problem": one line}`` each: what the CLI prints as warnings on stderr
    notes: list[dict[str, str]] = field(default_factory=list)
    #: candidates the child is an exact combination of (a merge, found by tree recovery; weights method)
    merge_of: list[str] = field(default_factory=list)

    def note(self, model: str, problem: str) -> None:
        self.notes.append({"model": str(model), "problem": problem})

    @property
    def parent(self) -> str | None:
        """The top candidate, unless "none of these" is more probable (or nothing was comparable)."""
        if not self.ranking or self.p_none >= self.ranking[0].probability:
            return None
        return self.ranking[0].candidate

    def scores(self) -> dict[str, float]:
        return {c.candidate: c.score for c in self.ranking}

    def to_dict(self, with_evidence: bool = False) -> dict[str, Any]:
        """The contract's JSON record, plus ``method``, ``none_probability``, ``incomparable`` and ``notes``
        (only when there are any, as in ``tree``'s JSON)."""
        out: dict[str, Any] = {
            "child": self.child,
            "parent": self.parent,
            "ranking": [c.to_dict(with_evidence) for c in self.ranking],
            "method": self.method,
            "none_probability": round(self.p_none, 6),
            "incomparable": [{"candidate": k, "reason": v} for k, v in self.incomparable.items()],
        }
        if self.notes:
            out["notes"] = list(self.notes)
        if self.merge_of:
            out["merge_of"] = list(self.merge_of)
        return out


def make_ranking(child: str, method: str, scored: list[CandidateScore], calibration: Calibration,
                 incomparable: dict[str, str] | None = None) -> Ranking:
    """Sort ``scored`` best first and fill in calibrated probabilities."""
    scored = sorted(scored, key=lambda c: -c.score)
    if scored:
        probs, p_none = calibration.probabilities(np.array([c.score for c in scored]))
        for c, p in zip(scored, probs):
            c.probability = float(p)
    else:
        p_none = 1.0
    return Ranking(child, method, scored, p_none, dict(incomparable or {}))
