"""Parent detection (Neural Lineage): which candidate is a model's parent, or none of them.

Methods, all returning a :class:`~ancestree.lineage.result.Ranking`:

* :class:`~ancestree.lineage.weights.WeightsRanker` — weights only, any format (the default);
* :class:`~ancestree.lineage.linearized.LinearizedRanker` — probe features of the linearised parent
  (learning-free, needs probe data and runnable models), and :class:`~ancestree.lineage.linearized.FeatureRanker`,
  the paper's baselines without the approximation;
* :class:`~ancestree.lineage.detector.DetectorRanker` — the learned detector.

:func:`rank_parents` picks one by name; ``ancestors=True`` walks up generations.
"""

from ancestree.lineage.api import METHODS, make_ranker, rank_parents
from ancestree.lineage.result import CandidateScore, Calibration, Ranking
from ancestree.lineage.weights import WeightsRanker

__all__ = ["METHODS", "CandidateScore", "Calibration", "Ranking", "WeightsRanker", "make_ranker", "rank_parents"]
