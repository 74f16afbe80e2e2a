"""Tracking accuracy on real MOTChallenge sequences: ssd-edge's Tracker beside the official
ByteTrack association and SORT, all on the very same public detections, scored with
CLEAR MOT (MOTA) and IDF1 (ssd_edge.runtime.tracking.mot_metrics, IoU >= 0.5).

    python -m benchmarks.bench_mot                       # writes benchmarks/results/mot_tracking.md
    python -m benchmarks.bench_mot --score results/      # score MOT result files (SEQ.txt) instead

Data (nothing is fetched at run time; see tests/data/mot/SOURCE.md): per sequence
`<data>/<SEQ>/det/det.txt` (public detections) and the ground truth, `<data>/<SEQ>/gt/gt.txt`
or else the copy the motmetrics package ships (`motmetrics/data/<SEQ>/gt.txt`). Ground-truth
rows whose 7th column is 0 are left out (MOTChallenge marks entries to ignore so; MOT15's
KITTI-17 has 99, small far-away people).

Sets: `tuning` sequences may be looked at to choose settings; `held-out` ones never are
(ssd-edge runs them with the settings chosen on `tuning`); they are reported separately,
each as the sum of its sequences' counts.

Every tracker's output goes through a MOTChallenge result file (mot_format.write_mot) that
the scorer reads back (read_mot), as a result of `ssd-predict --track` would be.

Timing: each `update()` call with perf_counter, the detections already in memory, one
thread (OMP/BLAS threads and torch's set to 1), p50 over every frame of the set's
sequences, each sequence tracked `--repeat` times (the scores are the first run's; every
run gives the same tracks). Wall time (perf_counter) and the thread's CPU time
(thread_time): on a loaded machine the wall time includes waiting for a core, the CPU
time much less so. ByteTrack's IoU is the package's pure-Python loop (the official repository uses
cython_bbox), so its time is not ByteTrack's own speed.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from importlib import resources  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

from ssd_edge.bench import machine  # noqa: E402
from ssd_edge.common.atomic import write_text_atomic  # noqa: E402
from ssd_edge.runtime.tracking.mot_format import MotRecords, mot_lines, read_mot, write_mot  # noqa: E402
from ssd_edge.runtime.tracking.mot_metrics import MotScores, mot_scores  # noqa: E402
from ssd_edge.runtime.tracking.presets import PRESETS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
LOCAL_DATA = ROOT / "tests" / "data" / "mot"
# where the steering repository keeps the fetched sequences: shared/ beside the checkout (as CI lays it out)
SHARED_DATA = ROOT.parent / "shared" / "data" / "mot"
DATA = LOCAL_DATA if (LOCAL_DATA / "TUD-Campus").is_dir() or not SHARED_DATA.is_dir() else SHARED_DATA
SETS = {"tuning": ["TUD-Stadtmitte"], "held-out": ["TUD-Campus", "KITTI-17"]}
# SORT's published MOT15 table (github.com/abewley/sort README, same detections): FP, FN, IDs, MOTA %
SORT_PUBLISHED = {"TUD-Campus": (15, 113, 6, 62.7), "KITTI-17": (38, 225, 9, 60.2)}


@dataclass
class Sequence:
    name: str
    detections: MotRecords
    truth: MotRecords
    last_frame: int


def ground_truth_path(data: Path, name: str) -> Path:
    local = data / name / "gt" / "gt.txt"
    if local.is_file():
        return local
    shipped = resources.files("motmetrics") / "data" / name / "gt.txt"
    if not shipped.is_file():
        raise SystemExit(f"no ground truth for {name}: neither {local} nor motmetrics/data/{name}/gt.txt")
    return Path(str(shipped))


def load(data: Path, name: str) -> Sequence:
    det_path = data / name / "det" / "det.txt"
    if not det_path.is_file():
        raise SystemExit(f"{det_path} is missing: see {DATA / 'SOURCE.md'} for where the sequences come from")
    detections, truth = read_mot(det_path), read_mot(ground_truth_path(data, name))
    truth = truth.select(truth.scores != 0)  # MOTChallenge: 0 in the conf column = ignore
    last = int(max(detections.frames.max(initial=0), truth.frames.max(initial=0)))
    return Sequence(name, detections, truth, last)


def run_tracker(peer, sequence: Sequence, result_path: Path) -> list[tuple[float, float]]:
    """Track the sequence, write its MOT result file; returns (wall ms, thread CPU ms) per update."""
    peer.reset()
    lines, times = [], []
    for frame, rows in sequence.detections.by_frame(sequence.last_frame):
        start, start_cpu = time.perf_counter(), time.thread_time()
        ids, boxes = peer.update(rows.boxes, rows.scores)
        times.append(((time.perf_counter() - start) * 1e3, (time.thread_time() - start_cpu) * 1e3))
        lines += mot_lines(frame, ids, boxes, np.ones(len(ids)))
    write_mot(result_path, lines)
    return times


def score(sequence: Sequence, result_path: Path) -> MotScores:
    result = read_mot(result_path)
    hyp = dict(result.by_frame(sequence.last_frame))
    frames = [(g.ids, g.boxes, hyp[f].ids, hyp[f].boxes) for f, g in sequence.truth.by_frame(sequence.last_frame)]
    return mot_scores(frames, sequence.name)


def peers() -> list[tuple[str, Callable[[], object]]]:
    from benchmarks.mot_peers import ByteTrackPeer, LegacySsdEdgePeer, SortPeer, SsdEdgePeer

    demo = PRESETS["bytetrack-demo"]

    return [
        ("ssd-edge, preset bytetrack-demo", lambda: SsdEdgePeer(PRESETS["bytetrack-demo"])),
        ("ByteTrack, demo settings (track_thresh 0.5, match_thresh 0.8, buffer 30)",
         lambda: ByteTrackPeer(track_thresh=0.5, match_thresh=0.8, track_buffer=30)),
        ("ssd-edge, preset bytetrack-mot17", lambda: SsdEdgePeer(PRESETS["bytetrack-mot17"])),
        ("ByteTrack, MOT17 settings (track_thresh 0.6, match_thresh 0.9, buffer 30)",
         lambda: ByteTrackPeer(track_thresh=0.6, match_thresh=0.9, track_buffer=30)),
        ("SORT (max_age 1, min_hits 3, iou 0.3)", lambda: SortPeer(max_age=1, min_hits=3, iou_threshold=0.3)),
        ("ablation: ssd-edge before issue 23 (count-first assignment, noise floor on each std, no first-frame "
         "tracks), preset bytetrack-demo", lambda: LegacySsdEdgePeer(demo)),
        ("ablation: before issue 23 + the assignment fix", lambda: LegacySsdEdgePeer(demo, assignment=False)),
        ("ablation: before issue 23 + the noise-floor fix", lambda: LegacySsdEdgePeer(demo, noise_floor=False)),
        ("ablation: before issue 23 + first-frame tracks", lambda: LegacySsdEdgePeer(demo, first_frame=False)),
    ]


def set_threads() -> None:
    try:
        import torch  # bytetracker imports it

        torch.set_num_threads(1)
    except ImportError:
        pass


def table(rows: list[tuple[str, MotScores, list[float]]]) -> list[str]:
    lines = ["| tracker | MOTA % | IDF1 % | IDP % | IDR % | MOTP (IoU) % | FP | FN | IDSW | MT | ML "
             "| ms/frame p50 (wall) | CPU ms/frame p50 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s, ms in rows:
        wall, cpu = (np.percentile(np.asarray(ms)[:, i], 50) for i in (0, 1)) if ms else (None, None)
        timing = f"{wall:.3f} | {cpu:.3f}" if ms else " | "
        lines.append(f"| {name} | {100 * s.mota:.1f} | {100 * s.idf1:.1f} | {100 * s.idp:.1f} | {100 * s.idr:.1f} | "
                     f"{100 * s.motp:.1f} | {s.false_positives} | {s.misses} | {s.id_switches} | "
                     f"{s.mostly_tracked} | {s.mostly_lost} | {timing} |")
    return lines


def total(scores: list[MotScores]) -> MotScores:
    out = MotScores()
    for s in scores:
        out = out + s
    return out


def benchmark(data: Path, sets: dict[str, list[str]], repeat: int) -> tuple[dict[str, list], dict[str, MotScores]]:
    set_threads()
    results: dict[str, list] = {}
    per_sequence: dict[str, MotScores] = {}
    with tempfile.TemporaryDirectory() as folder:
        for set_name, names in sets.items():
            sequences = [load(data, name) for name in names]
            rows = []
            for label, make in peers():
                peer = make()
                set_threads()
                scores, times = [], []
                for sequence in sequences:
                    path = Path(folder) / label.split(",")[0] / f"{sequence.name}.txt"
                    for _ in range(repeat):
                        times += run_tracker(peer, sequence, path)
                    scores.append(score(sequence, path))
                    per_sequence[f"{label} / {sequence.name}"] = scores[-1]
                rows.append((label, total(scores), times))
                print(f"{set_name}: {label}: MOTA {100 * rows[-1][1].mota:.1f} IDF1 {100 * rows[-1][1].idf1:.1f} "
                      f"p50 {np.percentile(np.asarray(times)[:, 0], 50):.3f} ms (CPU "
                      f"{np.percentile(np.asarray(times)[:, 1], 50):.3f})", flush=True)
            results[set_name] = rows
    return results, per_sequence


def cross_check(per_sequence: dict[str, MotScores]) -> list[str]:
    lines = ["| sequence | FP (ours / published) | FN | IDSW | MOTA % |", "|---|---|---|---|---|"]
    for name, (fp, fn, ids, mota) in SORT_PUBLISHED.items():
        key = next((k for k in per_sequence if k.startswith("SORT") and k.endswith(f"/ {name}")), None)
        if key is None:
            continue
        s = per_sequence[key]
        lines.append(f"| {name} | {s.false_positives} / {fp} | {s.misses} / {fn} | {s.id_switches} / {ids} | "
                     f"{100 * s.mota:.1f} / {mota} |")
    return lines


def markdown(results: dict[str, list], per_sequence: dict[str, MotScores], sets: dict[str, list[str]],
             command: str) -> str:
    load_avg = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    out = ["# Tracking accuracy on real MOTChallenge sequences (MOT15, public detections)", "",
           machine.markdown(machine.describe("scipy", "lap", "filterpy", "bytetracker", "sort_tracker", "motmetrics")),
           f"- load average (1, 5, 15 min) at the end of the run: {load_avg}", "",
           f"Command: `{command}`", "", __doc__.split("\n\n", 1)[1].strip(), ""]
    out += ["## Goal: IDF1 >= ByteTrack + 1 point and MOTA >= ByteTrack, same settings, on each set", "",
            "| set | settings | IDF1 ssd-edge - ByteTrack | MOTA ssd-edge - ByteTrack | met |",
            "|---|---|---:|---:|---|"]
    for set_name, rows in results.items():
        by_name = {name: s for name, s, _ in rows}
        for preset, bytetrack in (("bytetrack-demo", "ByteTrack, demo"), ("bytetrack-mot17", "ByteTrack, MOT17")):
            ours = by_name[f"ssd-edge, preset {preset}"]
            theirs = next(s for name, s in by_name.items() if name.startswith(bytetrack))
            d_idf1, d_mota = 100 * (ours.idf1 - theirs.idf1), 100 * (ours.mota - theirs.mota)
            met = "yes" if d_idf1 >= 1.0 and d_mota >= 0.0 else "no"
            out.append(f"| {set_name} | {preset} | {d_idf1:+.1f} | {d_mota:+.1f} | {met} |")
    out.append("")
    for set_name, rows in results.items():
        out += [f"## {set_name}: {', '.join(sets[set_name])}", "", *table(rows), ""]
    out += ["## Scorer cross-check: SORT against its published MOT15 table (same detections)", "",
            *cross_check(per_sequence), ""]
    out += ["## Per sequence", "", *table([(k, v, []) for k, v in per_sequence.items()]), ""]
    return "\n".join(out)


def score_folder(folder: Path, data: Path, names: list[str]) -> None:
    for name in names:
        path = folder / f"{name}.txt"
        if not path.is_file():
            continue
        s = score(load(data, name), path)
        print(f"{name}: MOTA {100 * s.mota:.1f} IDF1 {100 * s.idf1:.1f} FP {s.false_positives} FN {s.misses} "
              f"IDSW {s.id_switches}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder of MOTChallenge sequences (SEQ/det/det.txt)")
    parser.add_argument("--out", type=Path, default=RESULTS / "mot_tracking.md")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each sequence for the timing")
    parser.add_argument("--score", type=Path, help="score the MOT result files SEQ.txt in this folder and exit")
    args = parser.parse_args(argv)
    if args.score:
        score_folder(args.score, args.data, [n for names in SETS.values() for n in names])
        return
    command = "python -m " + " ".join(shlex.quote(a) for a in ["benchmarks.bench_mot", *sys.argv[1:]])
    results, per_sequence = benchmark(args.data, SETS, args.repeat)
    write_text_atomic(args.out, markdown(results, per_sequence, SETS, command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
