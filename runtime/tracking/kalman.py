"""A constant-velocity Kalman filter over many boxes at once, NumPy only.

State per box (8,): centre x, centre y, width, height and their velocities, in pixels and
pixels per frame: (cx, cy, w, h, vcx, vcy, vw, vh). The measurement is the box itself,
(cx, cy, w, h). Boxes come in and go out as xyxy pixels.

Noise is proportional to the box size, as in ByteTrack's filter (position 1/20 and velocity
1/160 of the size), but x-components scale with the width and y-components with the height,
and every state has its own width and height instead of ByteTrack's aspect ratio, so a
box may change shape (a person turning, a car seen from a new angle):

    std = fraction * max(size, min_std_px / position)

for every kind of noise (position, velocity, measurement, initial_*), `size` the box's
width for x-components and its height for y-components. The floor is on the size, not on
each std: it keeps a zero-size box from making the covariance singular (the position noise
never falls below `min_std_px`) while every std keeps its stated ratio to the others (a
floor on each std would make the velocity noise of any box narrower than 160 px that of a
160 px box). A gap of k frames is predicted as k one-frame steps.

All functions work on stacked arrays: means (T, 8), covariances (T, 8, 8), so one call
serves every track of a frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ssd_edge.runtime.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from ssd_edge.runtime.tracking.errors import TrackingError

STATE_SIZE = 8
MEASUREMENT_SIZE = 4
_TRANSITION = np.eye(STATE_SIZE)  # one frame: position += velocity
_TRANSITION[:4, 4:] = np.eye(4)
_DIAGONAL = np.arange(STATE_SIZE)


def measure(boxes_xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> (N, 4) measurements cx, cy, w, h (float64)."""
    return xyxy_to_cxcywh(np.asarray(boxes_xyxy, dtype=np.float64))


def state_boxes(means: np.ndarray) -> np.ndarray:
    """(T, 8) states -> (T, 4) xyxy boxes; a negative predicted size is clipped to zero."""
    return cxcywh_to_xyxy(np.concatenate([means[:, :2], np.maximum(means[:, 2:4], 0.0)], axis=1))


@dataclass(frozen=True)
class MotionNoise:
    """Standard deviations as fractions of the box size (x-components of its width,
    y-components of its height); sizes under `min_std_px / position` count as that size,
    so the position noise is at least `min_std_px` pixels (see the module docstring).

    position: process noise on cx, cy, w, h per frame; velocity: process noise on the
    velocities per frame; measurement: the detector's box noise; initial_position /
    initial_velocity: the uncertainty of a newborn track (a new track's velocity is unknown,
    hence large)."""

    position: float = 1.0 / 20
    velocity: float = 1.0 / 160
    measurement: float = 1.0 / 20
    initial_position: float = 2.0 / 20
    initial_velocity: float = 10.0 / 160
    min_std_px: float = 1.0

    def __post_init__(self) -> None:
        for name in ("position", "velocity", "measurement", "initial_position", "initial_velocity", "min_std_px"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise TrackingError(f"MotionNoise.{name} must be a positive number, got {value!r}")


def _sizes(means: np.ndarray, min_size: float) -> np.ndarray:
    """(T, 4): w, h, w, h of each state (at least `min_size`), the scale of its x and y
    components."""
    wh = np.maximum(means[:, 2:4], min_size)
    return np.concatenate([wh, wh], axis=1)


class BoxKalman:
    """The filter's maths; it holds only the noise settings, the caller keeps the states."""

    def __init__(self, noise: MotionNoise | None = None) -> None:
        self.noise = noise or MotionNoise()

    @property
    def min_size(self) -> float:
        """The least size noise is scaled by: the position noise's floor is min_std_px."""
        return self.noise.min_std_px / self.noise.position

    def noise_std(self, means: np.ndarray, fraction: float) -> np.ndarray:
        """(T, 4) standard deviations `fraction` x size of the states (T, 8) (see the module
        docstring)."""
        return fraction * _sizes(means, self.min_size)

    def process_noise(self, means: np.ndarray) -> np.ndarray:
        """(T, 8) variances added by one predicted frame: position then velocity noise."""
        return np.concatenate([self.noise_std(means, self.noise.position),
                               self.noise_std(means, self.noise.velocity)], axis=1) ** 2

    def initiate(self, boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """New states for boxes (N, 4) xyxy: means (N, 8) at rest, covariances (N, 8, 8)."""
        measured = measure(boxes_xyxy)
        means = np.concatenate([measured, np.zeros_like(measured)], axis=1)
        std = np.concatenate([self.noise_std(means, self.noise.initial_position),
                              self.noise_std(means, self.noise.initial_velocity)], axis=1)
        covariances = np.zeros((len(means), STATE_SIZE, STATE_SIZE))
        diagonal = np.arange(STATE_SIZE)
        covariances[:, diagonal, diagonal] = std ** 2
        return means, covariances

    def predict(self, means: np.ndarray, covariances: np.ndarray, steps: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """States `steps` frames later (steps >= 1: frames the caller skipped are predicted
        through, one frame at a time, as if each had been seen with no detection). Returns
        new arrays; the inputs are left as they were."""
        if steps < 1:
            raise TrackingError(f"predict needs steps >= 1, got {steps}")
        for _ in range(steps):
            variance = self.process_noise(means)
            means = means @ _TRANSITION.T
            covariances = _TRANSITION @ covariances @ _TRANSITION.T
            covariances[:, _DIAGONAL, _DIAGONAL] += variance
        return means, covariances

    def update(self, means: np.ndarray, covariances: np.ndarray,
               boxes_xyxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """States corrected by one measured box each: means (K, 8), covariances (K, 8, 8),
        boxes (K, 4) xyxy. Returns new arrays."""
        measured = measure(boxes_xyxy)
        measurement_var = self.noise_std(means, self.noise.measurement) ** 2
        innovation_cov = covariances[:, :4, :4].copy()
        diagonal = np.arange(MEASUREMENT_SIZE)
        innovation_cov[:, diagonal, diagonal] += measurement_var
        cross = covariances[:, :, :4]  # P H^T, (K, 8, 4)
        # K = P H^T S^-1, solved as S K^T = H P (S is symmetric).
        gain = np.linalg.solve(innovation_cov, np.swapaxes(cross, 1, 2)).swapaxes(1, 2)
        innovation = measured - means[:, :4]
        new_means = means + np.einsum("kij,kj->ki", gain, innovation)
        new_covariances = covariances - gain @ innovation_cov @ np.swapaxes(gain, 1, 2)
        return new_means, new_covariances
