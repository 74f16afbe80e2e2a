"""ssd-bench's messages (issue 27): the machine line once, a --source folder's subset said,
and --plot's matplotlib checked before the benchmark runs."""

import json
import subprocess
import sys

import cv2
import numpy as np

from ssd_edge.bench.run import MAX_DIR_IMAGES
from ssd_edge.cli.bench import main


def _folder(path, count):
    path.mkdir()
    for i in range(count):
        cv2.imwrite(str(path / f"{i:03d}.png"), np.full((48, 64, 3), i, np.uint8))
    return path


def test_machine_line_once_and_the_source_subset_said(model_path, tmp_path, capsys):
    source = _folder(tmp_path / "frames", MAX_DIR_IMAGES + 6)
    out = tmp_path / "bench.json"
    assert main(["--model", model_path, "--source", str(source), "--runs", "2", "--warmup", "0", "--no-progress",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sum(line.startswith("machine: ") for line in printed.splitlines()) == 1
    said = f"{source} ({MAX_DIR_IMAGES} of its {MAX_DIR_IMAGES + 6} images, spread evenly by name)"
    assert said in printed and json.loads(out.read_text())["settings"]["source"] == said


PLOT_WITHOUT_MATPLOTLIB = ("import sys; sys.modules['matplotlib'] = None; from ssd_edge.cli.bench import main; "
                           "sys.exit(main(sys.argv[1:]))")


def test_plot_needs_matplotlib_before_the_run(model_path, tmp_path):
    report = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-c", PLOT_WITHOUT_MATPLOTLIB, "--model", model_path, "--runs", "1000",
                           "--json", str(report), "--plot", str(tmp_path / "bench.png")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and not report.exists()
    assert done.stderr.count("\n") == 1 and "pip install 'ssd-edge[plot]'" in done.stderr, done.stderr
    assert "machine:" not in done.stdout  # nothing was run
