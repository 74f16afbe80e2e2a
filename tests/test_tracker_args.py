"""The tracker's command-line settings (ssd_edge/cli/tracker_args.py): presets by name, a
JSON file, flags over both."""

from __future__ import annotations

import argparse
import json

import pytest

from ssd_edge.cli.tracker_args import PRESET_NAMES, add_tracker_arguments, tracker_config_from_args
from ssd_edge.runtime.tracking import TrackerConfig, TrackingError
from ssd_edge.runtime.tracking.presets import PRESETS


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_tracker_arguments(parser)
    return tracker_config_from_args(parser.parse_args(list(argv)))


def test_preset_names_are_the_runtimes():
    assert set(PRESET_NAMES) == set(PRESETS)


def test_defaults_presets_and_flags():
    assert parse() == TrackerConfig()
    assert parse("--tracker-preset", "bytetrack-mot17") == PRESETS["bytetrack-mot17"]
    config = parse("--tracker-preset", "bytetrack-mot20", "--track-buffer", "60", "--track-high", "0.55",
                   "--track-low", "0.2", "--track-new", "0.65", "--track-match", "0.25", "--track-min-hits", "3",
                   "--track-class-agnostic")
    assert (config.max_misses, config.high_score, config.low_score, config.new_track_score, config.match_similarity,
            config.min_hits, config.class_agnostic, config.fuse_score) == (60, 0.55, 0.2, 0.65, 0.25, 3, True, False)


def test_config_file_and_flags_over_it(tmp_path):
    path = tmp_path / "tracker.json"
    path.write_text(json.dumps({"preset": "bytetrack-mot17", "max_misses": 14, "min_hits": 3}))
    config = parse("--tracker-config", str(path), "--track-min-hits", "1")
    assert (config.high_score, config.max_misses, config.min_hits) == (0.6, 14, 1)
    with pytest.raises(TrackingError, match="both given"):
        parse("--tracker-config", str(path), "--tracker-preset", "bytetrack-demo")
    with pytest.raises(TrackingError, match="need 0 <= low_score <= high_score"):
        parse("--track-low", "0.9")
    with pytest.raises(SystemExit):
        parse("--tracker-preset", "mot99")


def test_ssd_demo_passes_the_tracker_settings_to_each_source(tmp_path):
    from ssd_edge.cli.demo import build_parser
    from ssd_edge.runtime.demo.loop import DemoOptions, _stream_tracking

    args = build_parser().parse_args(["--model", "m.onnx", "--track", "--tracker-preset", "bytetrack-mot17",
                                      "--track-buffer", "5"])
    config = tracker_config_from_args(args)
    assert (config.high_score, config.max_misses) == (0.6, 5)
    options = DemoOptions(model="m.onnx", source=["a.mp4", "b.mp4"], track=True, tracker=config)
    trackers = [_stream_tracking(options, index).tracker for index in (0, 1)]
    assert trackers[0] is not trackers[1] and all(t.config == config for t in trackers)
    assert _stream_tracking(DemoOptions(model="m.onnx", source="a.mp4", track=True)).tracker.config == TrackerConfig()
