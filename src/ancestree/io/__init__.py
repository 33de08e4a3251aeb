"""Reading weights: one :class:`Model` type over every format (formats live in their own modules)."""

from ancestree.io.base import FileInfo, Model, ModelMeta, TensorInfo
from ancestree.io.loader import is_model_folder, load_model, models_inside, scan_folders, scan_models

__all__ = ["FileInfo", "Model", "ModelMeta", "TensorInfo", "is_model_folder", "load_model", "models_inside", "scan_folders", "scan_models"]
