"""Raw SSD outputs for postprocessing tests."""

import numpy as np


def random_priors(rng, count):
    centres = rng.uniform(0.05, 0.95, (count, 2))
    sizes = rng.uniform(0.05, 0.5, (count, 2))
    return np.concatenate([centres, sizes], axis=1).astype(np.float32)


def random_outputs(rng, batch, priors, classes, logit_scale=3.0):
    locs = rng.normal(0, 1, (batch, priors, 4)).astype(np.float32)
    confs = rng.normal(0, logit_scale, (batch, priors, classes)).astype(np.float32)
    return locs, confs
