"""Learning from weights: ProbeX tree experts, the router that picks them, and text encoders.

``ProbeXExperts(...).fit(zoo)`` trains one expert per Model Tree; ``predict`` says which classes a model was
trained on; ``search`` ranks models by a sentence; :func:`search` does it in one call from a saved experts folder.
"""

from ancestree.probex.experts import ProbeXExperts, read_zoo, search
from ancestree.probex.model import FAITHFUL, OURS, ProbeX, ProbeXConfig
from ancestree.probex.naming import RowNamer
from ancestree.probex.router import Router
from ancestree.probex.text import MiniLMEncoder, TextEncoder, get_text_encoder

__all__ = [
    "FAITHFUL",
    "OURS",
    "MiniLMEncoder",
    "ProbeX",
    "ProbeXConfig",
    "ProbeXExperts",
    "Router",
    "RowNamer",
    "TextEncoder",
    "get_text_encoder",
    "read_zoo",
    "search",
]
