"""CPU decode + NMS: `reference.py` states the rule plainly (the oracle), `fast.py` computes
it quickly (the path every Detector runs on a CPU), `sparse_nms.py` holds fast.py's NMS."""

from ssd_edge.runtime.postprocess.fast import postprocess
from ssd_edge.runtime.postprocess.reference import reference_postprocess

__all__ = ["postprocess", "reference_postprocess"]
