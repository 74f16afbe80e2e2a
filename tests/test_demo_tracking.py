"""ssd-demo with tracking: the Detector runs at the tracker's low score, so that ByteTrack's
low-score band (which keeps partly hidden objects' tracks alive) reaches the tracker, while
--score-threshold filters only the plain detections drawn and logged; StreamTracking's
line and counts; drawing with the detections' own names."""

import json

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from ssd_edge.cli.demo import build_parser, main
from ssd_edge.runtime.demo.capture import FrameGrabber
from ssd_edge.runtime.demo.loop import DemoOptions, record_demo, run_demo
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.draw import draw_detections, draw_tracks
from ssd_edge.runtime.priors import default_boxes
from ssd_edge.runtime.spec import METADATA_KEY, DefaultBoxConfig, ModelSpec
from ssd_edge.runtime.tracking import StreamTracking, Tracks
from tests.helpers.demo import count_frames

CLASSES = ("__background__", "box", "stray")
BRIGHT, DARK = 200, 50  # frame brightness: the object scores 0.9 in a bright frame, 0.2 in a dark one
FRAMES = [BRIGHT] * 6 + [DARK] * 6 + [BRIGHT] * 4
STRAY_SCORE = 0.2


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory):
    return write_fixed_model(tmp_path_factory.mktemp("fixed") / "fixed.onnx")


def write_fixed_model(path, **spec_changes):
    """An ONNX SSD whose outputs are set by hand: the object (class "box", its default box
    the top-left cell's) scores 0.9 in a bright frame and 0.2 in a dark one; a "stray" box
    in the bottom-right cell scores 0.2 in every frame; every other default box is
    background. Scores are nearly a sigmoid of the class-1 or class-2 logit (the third
    class's is -20). spec_changes: the ModelSpec's fields to change."""
    spec = ModelSpec(arch="fixed", input_size=(64, 64), class_names=CLASSES,
                     default_boxes=DefaultBoxConfig(feature_maps=((2, 2),), scales=(0.4, 0.5), aspect_ratios=((),)),
                     **spec_changes)
    priors = default_boxes(spec)  # (P, 4) cx, cy, w, h in [0, 1]
    num_priors = len(priors)
    first = min(range(num_priors), key=lambda i: priors[i, 0] + priors[i, 1])
    last = max(range(num_priors), key=lambda i: priors[i, 0] + priors[i, 1])
    base = np.zeros((1, num_priors, 3), np.float32)
    base[0, :, 0] = 20.0  # background
    base[0, first] = (0.0, 0.0, -20.0)
    base[0, last] = (0.0, -20.0, _logit(STRAY_SCORE))
    mask = np.zeros((1, num_priors, 3), np.float32)
    mask[0, first, 1] = 1.0
    # the mean of the input (RGB in [0, 1]) -> the object's class-1 logit, a line through
    # (BRIGHT / 255, logit(0.9)) and (DARK / 255, logit(0.2))
    slope = (_logit(0.9) - _logit(0.2)) / ((BRIGHT - DARK) / 255.0)
    offset = _logit(0.9) - slope * BRIGHT / 255.0
    constants = {"base": base, "mask": mask, "slope": np.float32(slope), "offset": np.float32(offset),
                 "zero_locs": np.zeros((1, num_priors, 4), np.float32), "axes": np.array([1, 2], np.int64)}
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "slope"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["logit"]),
        helper.make_node("Unsqueeze", ["logit", "axes"], ["logit3"]),
        helper.make_node("Mul", ["logit3", "mask"], ["object"]),
        helper.make_node("Add", ["base", "object"], ["confs"]),
        helper.make_node("Unsqueeze", ["mean", "axes"], ["mean3"]),
        helper.make_node("Mul", ["mean3", "zero_locs"], ["locs"]),
    ]
    graph = helper.make_graph(
        nodes, "fixed_ssd",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 64, 64])],
        [helper.make_tensor_value_info("locs", TensorProto.FLOAT, ["batch", num_priors, 4]),
         helper.make_tensor_value_info("confs", TensorProto.FLOAT, ["batch", num_priors, 3])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: spec.to_json()})
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """Uniform frames, bright then dark (the object partly hidden) then bright again."""
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 128))
    for level in FRAMES:
        writer.write(np.full((128, 128, 3), level, np.uint8))
    writer.release()
    return path


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_fixed_model_scores_as_designed(fixed_model, clip):
    from ssd_edge.runtime import Detector

    with Detector(fixed_model, score_threshold=0.1) as detector:
        bright, dark = detector([np.full((128, 128, 3), BRIGHT, np.uint8), np.full((128, 128, 3), DARK, np.uint8)])
    for found, object_score in ((bright, 0.9), (dark, 0.2)):
        scores = dict(zip(found.names, found.scores.tolist()))
        assert sorted(scores) == ["box", "stray"]
        assert scores["box"] == pytest.approx(object_score, abs=0.01)
        assert scores["stray"] == pytest.approx(STRAY_SCORE, abs=0.01)


def test_tracking_gets_the_low_score_band_and_the_score_threshold_filters_only_plain_detections(
        fixed_model, clip, tmp_path):
    out = tmp_path / "tracked.mp4"
    lines = []
    settings = DemoOptions(model=fixed_model, source=str(clip), headless=True, output=str(out), track=True,
                            score_threshold=0.3)
    summary = run_demo(settings, status=lines.append)
    log = read_log(summary.log)
    assert count_frames(out) == len(log) == len(FRAMES)
    # The object's track lives through the dark frames on its 0.2 detections (ByteTrack's
    # second association) and keeps its ID; a Detector at 0.3 would lose it there.
    for record, level in zip(log[1:], FRAMES[1:]):
        assert [t["id"] for t in record["tracks"]] == [1], record
        track = record["tracks"][0]
        assert track["name"] == "box" and track["score"] == pytest.approx(0.9 if level == BRIGHT else 0.2, abs=0.01)
        assert record["detections"][track["detection"]]["score"] == track["score"]
    # The stray 0.2 box reaches the tracker but starts no track, and is not logged; the
    # object's 0.2 detection is, as the detection its track took.
    for record in log:
        assert [d["name"] for d in record["detections"]] == ["box"]
    assert any("above 0.1 go to the tracker, those above 0.3 are logged" in line for line in lines), lines


def test_without_tracking_the_detector_runs_at_the_score_threshold(fixed_model, clip, tmp_path):
    lines = []
    settings = DemoOptions(model=fixed_model, source=str(clip), headless=True, output=str(tmp_path / "plain.mp4"),
                            score_threshold=0.3)
    log = read_log(run_demo(settings, status=lines.append).log)
    assert [len(r["detections"]) for r in log] == [1 if level == BRIGHT else 0 for level in FRAMES]
    assert not any("tracker" in line for line in lines)


def test_without_a_score_threshold_the_models_own_filters_the_plain_detections(clip, tmp_path):
    """A model whose own threshold (0.5) is above the tracker's low score: the Detector
    still runs at the low score, and the plain detections logged are those above 0.5."""
    model = write_fixed_model(tmp_path / "strict.onnx", score_threshold=0.5)
    lines = []
    settings = DemoOptions(model=model, source=str(clip), headless=True, output=str(tmp_path / "strict.mp4"),
                            track=True)
    log = read_log(run_demo(settings, status=lines.append).log)
    dark = [r for r, level in zip(log, FRAMES) if level == DARK]
    assert all([t["score"] < 0.3 for t in r["tracks"]] == [True] for r in dark)
    assert all([d["name"] for d in r["detections"]] == ["box"] for r in log)  # the stray 0.2: not logged
    assert any("above 0.1 go to the tracker, those above 0.5 are logged" in line for line in lines), lines


def test_the_cli_tracks_with_the_low_score_band(fixed_model, clip, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    code = main(["--model", fixed_model, "--source", str(clip), "--headless", "--output", str(out), "--track",
                 "--score-threshold", "0.3"])
    assert code == 0
    log = read_log(out.with_suffix(".jsonl"))
    dark = [r for r, level in zip(log, FRAMES) if level == DARK]
    assert all(len(r["tracks"]) == 1 and r["tracks"][0]["score"] < 0.3 for r in dark)
    assert "go to the tracker" in capsys.readouterr().out
    assert build_parser().parse_args(["--model", "m.onnx"]).score_threshold == 0.3


def test_record_demo_filters_plain_detections_by_the_settings_threshold(clip, tmp_path):
    """record_demo with a detector of one's own: settings.score_threshold still decides
    what is drawn and logged as a plain detection."""
    def detector(image):
        scores = np.array([0.8, 0.25], np.float32)
        return Detections(np.array([[10, 10, 40, 40], [60, 60, 100, 100]], np.float32), np.array([1, 2]), scores,
                          np.zeros((2, 3), np.float32), CLASSES)

    settings = DemoOptions(model="unused", source=str(clip), headless=True, output=str(tmp_path / "own.mp4"),
                            score_threshold=0.3)
    grabber = FrameGrabber(lambda: cv2.VideoCapture(str(clip)), live=False)
    log = read_log(record_demo(detector, grabber, settings, fps=10).log)
    assert all([d["name"] for d in r["detections"]] == ["box"] for r in log)


def _tracks(boxes, labels, names=("bg", "car", "bike")):
    count = len(boxes)
    return Tracks(np.arange(1, count + 1), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels),
                  np.full(count, 0.9, np.float32), np.zeros(count, np.int64), np.arange(count), names)


def _moving_car(step):
    """One 40 x 40 "car" detection, 5 px lower each step."""
    box = np.array([[0, 5 * step, 40, 5 * step + 40]], np.float32)
    return Detections(box, np.array([1]), np.array([0.9], np.float32), np.zeros((1, 3), np.float32),
                      ("bg", "car", "bike"))


def test_stream_tracking_keeps_the_line_as_given_and_counts_once_per_crossing():
    stream = StreamTracking(line=((-100, 62), (100, 62)))
    line = stream.line
    assert line == ((-100.0, 62.0), (100.0, 62.0)) and all(isinstance(v, float) for p in line for v in p)
    frames = [stream.update(_moving_car(step), frame=step) for step in range(10)]
    crossed = [i for i, tracked in enumerate(frames) if tracked.crossings]
    assert len(crossed) == 1 and [c.track_id for c in frames[crossed[0]].crossings] == [1]
    assert frames[0].counts == {} and stream.record(frames[0])["counts"] == {}
    expected = {"car": {"top_to_bottom": 1, "bottom_to_top": 0}}
    assert frames[-1].counts == expected == stream.counts() == stream.record(frames[-1])["counts"]
    after = frames[crossed[0]:]
    assert all(tracked.counts is after[0].counts for tracked in after)  # computed once, when the crossing came
    assert stream.line is line  # the same tuple every frame, not rebuilt from NumPy


def test_stream_tracking_without_a_line_has_no_counts():
    stream = StreamTracking()
    tracked = stream.update(_moving_car(0), frame=0)
    assert stream.line is None and tracked.counts == {} and "counts" not in stream.record(tracked)


def test_drawing_uses_the_names_the_detections_and_tracks_carry():
    image = np.zeros((120, 160, 3), np.uint8)
    found = Detections(np.array([[10, 10, 80, 80]], np.float32), np.array([1]), np.array([0.9], np.float32),
                       np.zeros((1, 2), np.float32), ("bg", "person"))
    assert draw_detections(image, found, status="s").any()
    assert draw_tracks(image, _tracks([[10, 10, 80, 80]], [1]), status="s").any()
    with pytest.raises(TypeError):
        draw_detections(image, found, ("bg", "person"))  # no separate names: the detections carry them
