"""Tracker settings by name: ByteTrack's published settings, and reading settings from a file.

    config = tracker_config("bytetrack-mot17", max_misses=60)   # a preset, then overrides
    config = load_tracker_config("tracker.json")                 # {"preset": ..., "high_score": ...}

ByteTrack (Zhang et al. 2022, github.com/ifzhang/ByteTrack, MIT licence) publishes three
sets of settings; in our names (track_thresh -> high_score, det_thresh = track_thresh + 0.1
-> new_track_score, match_thresh m -> match_similarity 1 - m, track_buffer -> max_misses,
its fixed second- and third-stage thresholds 0.5 and 0.7 -> low_match_iou 0.5 and
tentative_match_similarity 1 - 0.7, its `--mot20` switch -> fuse_score False):

- "bytetrack-demo": tools/demo_track.py (track_thresh 0.5, match_thresh 0.8, track_buffer 30);
  TrackerConfig's defaults.
- "bytetrack-mot17": tools/track.py, its MOT17 evaluation (track_thresh 0.6, match_thresh
  0.9, track_buffer 30). Its --min-box-area 100 (boxes under 100 px² are not reported) has
  no counterpart here.
- "bytetrack-mot20": the README's MOT20 command (tools/track.py with --match_thresh 0.7
  --mot20: IoU without the score in stages 2 and 4).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ssd_edge.runtime.tracking.errors import TrackingError
from ssd_edge.runtime.tracking.tracker import TrackerConfig

PRESETS: dict[str, TrackerConfig] = {
    "bytetrack-demo": TrackerConfig(),
    "bytetrack-mot17": TrackerConfig(high_score=0.6, new_track_score=0.7, match_similarity=0.1),
    "bytetrack-mot20": TrackerConfig(high_score=0.6, new_track_score=0.7, match_similarity=0.3, fuse_score=False),
}
DEFAULT_PRESET = "bytetrack-demo"


def tracker_config(preset: str = DEFAULT_PRESET, **settings: Any) -> TrackerConfig:
    """The preset `preset` with `settings` (TrackerConfig's fields) changed."""
    if preset not in PRESETS:
        raise TrackingError(f"unknown tracker preset {preset!r}; choose from {', '.join(sorted(PRESETS))}")
    names = {f.name for f in dataclasses.fields(TrackerConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise TrackingError(f"unknown tracker setting(s) {unknown}; choose from {sorted(names)}")
    return dataclasses.replace(PRESETS[preset], **settings)


def load_tracker_config(path: str | Path, **overrides: Any) -> TrackerConfig:
    """A TrackerConfig from a JSON file: an object with an optional "preset" (a name in
    PRESETS, default bytetrack-demo) and any of TrackerConfig's fields; `overrides` (for
    example from a command line) win over the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise TrackingError(f"{path}: cannot read the tracker config ({error.strerror or error})") from error
    except json.JSONDecodeError as error:
        raise TrackingError(f"{path}: not valid JSON at line {error.lineno}: {error.msg}") from error
    if not isinstance(data, dict):
        raise TrackingError(f"{path}: a tracker config is a JSON object, got {type(data).__name__}")
    preset = data.pop("preset", DEFAULT_PRESET)
    try:
        return tracker_config(preset, **{**data, **overrides})
    except (TrackingError, TypeError) as error:
        raise TrackingError(f"{path}: {error}") from error


def config_record(config: TrackerConfig) -> dict[str, Any]:
    """The config as a JSON-ready dict (what load_tracker_config reads back)."""
    return dataclasses.asdict(config)
