"""Model Graph recovery: decisions over many models (trees, edges, direction, relations, confidence).

* :class:`GraphRecovery` — ancestree's method (default), on fingerprints;
* :class:`MoTHer` — the faithful baseline (Horwitz et al. 2024), on raw weights;
* :class:`ModelGraph` — the result, to and from the contract's JSON;
* :func:`evaluate` — scores against ground truth.
"""

from typing import TYPE_CHECKING

from ancestree.graph.evaluate import Scores, evaluate
from ancestree.graph.model_graph import RELATIONS, ModelGraph, graph_from_edges
from ancestree.graph.recover import GraphRecovery

if TYPE_CHECKING:  # imported on first use at run time (see __getattr__)
    from ancestree.graph.mother import MoTHer

__all__ = ["RELATIONS", "GraphRecovery", "ModelGraph", "MoTHer", "Scores", "evaluate", "graph_from_edges"]


def __getattr__(name: str) -> object:
    """``MoTHer`` on first use: the baseline pulls in scipy.stats and scipy.cluster (~0.3 s to import),
    which recovering with ancestree's method never needs."""
    if name == "MoTHer":
        from ancestree.graph.mother import MoTHer

        return MoTHer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
