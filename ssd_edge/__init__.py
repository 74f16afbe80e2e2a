"""ssd-edge: train SSD detectors in PyTorch and deploy them without it.

This package stays light on purpose: importing `ssd_edge` pulls in nothing heavy, so
`ssd_edge.runtime` (which must never import torch) can live inside it. The torch side is
in the submodules: `ssd_edge.models`, `ssd_edge.training.loss`, `ssd_edge.training.matching`, ...
"""

__version__ = "0.1.0"
