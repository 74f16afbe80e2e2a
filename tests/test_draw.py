"""The demo's drawing: no box label ever hides under the frame-rate band in the top-left
corner, for detections and for tracks."""

import numpy as np
import pytest

from ssd_edge.runtime import Detections, draw_detections
from ssd_edge.runtime.draw import class_colour, draw_status, draw_tracks
from ssd_edge.runtime.tracking import Tracks

STATUS = "capture 30.0 fps | inference 29.5 fps"


def label_pixels(image: np.ndarray, colour) -> int:
    """Pixels of exactly `colour`: the box's outline and its filled label band."""
    return int((image == np.array(colour, np.uint8)).all(axis=-1).sum())


@pytest.mark.parametrize("corner", [(0, 0), (4, 3), (30, 8)])
@pytest.mark.parametrize("kind", ["detections", "tracks"])
def test_a_label_near_the_top_left_corner_is_not_hidden_by_the_status_band(corner, kind):
    image = np.full((240, 320, 3), 50, np.uint8)
    x, y = corner
    box = np.array([[x, y, x + 120, y + 150]], np.float32)
    if kind == "detections":
        found = Detections(boxes=box, labels=np.array([1]), scores=np.array([0.9], np.float32),
                           confs=np.zeros((1, 2), np.float32), class_names=("bg", "person"))
        colour = class_colour(1)

        def draw(status):
            return draw_detections(image, found, status=status)
    else:
        tracks = Tracks(np.array([5]), box, np.array([1]), np.array([0.9], np.float32), np.array([3]), np.array([0]),
                        ("bg", "person"))
        colour = class_colour(5)

        def draw(status):
            return draw_tracks(image, tracks, status=status)

    band_right, band_bottom = draw_status(image.copy(), STATUS)
    assert x + 30 < band_right  # the box's label would start under the band
    without, with_status = draw(None), draw(STATUS)
    assert label_pixels(without, colour) > 300
    # the label band, in the box's colour, whole just below the status band
    below = with_status[band_bottom + 1: band_bottom + 4, x + 2: x + 30]
    assert (below == np.array(colour, np.uint8)).all(axis=-1).mean() > 0.6
    # nothing of it lost but, at most, the outline's part under the band
    lost = label_pixels(without, colour) - label_pixels(with_status, colour)
    assert lost <= band_right + band_bottom
