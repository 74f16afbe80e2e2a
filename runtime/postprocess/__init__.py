"""CPU decode + NMS: the plain reference rule and the fast NumPy path that must agree with it."""

from ssd_edge.runtime.postprocess.fast import postprocess

__all__ = ["postprocess"]
