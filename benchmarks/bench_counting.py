"""Line counting on real tracks: LineCounter fed ssd-edge's tracks of real MOTChallenge
sequences (the public detections bench_mot uses), against a truth counted on the
ground-truth trajectories.

    python -m benchmarks.bench_counting          # writes benchmarks/results/counting_mot.md

Lines: on each sequence (640x480), three vertical segments (x = 160, 320, 480, top to
bottom) and three horizontal ones (left to right) at the 25th, 50th and 75th percentile of
the ground-truth boxes' bottom edges, where people's feet are, so people walk along and
stand near them. Each line is counted in both directions.

Truth: for every ground-truth person, the anchor (bottom centre) path over the frames it
is annotated in: it counts once, in the direction from the side it starts on to the side it
ends on, when those differ and the path passes through the segment (not round its ends).

Error: the sum over lines and directions of |counted - true|, per set. The tuning set
alone chose `margin_ratio` (the grid below); held-out sequences were run once, with it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np

from benchmarks.bench_mot import DATA, RESULTS, Sequence, load
from ssd_edge.bench import machine
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.runtime.tracking import LineCounter, Tracker
from ssd_edge.runtime.tracking.counting import LEFT_TO_RIGHT, RIGHT_TO_LEFT, anchor_points
from ssd_edge.runtime.tracking.mot_format import read_mot
from ssd_edge.runtime.tracking.presets import PRESETS

WIDTH, HEIGHT = 640, 480
# the static-camera sequences (KITTI-17, filmed from a moving car, has no fixed line to count at)
SETS = {"tuning": ["TUD-Stadtmitte"], "held-out": ["TUD-Campus"]}
BEFORE = {"count": "every", "margin_px": 2.0, "margin_ratio": 0.0}  # LineCounter before issue 23
CHOSEN = {"count": "net", "margin_px": 2.0, "margin_ratio": 0.1}  # the defaults now
GRID = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]


class FrameTracks:
    def __init__(self, ids, boxes) -> None:
        self.ids = np.asarray(ids, np.int64)
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        self.labels = np.ones(len(self.ids), np.int64)


def lines_of(sequence: Sequence) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    bottoms = sequence.truth.boxes[:, 3]
    lines = [(f"x={x}", (float(x), 0.0), (float(x), float(HEIGHT))) for x in (160, 320, 480)]
    for q in (25, 50, 75):
        y = float(np.round(np.percentile(bottoms, q)))
        lines.append((f"y={y:.0f} (p{q} of feet)", (0.0, y), (float(WIDTH), y)))
    return lines


def tracker_frames(sequence: Sequence) -> list[FrameTracks]:
    tracker = Tracker(PRESETS["bytetrack-demo"])
    out = []
    for frame, rows in sequence.detections.by_frame(sequence.last_frame):
        tracks = tracker.update(rows.as_detections(), frame=frame)
        out.append(FrameTracks(tracks.ids, tracks.boxes))
    return out


def truth_frames(sequence: Sequence) -> list[FrameTracks]:
    return [FrameTracks(rows.ids, rows.boxes) for _, rows in sequence.truth.by_frame(sequence.last_frame)]


def true_counts(frames: list[FrameTracks], start, end) -> Counter:
    """Net crossings of each ground-truth path (see the module docstring)."""
    line = LineCounter(start, end, margin_px=0.0, margin_ratio=0.0)
    paths: dict[int, list[np.ndarray]] = {}
    for frame in frames:
        for track_id, point in zip(frame.ids.tolist(), anchor_points(frame.boxes, "bottom_center")):
            paths.setdefault(track_id, []).append(point)
    counts: Counter = Counter()
    for points in paths.values():
        points = np.asarray(points)
        distance = line.signed_distance(points)
        sided = np.flatnonzero(distance != 0)
        if len(sided) < 2 or np.sign(distance[sided[0]]) == np.sign(distance[sided[-1]]):
            continue
        through = any(np.sign(distance[a]) != np.sign(distance[b]) and line._through_segment(points[a], points[b])
                      for a, b in zip(sided[:-1], sided[1:]))
        if through:
            counts[LEFT_TO_RIGHT if distance[sided[-1]] > 0 else RIGHT_TO_LEFT] += 1
    return counts


def counted(frames: list[FrameTracks], start, end, settings: dict) -> Counter:
    counter = LineCounter(start, end, **settings)
    for frame in frames:
        counter.update(frame)
    return Counter({direction: n for (_, direction), n in counter.counts.items()})


def shipped_result(name: str) -> Sequence:
    """motmetrics' own copy of the sequence: ground truth and one (unnamed) tracker's result."""
    folder = resources.files("motmetrics") / "data" / name
    truth, result = read_mot(folder / "gt.txt"), read_mot(folder / "test.txt")
    return Sequence(name, result, truth, int(max(truth.frames.max(), result.frames.max())))


def run_set(names: list[str], data: Path, settings: list[dict],
            other_tracker: bool = False) -> tuple[list[int], list[str]]:
    """Error per settings (summed over the set) and a per-line detail table; tracks from
    ssd-edge's Tracker on the public detections, or (other_tracker) motmetrics' test.txt."""
    errors = [0] * len(settings)
    detail = []
    for name in names:
        if other_tracker:
            sequence = shipped_result(name)
            tracks = [FrameTracks(r.ids, r.boxes) for _, r in sequence.detections.by_frame(sequence.last_frame)]
        else:
            sequence = load(data, name)
            tracks = tracker_frames(sequence)
        truth = truth_frames(sequence)
        for label, start, end in lines_of(sequence):
            true = true_counts(truth, start, end)
            got = [counted(tracks, start, end, s) for s in settings]
            on_truth = counted(truth, start, end, CHOSEN)
            for direction in (LEFT_TO_RIGHT, RIGHT_TO_LEFT):
                cells = []
                for i, counts in enumerate(got):
                    errors[i] += abs(counts[direction] - true[direction])
                    cells.append(str(counts[direction]))
                detail.append(f"| {name} | {label} | {direction} | {true[direction]} | {on_truth[direction]} | "
                              + " | ".join(cells) + " |")
    return errors, detail


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=RESULTS / "counting_mot.md")
    args = parser.parse_args(argv)
    command = "python -m " + " ".join(shlex.quote(a) for a in ["benchmarks.bench_counting", *sys.argv[1:]])
    grid = [{"count": "net", "margin_px": 2.0, "margin_ratio": r} for r in GRID]
    tuning_errors, _ = run_set(SETS["tuning"], args.data, [BEFORE] + grid)
    out = ["# Line counting on real tracks (MOT15 public detections, ssd-edge tracks)", "",
           machine.markdown(machine.describe("scipy")), "", f"Command: `{command}`", "",
           __doc__.split("\n\n", 1)[1].strip(), "",
           f"## Choosing margin_ratio on the tuning set ({', '.join(SETS['tuning'])})", "",
           "| settings | error (sum of abs(counted - true)) |", "|---|---:|",
           f"| before: count every crossing, margin 2 px | {tuning_errors[0]} |"]
    out += [f"| net, margin max(2 px, {r} x box height) | {e} |" for r, e in zip(GRID, tuning_errors[1:])]
    settings = [BEFORE, {"count": "net", "margin_px": 2.0, "margin_ratio": 0.0}, CHOSEN]
    names = ["before (every crossing, 2 px)", "net, 2 px", f"now: net, max(2 px, {CHOSEN['margin_ratio']} h)"]
    out += ["", "## Error per set", "", "| set | " + " | ".join(names) + " | now / before |",
            "|---|" + "---:|" * (len(names) + 1)]
    details = []
    for set_name, seqs in SETS.items():
        errors, detail = run_set(seqs, args.data, settings)
        details += detail
        out.append(f"| {set_name} ({', '.join(seqs)}) | " + " | ".join(map(str, errors))
                   + f" | {errors[-1] / max(errors[0], 1):.0%} |")
        print(f"{set_name}: errors {errors}", flush=True)
    other = [run_set(seqs, args.data, settings, other_tracker=True)[0] for seqs in SETS.values()]
    out += ["", "## The same lines on another tracker's tracks", "",
            "motmetrics ships, beside the ground truth, one unnamed tracker's result for both sequences "
            "(motmetrics/data/SEQ/test.txt); its tracks are shorter and more fragmented than ssd-edge's.", "",
            "| set | " + " | ".join(names) + " | now / before |", "|---|" + "---:|" * (len(names) + 1)]
    out += [f"| {set_name} | " + " | ".join(map(str, errors)) + f" | {errors[-1] / max(errors[0], 1):.0%} |"
            for set_name, errors in zip(SETS, other)]
    load_avg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    out += ["", f"Load average (1, 5, 15 min) at the end of the run: {load_avg}"]
    out += ["", "## Per line (ssd-edge's tracks)", "",
            "| sequence | line | direction | true | now, on ground-truth tracks | " + " | ".join(names) + " |",
            "|---|---|---|---:|---:|" + "---:|" * len(names), *details, ""]
    write_text_atomic(args.out, "\n".join(out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
