"""SSD models: the detector, its parts, and the architecture registry."""

from ssd_edge.models.registry import ARCHS, build_model, model_from_spec
from ssd_edge.models.ssd import SSD, RawOutputs

__all__ = ["ARCHS", "SSD", "RawOutputs", "build_model", "model_from_spec"]
