"""benchmarks/bench_mot.py end to end on a small sequence made here (the real MOTChallenge
files are not committed): every peer runs, the results go through MOT files, the markdown
has the per-set tables; and SORT's published TUD-Campus row when the real files are present.
Skipped without the peers' packages (bytetracker, sort-tracker-py: see benchmarks/README.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("bytetracker")
pytest.importorskip("sort_tracker")

from benchmarks import bench_mot  # noqa: E402


def write_sequence(root: Path, name: str, frames: int = 40, seed: int = 0) -> None:
    """Three people walking across a 640x480 view; detections = ground truth with 3 px noise,
    scores 0.55-0.99, one in ten missed."""
    rng = np.random.default_rng(seed)
    gt, det = [], []
    starts = [(20, 200, 4.0), (600, 180, -3.0), (300, 220, 1.5)]
    for frame in range(1, frames + 1):
        for person, (x0, y0, speed) in enumerate(starts, start=1):
            x, y, w, h = x0 + speed * frame, y0, 50.0, 150.0
            gt.append(f"{frame},{person},{x:.2f},{y:.2f},{w},{h},1,-1,-1,-1")
            if rng.random() > 0.1:
                nx, ny = x + rng.normal(0, 3), y + rng.normal(0, 3)
                det.append(f"{frame},-1,{nx:.2f},{ny:.2f},{w},{h},{rng.uniform(0.55, 0.99):.3f},-1,-1,-1")
    (root / name / "gt").mkdir(parents=True)
    (root / name / "det").mkdir(parents=True)
    (root / name / "gt" / "gt.txt").write_text("\n".join(gt) + "\n")
    (root / name / "det" / "det.txt").write_text("\n".join(det) + "\n")


def test_bench_mot_runs_every_peer(tmp_path):
    write_sequence(tmp_path, "WALK-1")
    write_sequence(tmp_path, "WALK-2", seed=1)
    sets = {"tuning": ["WALK-1"], "held-out": ["WALK-2"]}
    results, per_sequence = bench_mot.benchmark(tmp_path, sets, repeat=1)
    for rows in results.values():
        names = [name for name, _, _ in rows]
        assert any(n.startswith("ssd-edge") for n in names) and any(n.startswith("ByteTrack") for n in names)
        assert any(n.startswith("SORT") for n in names)
        for name, scores, times in rows:
            assert scores.objects == 120 and 0.5 < scores.mota <= 1.0 and len(times) == 40
    text = bench_mot.markdown(results, per_sequence, sets, "python -m benchmarks.bench_mot")
    assert "## tuning: WALK-1" in text and "## held-out: WALK-2" in text and "| met |" in text


def test_scorer_reproduces_sorts_published_row(tmp_path):
    if not (bench_mot.DATA / "TUD-Campus" / "det" / "det.txt").is_file():
        pytest.skip("the MOT15 detections are not committed (tests/data/mot/SOURCE.md)")
    from benchmarks.mot_peers import SortPeer

    sequence = bench_mot.load(bench_mot.DATA, "TUD-Campus")
    path = tmp_path / "TUD-Campus.txt"
    bench_mot.run_tracker(SortPeer(), sequence, path)
    scores = bench_mot.score(sequence, path)
    assert (scores.false_positives, scores.misses, scores.id_switches) == bench_mot.SORT_PUBLISHED["TUD-Campus"][:3]
