"""--resume continues the run its checkpoint holds: every setting comes from the checkpoint,
a flag that contradicts one is refused naming the flag and both values, a flag that agrees
(or one that only says where and how to run) is accepted, and the run stays bit-exact."""

import shutil

import pytest
import torch

from ssd_edge.checkpoint import load_checkpoint
from ssd_edge.cli.train import main
from ssd_edge.training.resume import ResumeError
from ssd_edge.training.train import TrainConfig, train

# A run with settings the defaults do not have, so that falling back to a default shows.
RUN = dict(arch="mobilenetv3_small_ssd", imgsz=160, epochs=2, batch_size=3, lr=0.02, optimizer="sgd",
           momentum=0.8, weight_decay=1e-4, warmup_epochs=0.5, seed=7, matcher="greedy_iou", workers=0,
           progress=False, threads=1)  # a fixed number of threads: bit-exact comparisons across runs need one


def interrupted_after_epoch_one(config, monkeypatch):
    """Train `config` and stop it (Ctrl-C, as a user would) once its first epoch is saved."""
    import ssd_edge.training.train as training

    summary_line = training.summary_line

    def interrupt(row, epochs):
        if row["epoch"] == 1:
            raise KeyboardInterrupt
        return summary_line(row, epochs)

    with monkeypatch.context() as patch:
        patch.setattr(training, "summary_line", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train(config)
    assert load_checkpoint(config.save)["epoch"] == 1


@pytest.fixture(scope="module")
def half_run(tiny_coco, tmp_path_factory):
    """(checkpoint after epoch 1 of 2, the same run trained straight through)."""
    folder = tmp_path_factory.mktemp("runs")
    straight = folder / "straight" / "ssd.pt"
    train(TrainConfig(datapath=str(tiny_coco), save=str(straight), **RUN))
    half = folder / "half" / "ssd.pt"
    with pytest.MonkeyPatch.context() as monkeypatch:
        interrupted_after_epoch_one(TrainConfig(datapath=str(tiny_coco), save=str(half), **RUN), monkeypatch)
    return half, straight


def copy_run(half, folder):
    folder.mkdir()
    shutil.copy(half, folder / half.name)
    return folder / half.name


def ssd_train(*argv):
    main([str(a) for a in argv])


def test_resume_alone_continues_the_run_bit_exactly(half_run, tmp_path, monkeypatch):
    half, straight = half_run
    resumed = copy_run(half, tmp_path / "run")
    monkeypatch.chdir(tmp_path)  # a default --save would land here, as ./ssd.pt
    ssd_train("--resume", resumed)

    assert not (tmp_path / "ssd.pt").exists()
    a, b = load_checkpoint(straight), load_checkpoint(resumed)
    assert b["epoch"] == 2 and [row["epoch"] for row in b["history"]] == [1, 2]
    assert b["optimizer"]["param_groups"][0]["momentum"] == 0.8 and "betas" not in b["optimizer"]["param_groups"][0]
    assert {k: v for k, v in b["config"].items() if k not in ("save", "resume")} == \
        {k: v for k, v in a["config"].items() if k not in ("save", "resume")}
    assert b["scheduler"] == a["scheduler"]
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key
    for key, value in a["optimizer"]["state"].items():
        assert torch.equal(b["optimizer"]["state"][key]["momentum_buffer"], value["momentum_buffer"]), key
    assert b["history"][1]["loss"] == a["history"][1]["loss"]


@pytest.mark.parametrize("flag, value, stored", [
    ("--epochs", "3", "--epochs 2"),
    ("--optimizer", "adamw", "--optimizer sgd"),
    ("--lr", "0.001", "--lr 0.02"),
    ("--batch-size", "4", "--batch-size 3"),
    ("--arch", "mobilenetv3_ssd", "--arch mobilenetv3_small_ssd"),
    ("--imgsz", "192", "--imgsz 160"),
    ("--matcher", "hungarian_iou", "--matcher greedy_iou"),
    ("--seed", "0", "--seed 7"),
    ("--warmup-epochs", "1.5", "--warmup-epochs 0.5"),
    ("--weights", "other.pt", "no --weights"),
    ("--amp", None, "no --amp"),
    ("--save", "elsewhere/ssd.pt", "--save "),
])
def test_a_flag_that_contradicts_the_checkpoint_is_refused_naming_it(half_run, tmp_path, capsys, flag, value, stored):
    resumed = copy_run(half_run[0], tmp_path / "run")
    before = resumed.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        ssd_train("--resume", resumed, flag, *([value] if value else []))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    given = f"{flag} {value}" if value else flag
    assert f"{resumed}: {given} contradicts the run it holds, which has {stored}" in err, err
    assert f"leave {flag} out" in err
    assert resumed.read_bytes() == before and not (tmp_path / "elsewhere").exists()


def test_a_longer_run_is_refused_with_the_reason(half_run, tmp_path, capsys):
    resumed = copy_run(half_run[0], tmp_path / "run")
    with pytest.raises(SystemExit):
        ssd_train("--resume", resumed, "--epochs", "10")
    assert "the cosine schedule spans all the epochs" in capsys.readouterr().err


def test_flags_that_agree_or_only_say_how_to_run_are_accepted(half_run, tiny_coco, tmp_path, monkeypatch):
    half, straight = half_run
    resumed = copy_run(half, tmp_path / "run")
    moved = tmp_path / "moved_data"
    shutil.copytree(tiny_coco, moved)
    monkeypatch.chdir(tmp_path)
    ssd_train("--resume", resumed, "--datapath", moved, "--workers", "1", "--device", "cpu", "--no-progress",
              "--epochs", "2", "--optimizer", "sgd", "--lr", "0.02", "--batch-size", "3", "--momentum", "0.8",
              "--arch", "mobilenetv3_small_ssd", "--imgsz", "160", "--seed", "7", "--matcher", "greedy_iou",
              "--save", "run/../run/ssd.pt")
    b = load_checkpoint(resumed)
    assert b["epoch"] == 2 and b["config"]["datapath"] == str(moved) and b["config"]["workers"] == 1
    for key, value in load_checkpoint(straight)["model"].items():
        assert torch.equal(b["model"][key], value), key  # the data moved, the run is the same


def test_the_python_api_refuses_other_settings_too(half_run, tiny_coco, tmp_path):
    resumed = copy_run(half_run[0], tmp_path / "run")
    config = TrainConfig(datapath=str(tiny_coco), save=str(resumed), resume=str(resumed), **{**RUN, "epochs": 5})
    with pytest.raises(ResumeError, match=r"--epochs 5 contradicts the run it holds, which has --epochs 2"):
        train(config)


def test_a_checkpoint_without_stored_settings_is_refused(half_run, tmp_path, capsys):
    checkpoint = load_checkpoint(half_run[0])
    del checkpoint["config"]
    old = tmp_path / "old.pt"
    torch.save(checkpoint, old)
    with pytest.raises(SystemExit) as exit_info:
        ssd_train("--resume", old, "--datapath", tmp_path)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{old}: predates checkpoints that store their run's settings" in err and f"--weights {old}" in err


def test_a_dataset_that_is_gone_asks_for_datapath(half_run, tmp_path, capsys):
    checkpoint = load_checkpoint(half_run[0])
    checkpoint["config"]["datapath"] = str(tmp_path / "gone")
    moved = tmp_path / "ssd.pt"
    torch.save(checkpoint, moved)
    with pytest.raises(SystemExit):
        ssd_train("--resume", moved)
    assert f"the run's dataset {tmp_path / 'gone'} is not there" in capsys.readouterr().err


def test_other_data_is_refused_by_its_batches_per_epoch(half_run, tiny_coco, tmp_path, capsys):
    from ssd_edge.data.synth import SynthConfig, write_synthetic_dataset

    other = write_synthetic_dataset(tmp_path / "other", train=4, val=1, seed=3,
                                    config=SynthConfig(min_side=160, max_side=200))
    resumed = copy_run(half_run[0], tmp_path / "run")
    with pytest.raises(SystemExit):
        ssd_train("--resume", resumed, "--datapath", other)
    err = capsys.readouterr().err
    assert f"{resumed}: the run had 3 batches per epoch, and {other} gives 1" in err, err


def test_without_datapath_or_resume_the_command_says_what_it_needs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ssd_train("--epochs", "1")
    assert exit_info.value.code == 2 and "--datapath (or --resume)" in capsys.readouterr().err


def test_a_renamed_copy_continues_in_its_own_file_and_never_touches_the_original_run(half_run, tmp_path,
                                                                                     monkeypatch, capsys):
    """Issue 22 item 8: a copy of a run's checkpoint under another name (bk/x.pt of rr/ssd.pt)
    continues in bk/x.pt (best, metrics and curves beside it); the original run's finished
    files stay as they were, and nothing is created relative to the current folder."""
    half, straight = half_run
    monkeypatch.chdir(tmp_path)
    original = tmp_path / "rr" / "ssd.pt"
    original.parent.mkdir()
    shutil.copy(straight, original)  # the original run, finished
    finished = original.read_bytes()
    checkpoint = load_checkpoint(half)
    checkpoint["config"]["save"] = "rr/ssd.pt"  # as `ssd-train --save rr/ssd.pt` stores it
    copy = tmp_path / "bk" / "x.pt"
    copy.parent.mkdir()
    torch.save(checkpoint, copy)
    capsys.readouterr()

    ssd_train("--resume", "bk/x.pt")
    out = capsys.readouterr().out
    assert "saved bk/x.pt" in out and "rr/ssd.pt" not in out, out
    assert original.read_bytes() == finished
    assert sorted(p.name for p in original.parent.iterdir()) == ["ssd.pt"]
    assert sorted(p.name for p in copy.parent.iterdir()) == ["x.best.pt", "x.curves.png", "x.metrics.csv", "x.pt"]
    resumed = load_checkpoint(copy)
    assert resumed["epoch"] == 2 and resumed["config"]["save"] == "bk/x.pt"
    for key, value in load_checkpoint(straight)["model"].items():
        assert torch.equal(resumed["model"][key], value), key

    elsewhere = tmp_path / "elsewhere"  # another current folder: rr/ must not appear there
    elsewhere.mkdir()
    torch.save(checkpoint, copy)
    monkeypatch.chdir(elsewhere)
    ssd_train("--resume", copy)
    assert list(elsewhere.iterdir()) == [] and original.read_bytes() == finished
    assert load_checkpoint(copy)["epoch"] == 2


def test_a_best_checkpoint_beside_another_runs_checkpoint_is_refused(half_run, tmp_path, capsys):
    half, _ = half_run
    folder = tmp_path / "mixed"
    folder.mkdir()
    best = folder / "ssd.best.pt"
    shutil.copy(half.with_name("ssd.best.pt"), best)
    other = load_checkpoint(half)
    other["config"]["seed"] = 99  # another run's last checkpoint, under the name this run would continue in
    torch.save(other, folder / "ssd.pt")
    before = (folder / "ssd.pt").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        ssd_train("--resume", best)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{best}: continuing it would replace {folder / 'ssd.pt'}, which holds another run" in err, err
    assert (folder / "ssd.pt").read_bytes() == before
