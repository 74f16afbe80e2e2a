"""Training at its edges: any dataset and batch size, data with nothing to learn from,
checkpoints that cannot be resumed, outputs that cannot be written, two runs in one folder,
leftovers of killed saves, and Ctrl-C at any moment of a real `ssd-train` run."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ssd_edge.checkpoint import load_checkpoint, save_checkpoint
from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.models import build_model
from ssd_edge.training.outputs import RunFileError, RunFiles, writing
from ssd_edge.training.small_batches import drop_last_batch, running_stats_for_single_values
from ssd_edge.training.train import TrainConfig, TrainingError, train

REPO = Path(__file__).resolve().parents[1]


def small_config(data, save, **changes):
    values = dict(datapath=str(data), arch="mobilenetv3_small_ssd", imgsz=160, epochs=1, batch_size=4,
                  lr=0.001, optimizer="adamw", workers=0, save=str(save), progress=False)
    values.update(changes)
    return TrainConfig(**values)


def synthetic(root, train_images, val_images=1, seed=3):
    from ssd_edge.data.synth import SynthConfig, write_synthetic_dataset

    return write_synthetic_dataset(root, train=train_images, val=val_images, seed=seed,
                                   config=SynthConfig(min_side=160, max_side=200))


# ---------------------------------------------------------------- every dataset size and batch size


@pytest.mark.parametrize("images, batch_size", [(6, 5), (1, 4), (3, 1)], ids=["N%B=1", "one-image", "batch-1"])
def test_every_dataset_size_and_batch_size_trains(tmp_path, images, batch_size):
    data = synthetic(tmp_path / "data", images)
    save = tmp_path / "ssd.pt"
    history = train(small_config(data, save, batch_size=batch_size, epochs=2))
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)
    assert load_checkpoint(save)["epoch"] == 2


def test_a_batch_shrunk_to_one_image_by_unreadable_ones_trains(tmp_path):
    data = synthetic(tmp_path / "data", 4)
    (data / "train" / "000001.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="unreadable or corrupt"):
        history = train(small_config(data, tmp_path / "ssd.pt", batch_size=2))
    assert history[0]["skipped"] == 1


def test_last_batch_of_one_image_is_dropped_and_others_kept():
    assert drop_last_batch(6, 5) and drop_last_batch(11, 5) and drop_last_batch(10, 4)
    assert not drop_last_batch(7, 5) and not drop_last_batch(1, 4)
    assert not drop_last_batch(5, 5)


def test_one_value_per_channel_uses_running_statistics_and_nothing_else_changes():
    torch.manual_seed(0)
    model = build_model("mobilenetv3_small_ssd", ["bg", "a"], 160).train()
    x = torch.rand(1, 3, 160, 160)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(x)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_mean" in k}
    with running_stats_for_single_values(model):
        locs, confs = model(x)
        assert torch.isfinite(locs).all() and torch.isfinite(confs).all()
        after = model.state_dict()
        unchanged = {k for k in before if torch.equal(before[k], after[k])}
        assert 0 < len(unchanged) < len(before)  # only the layers that saw 1x1 maps kept their statistics
        model(torch.rand(2, 3, 160, 160))  # two images: batch statistics everywhere, as without the block
        assert all(not torch.equal(before[k], model.state_dict()[k]) for k in unchanged)
    assert all(m.training for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())  # the hooks go with the block


# ---------------------------------------------------------------- nothing to learn from


def test_all_unreadable_images_stop_before_training_and_save_nothing(tiny_coco, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    for image in (data / "train").iterdir():
        image.write_bytes(b"\xff\xd8 broken")
    with pytest.raises(TrainingError, match="no readable training images: none of the 10 images"):
        train(small_config(data, tmp_path / "ssd.pt"))
    assert not (tmp_path / "ssd.pt").exists()


def with_empty_split(tiny_coco, tmp_path, split):
    """A copy of the dataset whose `split` lists no images."""
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    path = data / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "images": [], "annotations": []}))
    return data


def test_an_empty_dataset_is_refused_with_our_message(tiny_coco, tmp_path):
    data = with_empty_split(tiny_coco, tmp_path, "train")
    with pytest.raises(TrainingError, match=r"no readable training images: .*instances_train.json lists no images"):
        train(small_config(data, tmp_path / "ssd.pt"))
    assert not (tmp_path / "ssd.pt").exists()


def test_an_empty_validation_split_trains_without_validation(tiny_coco, tmp_path):
    data = with_empty_split(tiny_coco, tmp_path, "val")
    history = train(small_config(data, tmp_path / "ssd.pt"))
    assert len(history) == 1 and "AP50" not in history[0]
    assert load_checkpoint(tmp_path / "ssd.pt")["epoch"] == 1


# ---------------------------------------------------------------- --resume of what cannot be resumed


@pytest.fixture(scope="module")
def sgd_run(tiny_coco, tmp_path_factory):
    save = tmp_path_factory.mktemp("sgd_run") / "ssd.pt"
    train(small_config(tiny_coco, save, optimizer="sgd", lr=0.01, epochs=1))
    return save


def test_resume_of_weights_only_says_use_weights(tiny_coco, tmp_path):
    save = tmp_path / "weights.pt"
    save_checkpoint(save, build_model("mobilenetv3_small_ssd", ("__background__", "circle", "square", "triangle"), 160))
    with pytest.raises(SSDEdgeError, match=r"weights.pt: holds weights but no training state .*use --weights"):
        train(small_config(tiny_coco, tmp_path / "new.pt", resume=str(save), epochs=2))


def test_resume_with_another_optimizer_is_refused_up_front(tiny_coco, sgd_run, tmp_path):
    with pytest.raises(SSDEdgeError, match=r"trained with --optimizer sgd, and this run asks for adamw"):
        train(small_config(tiny_coco, tmp_path / "ssd.pt", resume=str(sgd_run), optimizer="adamw", epochs=2))


@pytest.mark.parametrize("damage", [
    lambda rng: rng.update(torch=torch.zeros(7, dtype=torch.uint8)),
    lambda rng: rng["numpy"].update(keys=torch.zeros(3, dtype=torch.int64)),
    lambda rng: rng.update(python=[1, 2, 3]),
    lambda rng: rng.pop("numpy"),
], ids=["torch", "numpy", "python", "missing"])
def test_resume_with_a_damaged_rng_state_names_the_file(tiny_coco, sgd_run, tmp_path, damage):
    checkpoint = torch.load(sgd_run, weights_only=True)
    damage(checkpoint["rng"])
    broken = tmp_path / "broken.pt"
    torch.save(checkpoint, broken)
    with pytest.raises(SSDEdgeError, match=r"broken.pt: its random-number state is damaged"):
        train(small_config(tiny_coco, tmp_path / "ssd.pt", resume=str(broken), optimizer="sgd", epochs=2))


def test_resume_errors_are_one_line_from_the_command(tiny_coco, tmp_path, capsys):
    from ssd_edge.cli.train import main

    save = tmp_path / "weights.pt"
    save_checkpoint(save, build_model("mobilenetv3_small_ssd", ("__background__", "circle", "square", "triangle"), 160))
    with pytest.raises(SystemExit) as exit_info:
        main(["--datapath", str(tiny_coco), "--arch", "mobilenetv3_small_ssd", "--resume", str(save),
              "--save", str(tmp_path / "x.pt"), "--workers", "0", "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no training state" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- outputs that cannot be written


def test_unwritable_save_folder_fails_before_any_work(tmp_path):
    if os.geteuid() == 0:  # root writes through mode bits; sysfs refuses new files even to root
        folder = Path("/sys")
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    began = time.perf_counter()
    # the dataset does not exist: the check must come first, before anything is read
    with pytest.raises(RunFileError, match=re.escape(str(folder / "ssd.pt")) + r": cannot write in"):
        train(small_config(tmp_path / "no-such-dataset", folder / "ssd.pt"))
    assert time.perf_counter() - began < 30


def test_save_naming_a_folder_is_refused(tmp_path):
    with pytest.raises(RunFileError, match="is a folder; --save takes the checkpoint's file name"):
        train(small_config(tmp_path / "no-such-dataset", tmp_path))


FILE_LIMIT = """
import resource, signal, sys, torch
from ssd_edge.checkpoint import CheckpointError, save_checkpoint
from ssd_edge.models import build_model
model = build_model("mobilenetv3_small_ssd", ["bg", "a"], 160)
save_checkpoint(sys.argv[1], model, epoch=1)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
try:
    save_checkpoint(sys.argv[1], model, epoch=2)
except CheckpointError as exc:
    print(exc)
"""


def test_a_checkpoint_that_cannot_be_written_names_the_file_and_keeps_the_last(tmp_path):
    """A full disk cannot be made without root (tmpfs, loop device); a file-size limit
    (RLIMIT_FSIZE) makes the kernel refuse the write the same way, with EFBIG instead of
    ENOSPC, through the same code path. /dev/full gives the real ENOSPC below."""
    save = tmp_path / "ssd.pt"
    result = subprocess.run([sys.executable, "-c", FILE_LIMIT, str(save)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{save}: the checkpoint could not be written (File too large)" in result.stdout
    assert "enforce fail" not in result.stdout + result.stderr
    assert load_checkpoint(save)["epoch"] == 1  # the previous one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["ssd.pt"]  # no partial file left behind


def limit_file_size(limit):
    def apply():
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_ssd_train_that_cannot_write_its_checkpoint_ends_in_one_line(tiny_coco, tmp_path):
    command = [sys.executable, str(REPO / "train_ssd.py"), "--arch", "mobilenetv3_small_ssd", "--imgsz", "160",
               "--datapath", str(tiny_coco), "--epochs", "2", "--batch-size", "4", "--workers", "0",
               "--save", str(tmp_path / "ssd.pt"), "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, preexec_fn=limit_file_size(1_000_000),
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"ssd-train: error: {tmp_path / 'ssd.pt'}: the checkpoint could not be written (File too large); "
        "the file that was there before, if any, is unchanged")
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing half-written left


def test_no_space_left_is_said_with_the_file_named(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    full = r"/dev/full: could not be written \(No space left on device\); .*ssd.pt holds"
    with pytest.raises(RunFileError, match=full):
        with writing(Path("/dev/full"), tmp_path / "ssd.pt"):
            with open("/dev/full", "w") as handle:
                handle.write("epoch,loss\n" * 1000)


# ---------------------------------------------------------------- one folder, two runs; leftovers


def test_two_runs_in_one_folder_keep_their_own_files_and_clear_their_own_leftovers(tiny_coco, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    mine = [runs / ".a.pt.x1y2z3.partial.pt", runs / ".a.metrics.csv.k9.partial.csv",
            runs / ".a.curves.png.q.partial.png"]
    others = [runs / ".b.pt.x1y2z3.partial.pt", runs / "notes.partial.pt", runs / ".a.pt.x.partial.pth"]
    live = runs / ".a.pt.live01.partial.pt"  # being written right now (another run of the same name)
    for path in mine + others + [live]:
        path.write_bytes(b"half a file")
        if path != live:
            os.utime(path, (time.time() - 3600, time.time() - 3600))  # a killed save, an hour ago
    train(small_config(tiny_coco, runs / "a.pt"))
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others) and live.exists()
    train(small_config(tiny_coco, runs / "b.pt", epochs=2))
    assert not others[0].exists()
    for stem, epochs in (("a", 1), ("b", 2)):
        files = RunFiles(runs / f"{stem}.pt")
        assert all(p.is_file() for p in files.all())
        assert len(files.metrics.read_text().strip().splitlines()) == 1 + epochs
        assert files.curves.read_bytes()[:4] == b"\x89PNG"
    assert not (runs / "metrics.csv").exists() and not (runs / "curves.png").exists()


# ---------------------------------------------------------------- Ctrl-C around the epoch boundary

SUMMARY = re.compile(r"^epoch (\d+)/\d+  loss")


def interrupt_after_summary(data, save, delay, whole_group, signum=signal.SIGINT):
    """Run ssd-train with two data workers; `delay` s after the first epoch's summary line
    (when the next epoch starts its workers), send `signum` (SIGINT as a terminal's Ctrl-C
    does) to the whole process group or to the main process alone. Returns (exit code, stderr)."""
    command = [sys.executable, str(REPO / "train_ssd.py"), "--arch", "mobilenetv3_small_ssd", "--imgsz", "160",
               "--datapath", str(data), "--epochs", "40", "--batch-size", "2", "--workers", "2", "--optimizer", "adamw",
               "--lr", "0.001", "--save", str(save), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a shell that runs this in the background hands SIGINT down ignored; a terminal's command has it live
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in process.stdout:
            if SUMMARY.match(line):
                break
        else:
            pytest.fail(f"training ended before its first epoch: {process.communicate()[1][-3000:]}")
        time.sleep(delay)
        if whole_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        _, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("delay, whole_group", [(0.0, True), (0.02, True), (0.08, True), (0.2, True), (0.5, True),
                                                 (0.05, False)])
def test_ctrl_c_around_an_epoch_boundary_stops_cleanly(tmp_path, delay, whole_group):
    data = synthetic(tmp_path / "data", 4)
    save = tmp_path / "ssd.pt"
    code, err = interrupt_after_summary(data, save, delay, whole_group)
    assert code == 130, err[-3000:]
    for symptom in ("Traceback", "Exception ignored", "exited unexpectedly", "DataLoader worker"):
        assert symptom not in err, err[-3000:]
    said = re.search(r"ssd-train: error: interrupted (?:in|after) epoch \d+/40: (\S+) holds epoch (\d+), complete "
                     r"and intact; to continue, run the same command with --resume (\S+)", err)
    assert said, err[-3000:]
    assert said.group(1) == said.group(3) == str(save)
    assert load_checkpoint(save)["epoch"] == int(said.group(2)) >= 1
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.slow
@pytest.mark.parametrize("delay, whole_group", [(0.0, False), (0.3, True)], ids=["docker-stop", "systemd-group"])
def test_sigterm_stops_like_ctrl_c_and_names_the_signal(tmp_path, delay, whole_group):
    """Issue 22 item 10: docker stop (SIGTERM to the main process) and systemd (to the whole
    control group) stop at a safe point with the line Ctrl-C gets, the signal named, exit 143."""
    data = synthetic(tmp_path / "data", 4)
    save = tmp_path / "ssd.pt"
    code, err = interrupt_after_summary(data, save, delay, whole_group, signal.SIGTERM)
    assert code == 143, err[-3000:]
    for symptom in ("Traceback", "Exception ignored", "exited unexpectedly", "DataLoader worker"):
        assert symptom not in err, err[-3000:]
    said = re.search(r"ssd-train: error: interrupted by SIGTERM (?:in|after) epoch \d+/40: (\S+) holds epoch (\d+), "
                     r"complete and intact; to continue, run the same command with --resume (\S+)", err)
    assert said, err[-3000:]
    assert said.group(1) == said.group(3) == str(save)
    assert load_checkpoint(save)["epoch"] == int(said.group(2)) >= 1
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
