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


def _overlap(a, b):
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def test_labels_of_boxes_that_share_a_place_do_not_cover_one_another():
    # per-class NMS keeps one box per class the model hesitates between: three boxes at one
    # place, two more beside them, and the status band over the first; every label stays readable
    from ssd_edge.runtime.draw import _draw_labels, _scale

    canvas = np.zeros((240, 320, 3), np.uint8)
    scale = _scale(canvas)
    labels = [(10, 40, class_colour(c), f"class{c} 0.{9 - c}") for c in range(3)]
    labels += [(30, 44, class_colour(4), "square 0.50"), (200, 100, class_colour(5), "circle 0.40")]
    rects = _draw_labels(canvas, labels, "capture 30.0 fps | inference 25.0 fps", scale)
    assert len(rects) == len(labels)
    band = (0, 0, *draw_status(np.zeros_like(canvas), "capture 30.0 fps | inference 25.0 fps"))
    for i, rect in enumerate(rects):
        assert not _overlap(rect, band), rect
        assert not any(_overlap(rect, other) for other in rects[:i]), (i, rects)
    assert rects[4][1] == 100 - (rects[4][3] - rects[4][1])  # a label with room keeps its place above its box


def test_draw_detections_stacks_the_labels_of_one_place():
    boxes = np.array([[60, 80, 160, 180]] * 2, np.float32)
    found = Detections(boxes, np.array([1, 2]), np.array([0.9, 0.8], np.float32), np.zeros((2, 3), np.float32),
                       ("background", "circle", "square"))
    image = draw_detections(np.zeros((240, 320, 3), np.uint8), found)
    first, second = class_colour(1), class_colour(2)
    rows_first = np.flatnonzero((image[:, 61] == first).all(axis=1))
    rows_second = np.flatnonzero((image[:, 61] == second).all(axis=1))
    label_first = rows_first[rows_first < 80]  # the best box's label sits above its box
    label_second = rows_second[(rows_second > 80) & (rows_second < 120)]  # the next one, just below it
    assert len(label_first) > 5 and len(label_second) > 5
