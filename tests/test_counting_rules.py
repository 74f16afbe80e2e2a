"""LineCounter's rules for real tracks: each track counts once in its net direction
(withdrawn when it goes back), a margin that grows with the box, and the old behaviour
(count="every") kept on request."""

from __future__ import annotations

import numpy as np
import pytest

from ssd_edge.runtime.tracking import LineCounter, TrackingError


class Tracks:
    def __init__(self, points, ids, height=200.0, labels=None):
        points = np.asarray(points, float).reshape(-1, 2)
        self.ids = np.asarray(ids, np.int64)
        self.labels = np.ones(len(self.ids), np.int64) if labels is None else np.asarray(labels, np.int64)
        self.boxes = np.stack([points[:, 0] - 20, points[:, 1] - height, points[:, 0] + 20, points[:, 1]], axis=1)


def feed(counter, ys, x=100.0, track_id=1, height=200.0):
    events = []
    for y in ys:
        events += counter.update(Tracks([(x, y)], [track_id], height))
    return events


LINE = ((0.0, 300.0), (640.0, 300.0))  # drawn left to right: its right side is below (y > 300)


def test_jitter_across_the_line_counts_once_in_the_net_direction():
    # a pedestrian box (200 px tall) whose bottom jumps +-15 px around the line for a while,
    # then walks on down: one crossing, top to bottom
    ys = [250, 285, 315, 288, 312, 290, 314, 286, 340, 380]
    now = LineCounter(*LINE)  # net, margin max(2 px, 0.1 x 200 px) = 20 px
    events = feed(now, ys)
    assert now.counts == {(1, "top_to_bottom"): 1}
    assert [(e.direction, e.withdrawn) for e in events] == [("top_to_bottom", False)]
    before = LineCounter(*LINE, count="every", margin_px=2.0, margin_ratio=0.0)
    feed(before, ys)
    assert before.counts == {(1, "top_to_bottom"): 4, (1, "bottom_to_top"): 3}


def test_going_back_withdraws_the_count_and_crossing_again_counts_again():
    counter = LineCounter(*LINE)
    events = feed(counter, [250, 350])
    assert counter.counts == {(1, "top_to_bottom"): 1}
    events += feed(counter, [250])
    assert counter.counts == {}
    events += feed(counter, [350])
    assert counter.counts == {(1, "top_to_bottom"): 1}
    assert [(e.direction, e.withdrawn) for e in events] == [("top_to_bottom", False), ("top_to_bottom", True),
                                                          ("top_to_bottom", False)]


def test_margin_grows_with_the_box():
    small, tall = LineCounter(*LINE), LineCounter(*LINE)
    feed(small, [290, 310], track_id=1, height=40.0)  # margin max(2, 4) = 4 px: crossed
    feed(tall, [290, 310], track_id=1, height=300.0)  # margin 30 px: both points on the line
    assert small.counts == {(1, "top_to_bottom"): 1} and tall.counts == {}
    fixed = LineCounter(*LINE, margin_px=25.0, margin_ratio=0.0)
    feed(fixed, [270, 330], height=40.0)
    assert fixed.counts == {(1, "top_to_bottom"): 1}


def test_each_track_and_class_counted_apart():
    counter = LineCounter(*LINE)
    for y1, y2 in [(250, 350), (350, 250)]:
        counter.update(Tracks([(100, y1), (300, y2)], [1, 2], labels=[1, 3]))
    assert counter.counts == {(1, "top_to_bottom"): 1, (3, "bottom_to_top"): 1}
    counter.update(Tracks([(100, 250), (300, 250)], [1, 2], labels=[1, 3]))  # track 1 back up: withdrawn
    assert counter.counts == {(3, "bottom_to_top"): 1}
    assert counter.counts_by_name(["bg", "person", "bike", "car"]) == {"car": {"top_to_bottom": 0,
                                                                               "bottom_to_top": 1}}


def test_round_an_end_then_through_counts_from_the_new_side():
    counter = LineCounter((0.0, 300.0), (200.0, 300.0))
    for x, y in [(300, 250), (300, 350), (100, 350), (100, 250)]:  # down beyond the end, then up through it
        counter.update(Tracks([(x, y)], [5]))
    assert counter.counts == {(1, "bottom_to_top"): 1}


@pytest.mark.parametrize("settings, message", [
    ({"margin_ratio": -0.1}, "margin_ratio must lie in"),
    ({"margin_ratio": 1.0}, "margin_ratio must lie in"),
    ({"count": "sometimes"}, "unknown count mode 'sometimes'"),
    ({"margin_px": float("nan")}, "margin_px must be at least 0"),
])
def test_bad_counter_settings(settings, message):
    with pytest.raises(TrackingError, match=message):
        LineCounter(*LINE, **settings)


def test_stream_tracking_logs_a_withdrawn_crossing():
    from ssd_edge.runtime.tracking import StreamTracking, Tracker

    stream = StreamTracking(Tracker(min_hits=1), line=LINE)
    logged = []
    for y in [250, 270, 330, 350, 330, 270, 250]:  # a 200 px box's bottom goes down across the line and back
        box = np.array([[80.0, y - 200.0, 120.0, y]])
        tracked = stream.update(type("D", (), {"boxes": box, "labels": [1], "scores": [0.9]})())
        logged += stream.record(tracked).get("crossings", [])
    assert [(c["direction"], c.get("withdrawn", False)) for c in logged] == [("top_to_bottom", False),
                                                                           ("top_to_bottom", True)]
    assert stream.counts() == {}
