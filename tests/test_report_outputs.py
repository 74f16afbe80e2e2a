"""ssd-eval and ssd-bench: a report that cannot be written, or that would replace an
input, is refused before the work starts; --arch never goes silently unused; a missing
torch for the bench's peers names the extra to install."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ssd_edge.checkpoint import save_checkpoint
from ssd_edge.cli.bench import main as bench_main
from ssd_edge.cli.eval import main as eval_main
from ssd_edge.data.sources import load_splits
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.models import build_model


@pytest.fixture(scope="module")
def weights(tiny_coco, tmp_path_factory):
    """(checkpoint, exported ONNX) of a small untrained SSD for the tiny dataset's classes."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("reports")
    model = build_model("mobilenetv3_small_ssd", load_splits(tiny_coco)["val"].class_names, imgsz=160).eval()
    save_checkpoint(folder / "m.pt", model, epoch=0)
    return folder / "m.pt", export_onnx(model, folder / "m.onnx", simplified=False)


def exit_code(main, argv) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.mark.parametrize("tool", ["ssd-eval", "ssd-bench"])
def test_a_report_into_a_missing_folder_is_refused_before_the_work(tool, weights, tiny_coco, tmp_path, capsys):
    report = tmp_path / "missing" / "report.json"
    begin = time.monotonic()
    if tool == "ssd-eval":
        code = exit_code(eval_main, ["--weights", weights[0], "--datapath", tiny_coco, "--json", report,
                                     "--no-progress"])
    else:
        code = exit_code(bench_main, ["--model", weights[1], "--runs", 2000, "--json", report, "--no-progress"])
    assert code == 2 and time.monotonic() - begin < 5
    captured = capsys.readouterr()
    assert "--json" in captured.err and "does not exist" in captured.err
    assert "AP50" not in captured.out and not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder; the missing-folder test covers it")
def test_a_report_into_a_read_only_folder_is_refused_before_the_work(weights, tiny_coco, tmp_path, capsys):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code = exit_code(eval_main, ["--weights", weights[0], "--datapath", tiny_coco, "--json", folder / "r.json"])
    finally:
        folder.chmod(0o755)
    assert code == 2 and "not writable" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["ssd-eval", "ssd-bench"])
def test_a_report_never_replaces_a_model(tool, weights, tiny_coco, capsys):
    model = weights[1]
    before = model.read_bytes()
    if tool == "ssd-eval":
        code = exit_code(eval_main, ["--weights", model, "--datapath", tiny_coco, "--json", model, "--no-progress"])
    else:
        code = exit_code(bench_main, ["--model", model, "--markdown", model, "--no-progress"])
    assert code == 2 and "is the same file as the input" in capsys.readouterr().err
    assert model.read_bytes() == before


def test_ssd_eval_arch_that_contradicts_a_checkpoint_is_refused(weights, tiny_coco, capsys):
    code = exit_code(eval_main, ["--weights", weights[0], "--datapath", tiny_coco, "--arch", "vgg16_ssd",
                                 "--no-progress"])
    assert code == 2
    assert "holds a mobilenetv3_small_ssd model, not the --arch vgg16_ssd" in capsys.readouterr().err


def test_ssd_eval_says_when_arch_does_not_apply(weights, tiny_coco, capsys):
    code = exit_code(eval_main, ["--weights", weights[1], "--datapath", tiny_coco, "--arch", "vgg16_ssd",
                                 "--no-progress"])
    assert code == 0
    assert "--arch vgg16_ssd is not used for" in capsys.readouterr().out


def test_ssd_bench_peer_without_torch_names_the_extra(weights):
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        sys.modules["torchvision"] = None
        from ssd_edge.cli.bench import main
        main(sys.argv[1:])
    """)
    result = subprocess.run([sys.executable, "-c", script, "--model", str(weights[1]), "--peer", "torchvision",
                             "--runs", "2", "--warmup", "0", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install 'ssd-edge[train]'" in result.stderr


def test_a_report_never_replaces_a_file_of_the_dataset(weights, tiny_coco, capsys):
    annotations = sorted(tiny_coco.rglob("*.json"))[0]
    before = annotations.read_bytes()
    code = exit_code(eval_main, ["--weights", weights[1], "--datapath", tiny_coco, "--json", annotations,
                                 "--no-progress"])
    assert code == 2 and "is a file of the input folder --datapath" in capsys.readouterr().err
    assert annotations.read_bytes() == before
