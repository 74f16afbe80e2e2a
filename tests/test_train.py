"""Training as a user runs it: the seed's exact command, resume, bad data, NaN, torchrun."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssd_edge.checkpoint import load_checkpoint
from ssd_edge.data.sources import DatasetError
from ssd_edge.training.train import TrainConfig, TrainingError, train
from tests.helpers.training import train_interrupted_after_epoch_one

REPO = Path(__file__).resolve().parents[1]


def small_config(data, save, **changes):
    values = dict(datapath=str(data), arch="mobilenetv3_small_ssd", imgsz=160, epochs=1, batch_size=4,
                  lr=0.01, workers=0, save=str(save), progress=False, threads=1)
    values.update(changes)
    return TrainConfig(**values)


def test_seed_command_exactly_as_written(tmp_path):
    from ssd_edge.data.synth import SynthConfig, write_synthetic_dataset

    write_synthetic_dataset(tmp_path / "dataset_coco", train=5, val=2, seed=5, config=SynthConfig(max_side=320))
    command = [sys.executable, str(REPO / "train_ssd.py"), "--arch", "mobilenetv3_ssd", "--datapath", "dataset_coco",
               "--epochs", "10", "--batch-size", "5", "--lr", "0.001", "--save", "ssd.pt"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "coco layout, 3 classes (circle, square, triangle)" in result.stdout
    assert "epoch 10/10" in result.stdout and "mAP@0.5" in result.stdout

    checkpoint = torch.load(tmp_path / "ssd.pt", weights_only=True)
    assert checkpoint["epoch"] == 10
    assert tuple(checkpoint["spec"]["class_names"]) == ("__background__", "circle", "square", "triangle")
    assert {"optimizer", "scheduler", "model", "rng"} <= set(checkpoint)
    assert torch.load(tmp_path / "ssd.best.pt", weights_only=True)["spec"]["arch"] == "mobilenetv3_ssd"
    assert len((tmp_path / "ssd.metrics.csv").read_text().strip().splitlines()) == 11
    assert (tmp_path / "ssd.curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or p.name.endswith(".tmp")]


def test_resume_continues_exactly(tiny_coco, tmp_path, monkeypatch):
    straight = train(small_config(tiny_coco, tmp_path / "straight.pt", epochs=2))

    # The same run, interrupted (Ctrl-C) right after its first epoch was saved.
    train_interrupted_after_epoch_one(monkeypatch, small_config(tiny_coco, tmp_path / "run.pt", epochs=2))
    assert load_checkpoint(tmp_path / "run.pt")["epoch"] == 1

    resumed = train(small_config(tiny_coco, tmp_path / "run.pt", epochs=2, resume=str(tmp_path / "run.pt")))
    assert [row["epoch"] for row in resumed] == [1, 2]  # history carried over, one new epoch
    assert resumed[1]["loss"] == pytest.approx(straight[1]["loss"], rel=1e-6)
    a = load_checkpoint(tmp_path / "straight.pt")
    b = load_checkpoint(tmp_path / "run.pt")
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for key, value in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][key], value, rtol=1e-5, atol=1e-6)
    assert b["scheduler"]["last_epoch"] == a["scheduler"]["last_epoch"]


def test_corrupt_and_missing_images_are_skipped_and_counted(tiny_coco, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    (data / "train" / "000001.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (data / "train" / "000002.jpg").unlink()
    with pytest.warns(UserWarning, match="000001.jpg: unreadable or corrupt image, skipped"):
        history = train(small_config(data, tmp_path / "ssd.pt"))
    assert history[0]["skipped"] == 2


def test_malformed_annotation_file_stops_with_the_file_named(tiny_coco, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    annotations = data / "annotations" / "instances_train.json"
    annotations.write_text(annotations.read_text()[:-40])
    with pytest.raises(DatasetError, match=r"instances_train.json: not valid JSON"):
        train(small_config(data, tmp_path / "ssd.pt"))
    from ssd_edge.cli.train import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--datapath", str(data), "--save", str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2
    assert "instances_train.json: not valid JSON" in capsys.readouterr().err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_coco, tmp_path):
    save = tmp_path / "ssd.pt"
    train(small_config(tiny_coco, save))
    before = save.read_bytes()
    with pytest.raises(TrainingError, match="the loss became"):
        train(small_config(tiny_coco, save, epochs=3, lr=1e30, weights=str(save), warmup_epochs=0))
    assert save.read_bytes() == before


def test_torchrun_two_processes_gloo(tiny_coco, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "train_ssd.py"), "--arch", "mobilenetv3_small_ssd", "--imgsz", "160", "--datapath",
               str(tiny_coco), "--epochs", "1", "--batch-size", "2", "--workers", "0", "--save", "ssd.pt",
               "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    assert result.stdout.count("epoch 1/1  loss") == 1  # rank 0 alone reports
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssd.best.pt", "ssd.curves.png", "ssd.metrics.csv", "ssd.pt"]
    assert load_checkpoint(tmp_path / "ssd.pt")["epoch"] == 1
