"""Multi-object tracking on the runtime side, torch-free: the same object keeps its ID
across frames.

    from ssd_edge.runtime import Detector
    from ssd_edge.runtime.tracking import LineCounter, Tracker

    tracker = Tracker(min_hits=2, max_misses=30)
    for index, image in enumerate(frames):
        tracks = tracker.update(detector(image), frame=index)   # Detections in, Tracks out
        tracks.ids, tracks.boxes, tracks.labels, tracks.scores, tracks.ages

`Tracker` is ByteTrack's association (high-score detections first, then low-score ones to
keep tracks alive through occlusion), per class, over constant-velocity Kalman-filtered
boxes; it takes anything with boxes, labels and scores. `presets` holds ByteTrack's
published settings by name; `LineCounter` counts each track crossing a segment once, per
class and net direction; `Trails` keeps the recent centres the demo draws; `StreamTracking`
bundles the three for a video stream (what `ssd-demo --track` runs) and gives the log's
fields; `mot_format` reads and writes MOTChallenge files, `mot_metrics` scores them (CLEAR
MOT, IDF1).

Dependencies: NumPy and SciPy only. SciPy is here for `scipy.optimize.linear_sum_assignment`
(the exact minimum-cost assignment of tracks to detections); it is in the `runtime` and
`jetson` extras. No tracker package fits the torch-free, Jetson-friendly constraint:
boxmot pulls torch, norfair pins numpy 1.26, the `trackers` package pulls opencv-python 5
and supervision.
"""

from ssd_edge.runtime.tracking.counting import Crossing, LineCounter, parse_line
from ssd_edge.runtime.tracking.errors import TrackingError
from ssd_edge.runtime.tracking.kalman import BoxKalman, MotionNoise
from ssd_edge.runtime.tracking.mot_format import MotRecords, read_mot, track_lines, write_mot
from ssd_edge.runtime.tracking.mot_metrics import MotScores, mot_scores
from ssd_edge.runtime.tracking.presets import PRESETS, load_tracker_config, tracker_config
from ssd_edge.runtime.tracking.stream import StreamTracking, TrackedFrame
from ssd_edge.runtime.tracking.tracker import Tracker, TrackerConfig, Tracks
from ssd_edge.runtime.tracking.trails import Trails

__all__ = ["PRESETS", "BoxKalman", "Crossing", "LineCounter", "MotRecords", "MotScores", "MotionNoise",
           "StreamTracking", "TrackedFrame", "Tracker", "TrackerConfig", "Tracks", "TrackingError", "Trails",
           "load_tracker_config", "mot_scores", "parse_line", "read_mot", "track_lines", "tracker_config", "write_mot"]
