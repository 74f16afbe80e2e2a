"""Default boxes (priors) in NumPy, laid out exactly as torchvision's `DefaultBoxGenerator`."""

from __future__ import annotations

import math

import numpy as np

from ssd_edge.runtime.spec import DefaultBoxConfig, ModelSpec


def scales_linear(num_maps: int, min_ratio: float, max_ratio: float) -> tuple[float, ...]:
    """SSD's scales: `num_maps` values spaced evenly from min_ratio to max_ratio, then 1.0."""
    if num_maps == 1:
        return (min_ratio, max_ratio)
    step = (max_ratio - min_ratio) / (num_maps - 1.0)
    return tuple(min_ratio + step * k for k in range(num_maps)) + (1.0,)


def box_shapes(config: DefaultBoxConfig) -> list[np.ndarray]:
    """(w, h) of the boxes at one location of every map: a list of (A_k, 2) arrays."""
    shapes = []
    for k, ratios in enumerate(config.aspect_ratios):
        s_k = config.scales[k]
        s_prime = math.sqrt(config.scales[k] * config.scales[k + 1])
        pairs = [[s_k, s_k], [s_prime, s_prime]]
        for ratio in ratios:
            root = math.sqrt(ratio)
            pairs += [[s_k * root, s_k / root], [s_k / root, s_k * root]]
        wh = np.asarray(pairs, dtype=np.float32)
        shapes.append(np.clip(wh, 0.0, 1.0) if config.clip else wh)
    return shapes


def default_boxes(spec: ModelSpec) -> np.ndarray:
    """Default boxes for `spec`, normalised cx, cy, w, h: float32 (P, 4).

    Order: map by map (finest first), then row, column, box shape, which is the order
    the heads' outputs are flattened in.
    """
    config = spec.default_boxes
    height, width = spec.input_size
    per_map = []
    for k, ((rows, cols), wh) in enumerate(zip(config.feature_maps, box_shapes(config))):
        if config.steps is None:
            y_cells, x_cells = rows, cols
        else:
            y_cells, x_cells = height / config.steps[k], width / config.steps[k]
        cx = ((np.arange(cols) + 0.5) / x_cells).astype(np.float32)
        cy = ((np.arange(rows) + 0.5) / y_cells).astype(np.float32)
        grid_y, grid_x = np.meshgrid(cy, cx, indexing="ij")
        centres = np.stack([grid_x, grid_y], axis=-1).reshape(-1, 1, 2)
        centres = np.broadcast_to(centres, (rows * cols, len(wh), 2))
        sizes = np.broadcast_to(wh, (rows * cols, len(wh), 2))
        per_map.append(np.concatenate([centres, sizes], axis=-1).reshape(-1, 4))
    return np.ascontiguousarray(np.concatenate(per_map, axis=0), dtype=np.float32)
