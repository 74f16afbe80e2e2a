"""Raw SSD outputs for postprocessing tests: the generators ssd-doctor's kernel cases use."""

from ssd_edge.runtime.doctor.kernel_cases import random_outputs, random_priors

__all__ = ["random_outputs", "random_priors"]
