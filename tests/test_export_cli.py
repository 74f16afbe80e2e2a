"""ssd-export end to end through `main([...])`: what it writes and prints, and one clear line
(exit code 2) for each kind of bad input."""

import re
import subprocess
import sys
import textwrap

import onnx
import pytest
import torch

from ssd_edge.checkpoint import save_checkpoint
from ssd_edge.cli.export import main
from ssd_edge.export.onnx_model import batch_size, load_onnx, read_spec
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.models.torchvision_import import coco_category_names
from tests.helpers.export import calibrated_model, dataset_images, torchvision_ssdlite_state_dict


@pytest.fixture(scope="module")
def model(tiny_coco):
    return calibrated_model("mobilenetv3_ssd", dataset_images(tiny_coco)[:4])


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "ssd.pt"
    save_checkpoint(path, model)
    return path, model.spec


def run(argv, capsys) -> tuple[int, str, str]:
    """Exit code (0 when main returns), stdout and stderr of one ssd-export run."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_onnx_and_int8_end_to_end(checkpoint, tiny_coco, tmp_path, capsys, monkeypatch):
    from ssd_edge.export import pipeline

    decoded, parsed = [], []  # the parity images decoded, the ONNX files parsed by the pipeline
    monkeypatch.setattr(pipeline, "_parity_images",
                        lambda *a, real=pipeline._parity_images: decoded.append(a) or real(*a))
    monkeypatch.setattr(pipeline, "load_onnx", lambda path, real=pipeline.load_onnx: parsed.append(path) or real(path))
    weights, spec = checkpoint
    out = tmp_path / "out"
    code, stdout, stderr = run(["--weights", weights, "--format", "onnx", "--format", "int8", "--dynamic",
                                "--calib-data", tiny_coco, "--calib-images", 6, "--output", out], capsys)
    assert code == 0, stderr
    onnx_path, int8_path = out / "ssd.onnx", out / "ssd.int8.onnx"
    assert read_spec(onnx_path) == spec and read_spec(int8_path) == spec
    assert batch_size(load_onnx(onnx_path)) is None
    onnx.checker.check_model(str(onnx_path))
    assert f"wrote {onnx_path} (" in stdout and f"wrote {int8_path} (" in stdout and " MB)" in stdout
    assert "parity (onnxruntime CPU vs PyTorch)" in stdout and "detections agree" in stdout
    assert "INT8 vs FP32" in stdout and "cpu flavour" in stdout
    assert "calibrating" in stderr  # the progress bar
    assert len(decoded) == 1  # one image list for both comparisons (FP32 vs PyTorch, INT8 vs FP32)
    assert parsed == []  # what the pipeline wrote, it knows: no file is parsed again for its batch


def test_exported_onnx_quantizes_without_torch(model, tiny_coco, tmp_path):
    """The Jetson path: an ONNX exported elsewhere is quantized (or built) where torch is absent."""
    onnx_path = export_onnx(model, tmp_path / "ssd.onnx", simplified=False)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        from ssd_edge.cli.export import main
        main(["--weights", {str(onnx_path)!r}, "--format", "int8", "--calib-data", {str(tiny_coco)!r},
              "--calib-images", "2", "--output", {str(tmp_path / "out")!r}])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert read_spec(tmp_path / "out" / "ssd.int8.onnx") == model.spec


@pytest.fixture(scope="module")
def torchvision_weights(tiny_coco, tmp_path_factory):
    path = tmp_path_factory.mktemp("torchvision") / "ssdlite320_mobilenet_v3_large_coco.pth"
    torch.save(torchvision_ssdlite_state_dict(dataset_images(tiny_coco)[:4]), path)
    return path


def test_torchvision_coco_weights(torchvision_weights, tmp_path, capsys):
    code, stdout, stderr = run(["--weights", torchvision_weights, "--arch", "mobilenetv3_ssd", "--imgsz", 160,
                                "--batch", 2, "--output", tmp_path], capsys)
    assert code == 0, stderr
    onnx_path = tmp_path / "ssdlite320_mobilenet_v3_large_coco.onnx"
    spec = read_spec(onnx_path)
    assert spec.class_names == coco_category_names() and spec.input_size == (160, 160)
    assert batch_size(load_onnx(onnx_path)) == 2


def test_existing_output_survives_a_failed_export(checkpoint, tmp_path, capsys):
    weights, _ = checkpoint
    previous = tmp_path / "ssd.onnx"
    previous.write_bytes(b"previous export")
    code, _, stderr = run(["--weights", weights, "--opset", 11, "--output", tmp_path], capsys)
    assert code == 2 and "opset 11: choose 14 to 20" in stderr
    assert previous.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ssd.onnx"]


def test_engine_refused_where_tensorrt_or_gpu_is_missing(checkpoint, tmp_path, capsys):
    from ssd_edge.export.engine import TensorRTUnavailable, build_environment

    try:
        build_environment()
    except TensorRTUnavailable as exc:
        missing = str(exc)
    else:
        pytest.skip("TensorRT and a GPU are here: test_export_tensorrt.py builds engines instead")
    weights, _ = checkpoint
    code, stdout, stderr = run(["--weights", weights, "--format", "onnx,engine", "--output", tmp_path], capsys)
    assert code == 2
    assert stderr.strip() == f"ssd-export: error: {missing}" and "\n" not in stderr.strip()
    assert list(tmp_path.iterdir()) == []  # refused before any work


def _bad_inputs(tmp_path):
    """The files the bad-input cases point at."""
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 this is not a zip archive")
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "taken").write_text("a file where a folder should be")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["images"], ["locs"])], "bare",
        [onnx.helper.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("locs", onnx.TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "bare.onnx"))


# case: (arguments, what the one line must say); W: our checkpoint, TV: torchvision's, T: the test folder
BAD_INPUTS = {
    "missing": (["--weights", "T/missing.pt"], r"missing\.pt: no such file"),
    "corrupt": (["--weights", "T/corrupt.pt"], r"corrupt\.pt: not a readable PyTorch weights file"),
    "foreign": (["--weights", "T/foreign.pt"],
                r"foreign\.pt: neither an ssd-edge checkpoint nor a torchvision SSD/SSDLite"),
    "torchvision-without-arch": (["--weights", "TV"],
                                 r"coco\.pth: a torchvision detector state dict; say which architecture with --arch"),
    "unknown-arch": (["--weights", "W", "--arch", "resnet_ssd"],
                     r"unknown --arch 'resnet_ssd'; choose from mobilenetv3_small_ssd, mobilenetv3_ssd, vgg16_ssd"),
    "wrong-arch": (["--weights", "W", "--arch", "vgg16_ssd"],
                   r"ssd\.pt: holds a mobilenetv3_ssd model, not the --arch vgg16_ssd asked for"),
    "output-not-a-folder": (["--weights", "W", "--output", "T/taken/out"],
                            r"taken/out: cannot create the output directory"),
    "onnx-without-metadata": (["--weights", "T/bare.onnx", "--format", "int8", "--calib-data", "T"],
                              r"bare\.onnx: no ssd-edge metadata"),
    "int8-without-engine": (["--weights", "W", "--int8"], r"--int8 applies to TensorRT engines: add --format engine"),
    "int8-without-data": (["--weights", "W", "--format", "int8"],
                          r"INT8 needs calibration images: pass --calib-data DIR"),
    "calib-data-missing": (["--weights", "W", "--format", "int8", "--calib-data", "T/nowhere"],
                           r"nowhere: no such directory"),
    "unknown-format": (["--weights", "W", "--format", "onnx,tflite"],
                       r"unknown format\(s\) tflite; choose from onnx, int8, engine"),
    "half-and-int8": (["--weights", "W", "--format", "engine", "--half", "--int8"], r"--half and --int8 together"),
    "bad-imgsz": (["--weights", "W", "--imgsz", "320", "320", "3"], r"--imgsz takes one number or H W"),
    "negative-imgsz": (["--weights", "W", "--imgsz", "-5"], r"--imgsz must be one positive number or H W, got -5 -5"),
    "zero-imgsz": (["--weights", "W", "--imgsz", "0", "320"], r"--imgsz must be one positive number or H W, got 0 320"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_gets_one_clear_line(case, checkpoint, torchvision_weights, tmp_path, capsys):
    _bad_inputs(tmp_path)
    template, expected = BAD_INPUTS[case]
    named = {"W": str(checkpoint[0]), "TV": str(torchvision_weights)}
    args = [named.get(a) or (a.replace("T", str(tmp_path), 1) if a.startswith("T") else a) for a in template]
    code, _, stderr = run(args, capsys)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ssd-export: error: "), stderr
    assert re.search(expected, lines[0]), lines[0]


def test_a_failed_export_leaves_no_empty_output_folder(checkpoint, tmp_path, capsys):
    weights, _ = checkpoint
    code, _, stderr = run(["--weights", weights, "--opset", 11, "--output", tmp_path / "new" / "out"], capsys)
    assert code == 2 and "opset 11" in stderr
    assert not (tmp_path / "new").exists()


def test_an_export_never_replaces_its_weights(model, tiny_coco, tmp_path, capsys):
    """An FP32 ONNX that happens to be named *.int8.onnx: quantizing it would write
    <name>.int8.onnx, which is the weights file itself."""
    weights = export_onnx(model, tmp_path / "ssd.int8.onnx", simplified=False)
    before = weights.read_bytes()
    code, _, stderr = run(["--weights", weights, "--format", "int8", "--calib-data", tiny_coco / "val"], capsys)
    assert code == 2 and "is the same file as the input --weights" in stderr
    assert weights.read_bytes() == before


def test_export_options_are_refused_where_they_are_built_and_formats_deduplicated():
    from dataclasses import replace

    from ssd_edge.export.onnx_model import ExportError
    from ssd_edge.export.pipeline import ExportOptions

    assert ExportOptions(weights="ssd.pt", formats=("onnx", "int8", "onnx")).formats == ("onnx", "int8")
    with pytest.raises(ExportError, match="--half applies to TensorRT engines: add --format engine"):
        ExportOptions(weights="ssd.pt", half=True)
    with pytest.raises(ExportError, match="--calib-images must be at least 1, got 0"):
        replace(ExportOptions(weights="ssd.pt"), calib_images=0)
