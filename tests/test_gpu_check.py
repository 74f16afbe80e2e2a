"""scripts/gpu_check.py (the GPU kit's check) on a machine without a usable GPU: it must run
the steps that need none, skip the others saying so, write one summary (JSON + markdown),
and exit with its distinct no-GPU status rather than crash. The GPU is hidden
(CUDA_VISIBLE_DEVICES="") so that the test means the same on a GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
GPU_STEPS = ["kernel-cases", "sanitizers", "threads", "handoff", "timings", "ncu", "tensorrt"]


def run_check(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_without_a_gpu_it_says_what_it_skipped_and_exits_3(tmp_path):
    result = run_check(tmp_path, "--steps", ",".join(GPU_STEPS))
    assert result.returncode == 3, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["no_gpu"] is True and summary["exit_code"] == 3 and summary["failed"] == []
    assert summary["skipped_for_no_gpu"] == GPU_STEPS
    assert summary["headline"].startswith(f"no GPU: skipped {', '.join(GPU_STEPS)} (")
    assert summary["steps"]["environment"]["status"] == "ok"
    assert "packages" in summary["steps"]["environment"]["details"]
    assert summary["steps"]["probe"]["status"] == "no-gpu" and summary["steps"]["probe"]["reason"]
    markdown = (tmp_path / "summary.md").read_text()
    assert f"**{summary['headline']}** (exit 3" in markdown
    for step in GPU_STEPS:
        assert f"| {step} | skipped |  | no GPU |" in markdown
    assert result.stdout.strip().splitlines()[-2] == summary["headline"]


def test_a_failing_step_is_reported_and_exits_1(tmp_path):
    """A step whose process fails (here: the doctor, handed a model that does not exist)
    is a failure in the summary and exit status 1, not a crash of the check."""
    result = run_check(tmp_path, "--steps", "doctor", "--model", str(tmp_path / "missing.onnx"), "--budget", "200")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["failed"] == ["doctor"] and summary["headline"] == "FAILED: doctor"
    assert (tmp_path / "doctor.log").exists()


def test_a_broken_gpu_path_is_a_failure_not_no_gpu(tmp_path):
    """pycuda there but cuInit failing for another reason than a missing device: the probe
    fails, the GPU steps are skipped saying so, and the check exits 1, not 3."""
    stubs = tmp_path / "stubs"
    (stubs / "pycuda").mkdir(parents=True)
    (stubs / "pycuda" / "__init__.py").write_text("VERSION_TEXT = 'stub'\n")
    (stubs / "pycuda" / "driver.py").write_text(
        "class Error(Exception):\n    pass\n\n\ndef init():\n    raise Error('cuInit failed: unknown error')\n")
    env = dict(os.environ, PYTHONPATH=str(stubs))
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "out"), "--steps", "timings"],
                            capture_output=True, text=True, env=env, timeout=300)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert result.returncode == 1, result.stdout + result.stderr
    assert summary["steps"]["probe"] == {**summary["steps"]["probe"], "status": "failed"}
    assert "cuInit failed: unknown error" in summary["steps"]["probe"]["reason"]
    assert summary["steps"]["timings"]["reason"] == "the GPU probe failed"
    assert summary["no_gpu"] is False and summary["failed"] == ["probe"]
