"""Every command on an install without an optional package: it works (tqdm) or ends in one
line naming the extra to install, exit 2, before any work (issue 27). The packages are made
unimportable in a child Python (sys.modules[name] = None), as on a runtime-only install;
tests/test_runtime_install.py runs the real one."""

import subprocess
import sys

import pytest

CHILD = ("import sys; [sys.modules.__setitem__(name, None) for name in sys.argv[1].split(',')]; "
         "import importlib; main = importlib.import_module(sys.argv[2]).main; sys.exit(main(sys.argv[3:]))")


def run_without(missing: str, command: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, missing, f"ssd_edge.cli.{command}", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def assert_names_extra(done: subprocess.CompletedProcess, extra: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'ssd-edge[{extra}]'" in lines[0], done.stderr


def test_train_without_torch(tmp_path):
    done = run_without("torch,torchvision", "train", "--datapath", tmp_path, "--save", tmp_path / "m.pt")
    assert_names_extra(done, "train")
    assert not (tmp_path / "m.pt").exists()


def test_export_int8_without_onnx(model_path, tmp_path):
    done = run_without("onnx", "export", "--weights", model_path, "--format", "int8", "--calib-data", tmp_path)
    assert_names_extra(done, "export")


def test_eval_without_pycocotools(model_path, tiny_coco, tmp_path):
    done = run_without("pycocotools,pycocotools.cocoeval", "eval", "--weights", model_path, "--datapath", tiny_coco,
                       "--json", tmp_path / "eval.json")
    assert_names_extra(done, "eval")
    assert "eval val" not in done.stderr and not (tmp_path / "eval.json").exists()


def test_bench_data_without_pycocotools(model_path, tiny_coco):
    done = run_without("pycocotools,pycocotools.cocoeval", "bench", "--model", model_path, "--data", tiny_coco)
    assert_names_extra(done, "eval")
    assert "machine:" not in done.stdout


@pytest.mark.parametrize("command", [["check", "{data}"], ["synth", "{out}", "--train", "3", "--val", "2"]])
def test_dataset_without_tqdm(command, tiny_coco, tmp_path):
    args = [part.format(data=tiny_coco, out=tmp_path / "synth") for part in command]
    done = run_without("tqdm", "dataset", *args)
    assert done.returncode == 0, done.stderr
    assert "coco layout" in done.stdout or "no problems found" in done.stdout
