"""Training on a shared machine (issue 22 item 11): OpenMP waits passively, set before torch
loads it, and --threads auto takes the CPUs other work leaves free; a resumed run keeps its
run's number of threads (another number changes float rounding)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssd_edge.training.threads import (
    auto_threads,
    available_cpus,
    cgroup_cpu_limit,
    choose_threads,
    prefer_passive_waiting,
)

REPO = Path(__file__).resolve().parents[1]

# Records OMP_WAIT_POLICY at the moment torch is first imported, then runs train_ssd.py.
SPY = """
import os, runpy, sys
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not getattr(Spy, "seen", False):
            Spy.seen = True
            print("OMP_WAIT_POLICY at import torch:", os.environ.get("OMP_WAIT_POLICY"), flush=True)
        return None
sys.meta_path.insert(0, Spy())
sys.argv = [sys.argv[1], "--datapath", sys.argv[2], "--epochs", "1"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_seed_command_sets_passive_waiting_before_torch_loads_openmp(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", SPY, str(REPO / "train_ssd.py"), str(tmp_path / "missing")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert "OMP_WAIT_POLICY at import torch: PASSIVE" in done.stdout, done.stdout + done.stderr[-2000:]


def test_a_policy_the_user_chose_is_kept():
    environ = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prefer_passive_waiting(environ) is False and environ == {"OMP_WAIT_POLICY": "ACTIVE"}
    environ = {}
    prefer_passive_waiting(environ)  # torch is loaded in this process: only an explicit choice would say so
    assert environ in ({}, {"OMP_WAIT_POLICY": "PASSIVE"})


@pytest.mark.parametrize("cpus, load, own, processes, threads", [
    (2, 0.0, 0.0, 1, 2),     # a quiet 2-core machine: both cores
    (2, 1.0, 0.0, 1, 1),     # one other busy process: one thread, not two in lock-step
    (2, 12.0, 0.0, 1, 1),    # the shared development machine
    (2, 2.2, 2.0, 1, 2),     # the load is mostly our own threads
    (16, 4.0, 0.0, 1, 12),
    (16, 0.0, 0.0, 4, 4),    # torchrun, 4 processes on the node
    (64, 100.0, 0.0, 1, 1),
])
def test_spinning_threads_take_only_the_free_cpus(cpus, load, own, processes, threads):
    assert auto_threads(cpus, load, own, processes, passive=False) == threads


@pytest.mark.parametrize("cpus, load, processes, threads", [
    (2, 0.0, 1, 2),
    (2, 12.0, 1, 2),         # passive threads give a core back: the load does not shrink them
    (16, 4.0, 4, 4),         # torchrun, 4 processes on the node
    (3, 50.0, 2, 1),
])
def test_passive_threads_take_every_cpu(cpus, load, processes, threads):
    assert auto_threads(cpus, load, 0.0, processes) == threads


def test_auto_says_how_openmp_waits(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    threads, why = choose_threads("auto")
    assert threads == available_cpus() and "passive waiting" in why
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert "spinning" in choose_threads("auto")[1]


@pytest.mark.parametrize("requested, env, says", [
    ("auto", {"OMP_WAIT_POLICY": "PASSIVE"}, ", passive waiting)"),  # auto's reason names the policy: said once
    ("auto", {"OMP_WAIT_POLICY": "ACTIVE"}, ", spinning)"),
    (2, {"OMP_WAIT_POLICY": "PASSIVE"}, " (--threads); OpenMP waiting: PASSIVE"),
    ("auto", {"OMP_NUM_THREADS": "1"}, " (OMP_NUM_THREADS); OpenMP waiting: OpenMP's default (spinning)"),
])
def test_training_says_how_openmp_waits_once(requested, env, says, monkeypatch, capsys):
    import torch

    from ssd_edge.training.distributed import DistInfo
    from ssd_edge.training.train import TrainConfig, use_threads

    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = torch.get_num_threads()
    try:
        use_threads(TrainConfig(datapath="unused", threads=requested), DistInfo())
    finally:
        torch.set_num_threads(before)
    line = capsys.readouterr().out.strip()
    assert line.startswith("threads: ") and line.endswith(says), line  # nothing after auto's "(..., passive waiting)"


def test_a_cgroup_quota_caps_the_cpus(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None
    assert cgroup_cpu_limit(tmp_path / "none") is None


def test_explicit_threads_and_omp_num_threads_are_taken_as_given(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(5) == (5, "--threads")
    assert choose_threads("auto") == (3, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    threads, why = choose_threads("auto")
    assert 1 <= threads <= len(os.sched_getaffinity(0)) and why.startswith("auto: ")


def test_training_uses_the_threads_says_so_and_a_resume_keeps_the_runs(tiny_coco, tmp_path, capsys, monkeypatch):
    import torch

    from ssd_edge.checkpoint import load_checkpoint
    from ssd_edge.cli.train import main

    before = torch.get_num_threads()
    save = tmp_path / "ssd.pt"
    main(["--datapath", str(tiny_coco), "--arch", "mobilenetv3_small_ssd", "--imgsz", "160", "--epochs", "1",
          "--batch-size", "4", "--workers", "0", "--no-progress", "--threads", "2", "--save", str(save)])
    assert "threads: 2 (--threads); OpenMP waiting: " in capsys.readouterr().out
    assert load_checkpoint(save)["config"]["threads"] == 2 and torch.get_num_threads() == before

    checkpoint = load_checkpoint(save)
    checkpoint["epoch"], checkpoint["config"]["epochs"] = 0, 1  # as if stopped before its first epoch ended
    torch.save(checkpoint, save)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # auto would say 1: the run's own 2 must win
    main(["--resume", str(save)])
    assert load_checkpoint(save)["config"]["threads"] == 2


def test_threads_must_be_auto_or_a_positive_number(capsys):
    from ssd_edge.cli.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--datapath", "x", "--threads", "0"])
    assert exit_info.value.code == 2 and "--threads" in capsys.readouterr().err
