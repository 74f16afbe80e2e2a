"""Crossing directions named by what the viewer sees, whichever end a line is drawn from
(issue 27: `--count-line 320,0,320,480` counted a move to the right as 'right_to_left'); a
zero-length line refused as the user wrote it; a line outside the frame said."""

import numpy as np
import pytest

from ssd_edge.runtime.tracking import LineCounter, TrackingError
from ssd_edge.runtime.tracking.counting import outside_frame, parse_line


class Tracks:
    """One track whose box's bottom centre is at `point` (40 x 60 px box)."""

    def __init__(self, point, track_id=1):
        x, y = point
        self.ids, self.labels = np.array([track_id]), np.array([1])
        self.boxes = np.array([[x - 20, y - 60, x + 20, y]], float)


def crossings(line_text, path):
    counter = LineCounter(*parse_line(line_text))
    return [c.direction for point in path for c in counter.update(Tracks(point))], counter


RIGHTWARDS = [(250, 300), (300, 300), (340, 300), (390, 300)]
DOWNWARDS = [(320, 150), (320, 200), (320, 260), (320, 300)]


@pytest.mark.parametrize("line", ["320,0,320,480", "320,480,320,0", "300,0,340,480", "340,480,300,0"])
def test_a_move_to_the_right_is_left_to_right_whichever_end_the_line_starts(line):
    assert crossings(line, RIGHTWARDS)[0] == ["left_to_right"]
    assert crossings(line, RIGHTWARDS[::-1])[0] == ["right_to_left"]


@pytest.mark.parametrize("line", ["0,230,640,230", "640,230,0,230", "0,200,640,260"])
def test_a_move_down_across_a_horizontal_line_is_top_to_bottom(line):
    found, counter = crossings(line, DOWNWARDS)
    assert found == ["top_to_bottom"] and counter.directions[0] in ("top_to_bottom", "bottom_to_top")
    assert counter.counts_by_name(["bg", "car"]) == {"car": {"top_to_bottom": 1, "bottom_to_top": 0}}
    assert crossings(line, DOWNWARDS[::-1])[0] == ["bottom_to_top"]


def test_a_zero_length_line_is_refused_as_written():
    with pytest.raises(TrackingError, match=r"needs two different ends, got 50,50,50,50 \(zero length\)"):
        parse_line("50,50,50,50")


def test_a_line_outside_the_frame_is_said():
    assert outside_frame((10, 10), (600, 400), 640, 480) is None
    assert outside_frame((700, 0), (700, 480), 640, 480) == \
        "counting line (700,0)-(700,480) lies outside the 640x480 frame: nothing can cross it"
    assert "reaches outside the 640x480 frame: only the part inside counts" in outside_frame((320, -50), (320, 480),
                                                                                              640, 480)
