"""Evidence about a pair of models (numbers), and a one-word verdict for people.

>>> ev = relate(fingerprint("parent"), fingerprint("child"))   # doctest: +SKIP
>>> verdict(ev).label                                          # doctest: +SKIP
'fine-tuned relative'
"""

from ancestree.relate.evidence import LayerEvidence, PairEvidence, relate
from ancestree.relate.matrix import rms_distance_matrix
from ancestree.relate.precision import precision_bits, quantization_noise
from ancestree.relate.verdict import KINDS, Verdict, adapter_verdict, shares_weights, verdict

__all__ = ["KINDS", "LayerEvidence", "PairEvidence", "Verdict", "adapter_verdict", "precision_bits", "quantization_noise", "relate", "rms_distance_matrix", "shares_weights", "verdict"]
