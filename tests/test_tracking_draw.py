"""draw_tracks: boxes in each track's colour, trails, the counting line and its counts."""

import numpy as np

from ssd_edge.runtime.draw import class_colour, draw_tracks
from ssd_edge.runtime.tracking import Tracks


def test_draw_tracks_draws_boxes_trails_line_and_counts():
    image = np.zeros((240, 320, 3), np.uint8)
    tracks = Tracks(np.array([7]), np.array([[100, 100, 160, 180]], np.float32), np.array([1]),
                    np.array([0.9], np.float32), np.array([3]), np.array([0]), ("bg", "car"))
    trail = np.array([[40, 200], [80, 180], [130, 140]], np.float32)
    drawn = draw_tracks(image, tracks, {7: trail}, line=((10, 60), (300, 60)),
                        counts={"car": {"left_to_right": 2, "right_to_left": 1}})
    assert not image.any()  # the input is left as it was
    assert tuple(drawn[150, 100]) == class_colour(7)  # the box's left edge, in the track's colour
    near_trail = drawn[188:193, 58:63].reshape(-1, 3)  # around a point between the trail's first two
    assert np.abs(near_trail.astype(int) - class_colour(7)).sum(axis=1).min() < 60  # antialiased
    assert drawn[60, 200].min() > 200  # the counting line, white (antialiased)
    assert drawn[225:, :60].any() and not drawn[225:, 200:].any()  # counts in the bottom-left corner
    plain = draw_tracks(image, tracks)  # no trail, line or counts
    assert not plain[60, 200].any() and not plain[225:, :60].any()
