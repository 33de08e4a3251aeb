"""ancestree: read the weights of neural networks and recover their family history.

The pipeline, one subpackage a step: ``io`` (read weights) -> ``fingerprint`` ->
``relate`` (evidence about pairs) -> ``graph`` (decisions over many models) -> ``present``.
"""

from ancestree.errors import AncestreeError, BadInputError
from ancestree.io import Model, TensorInfo, load_model, scan_models

__all__ = ["AncestreeError", "BadInputError", "Model", "TensorInfo", "load_model", "scan_models"]
__version__ = "0.1.0"
