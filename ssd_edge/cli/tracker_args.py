"""The tracker's settings on a command line (ssd-predict --track, ssd-demo --track): a preset
by name, a JSON file, and one flag per setting, in that order of precedence (a flag wins).

    add_tracker_arguments(parser)
    args = parser.parse_args(argv)
    config = tracker_config_from_args(args)      # a TrackerConfig

Presets are ByteTrack's published settings (runtime/tracking/presets.py):
bytetrack-demo (the default: tools/demo_track.py), bytetrack-mot17 (tools/track.py),
bytetrack-mot20 (its MOT20 command).
"""

from __future__ import annotations

import argparse
from typing import Any

PRESET_NAMES = ("bytetrack-demo", "bytetrack-mot17", "bytetrack-mot20")  # runtime/tracking/presets.PRESETS
DEFAULT_PRESET = "bytetrack-demo"

# flag -> (TrackerConfig field, type, help)
FLAGS: dict[str, tuple[str, Any, str]] = {
    "--track-high": ("high_score", float, "score at or above which a detection takes part in the first association "
                                          "and may start a track (ByteTrack's track_thresh)"),
    "--track-low": ("low_score", float, "least score a detection needs to keep a track alive (second association); "
                                        "the model runs at this score when tracking"),
    "--track-new": ("new_track_score", float, "least score that starts a track (ByteTrack's det_thresh)"),
    "--track-match": ("match_similarity", float, "least IoU x score for a first-association pair "
                                                 "(1 - ByteTrack's match_thresh)"),
    "--track-buffer": ("max_misses", int, "frames a lost track is kept (ByteTrack's track_buffer)"),
    "--track-min-hits": ("min_hits", int, "consecutive detections a new track needs to be reported"),
}


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --tracker-preset, --tracker-config and the --track-* setting flags (default None:
    the preset's or the file's value)."""
    group = parser.add_argument_group("tracker settings (with --track)")
    group.add_argument("--tracker-preset", choices=PRESET_NAMES, default=None,
                       help=f"ByteTrack's published settings by name (default {DEFAULT_PRESET}, its demo's)")
    group.add_argument("--tracker-config", metavar="FILE",
                       help='JSON object: optional "preset" and any TrackerConfig field (high_score, low_score, '
                            "new_track_score, match_similarity, low_match_iou, tentative_match_similarity, "
                            "fuse_score, min_hits, max_misses, class_agnostic); flags win over it")
    for flag, (_, kind, text) in FLAGS.items():
        group.add_argument(flag, type=kind, default=None, metavar="N", help=text)
    group.add_argument("--track-class-agnostic", action="store_true", default=None,
                       help="match tracks across classes (a track takes its latest detection's label)")


def tracker_config_from_args(args: argparse.Namespace):
    """The TrackerConfig the parsed arguments describe (TrackingError for a bad value or file)."""
    from ssd_edge.runtime.tracking import TrackingError
    from ssd_edge.runtime.tracking.presets import load_tracker_config, tracker_config

    overrides = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in FLAGS.items()}
    overrides["class_agnostic"] = getattr(args, "track_class_agnostic", None)
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if getattr(args, "tracker_config", None):
        if args.tracker_preset:
            raise TrackingError(f"--tracker-preset {args.tracker_preset} and --tracker-config {args.tracker_config} "
                                f"both given: put \"preset\": \"{args.tracker_preset}\" in the file instead")
        return load_tracker_config(args.tracker_config, **overrides)
    return tracker_config(args.tracker_preset or DEFAULT_PRESET, **overrides)
