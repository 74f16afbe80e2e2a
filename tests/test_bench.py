"""ssd-bench: its JSON and markdown hold every field for FP32 and INT8 ONNX models, the
percentiles are ordered, the stages add up, the peers' rows carry ratios, bad input gets
one clear line, it runs without torch, and the Detector's timing hook changes nothing.
Small models (mobilenetv3_small_ssd at 160x160) and a few runs: numbers are not asserted,
speed is for the benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ssd_edge.checkpoint import save_checkpoint
from ssd_edge.cli.bench import main
from ssd_edge.export.quantize import quantize_int8
from ssd_edge.export.to_onnx import export_onnx
from ssd_edge.runtime import Detector
from ssd_edge.runtime.stage_timer import STAGES, StageTimer
from tests.helpers.export import calibrated_model, dataset_images

FIELDS = ("name", "kind", "format", "backend", "size_mb", "batch", "runs", "latency_ms", "images_per_s",
          "stages_ms", "stages_p50_ms", "stages_timed", "stages_not_separate", "vs", "latencies_ms")


@pytest.fixture(scope="module")
def models(tiny_coco, tmp_path_factory):
    """A checkpoint and its FP32 and INT8 (cpu flavour) ONNX exports, dynamic batch."""
    folder = tmp_path_factory.mktemp("bench")
    images = dataset_images(tiny_coco)
    model = calibrated_model("mobilenetv3_small_ssd", images, imgsz=160)
    checkpoint = folder / "small.pt"
    save_checkpoint(checkpoint, model)
    fp32 = export_onnx(model, folder / "small.onnx", dynamic=True)
    int8 = quantize_int8(fp32, folder / "small.int8.onnx", images[:4], "cpu", progress=False)
    return {"pt": checkpoint, "fp32": fp32, "int8": int8}


def run_cli(*args: str) -> None:
    main(["--runs", "6", "--warmup", "1", "--threads", "1", "--no-progress", *args])


def test_json_markdown_and_plot_have_every_field(models, tiny_coco, tmp_path, capsys):
    out = tmp_path / "bench"
    run_cli("--model", str(models["fp32"]), "--model", str(models["int8"]), "--batch", "1,2", "--data",
            str(tiny_coco), "--json", f"{out}.json", "--markdown", f"{out}.md", "--plot", f"{out}.png")
    report = json.loads((tmp_path / "bench.json").read_text())

    machine = report["machine"]
    assert {"cpu", "cores", "os", "python", "versions", "load_average"} <= set(machine)
    assert "onnxruntime" in machine["versions"]
    assert report["settings"]["threads"] == 1 and report["settings"]["batches"] == [1, 2]
    rows = report["results"]
    assert [(r["format"], r["batch"]) for r in rows] == [("ONNX", 1), ("ONNX int8", 1), ("ONNX", 2), ("ONNX int8", 2)]
    for row in rows:
        assert set(FIELDS) <= set(row), set(FIELDS) - set(row)
        latency = row["latency_ms"]
        assert 0 < latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert row["runs"] == len(row["latencies_ms"]) == 6
        assert row["images_per_s"] == pytest.approx(row["batch"] * 1e3 / latency["mean"])
        # onnxruntime CPU: preprocess, network and decode+NMS timed; no copies, said so.
        assert row["stages_timed"] == ["preprocess", "network", "decode_nms"]
        assert set(row["stages_not_separate"]) == {"host_to_device", "device_to_host"}
        stages = row["stages_ms"]
        assert set(stages) == {*STAGES, "other"}
        assert all(stages[s] > 0 for s in row["stages_timed"])
        assert stages["host_to_device"] == stages["device_to_host"] == 0.0
        assert sum(stages.values()) == pytest.approx(latency["mean"], rel=1e-6)
    accuracy = {entry["name"]: entry for entry in report["accuracy"]}
    assert set(accuracy) == {str(models["fp32"]), str(models["int8"])}
    assert all(0.0 <= entry["AP"] <= entry["AP50"] <= 1.0 and entry["images"] == 4 for entry in accuracy.values())

    markdown = (tmp_path / "bench.md").read_text()
    for text in ("| model | format | backend | batch | p50 ms | p90 ms | p99 ms | mean ms | img/s | pre | h2d | net | "
                 "d2h | nms", "small.onnx | ONNX | onnxruntime (CPUExecutionProvider) | 1 |",
                 "small.int8.onnx | ONNX int8 | onnxruntime (CPUExecutionProvider) | 2 |", "- CPU: ", "bf16: ",
                 "- command: `ssd-bench ",
                 "| model | format | size MB | mAP50-95 | mAP50 | ms/image | FPS | p90 ms | p99 ms |"):
        assert text in markdown
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    terminal = capsys.readouterr().out
    assert terminal.splitlines()[0].startswith("machine: ")
    assert "small.int8.onnx" in terminal and "mAP50-95" in terminal


def test_peers_rows_carry_ratios(models, tmp_path):
    out = tmp_path / "peers.json"
    run_cli("--model", str(models["fp32"]), "--peer", "torchvision", "--compare-torch", str(models["pt"]),
            "--json", str(out))
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["results"]}
    torchvision = next(name for name in rows if name.startswith("torchvision"))
    ours_torch = next(name for name in rows if name.startswith("ssd-edge PyTorch"))
    model = rows[str(models["fp32"])]
    for peer, label in ((torchvision, "torchvision"), (ours_torch, "torch")):
        assert model["vs"][label] == pytest.approx(rows[peer]["latency_ms"]["p50"] / model["latency_ms"]["p50"])
        assert rows[peer]["kind"] == "peer" and rows[peer]["stages_timed"] == ["preprocess", "network", "decode_nms"]
    notes = {s["label"]: s["note"] for s in report["subjects"]}
    assert "random weights" in notes["torchvision"]
    assert "NOT the same network" in notes["torchvision"]  # a small model at 160 is not SSDLite320


@pytest.mark.parametrize("args, message", [
    (["--model", "missing.onnx"], "missing.onnx: no such model file"),
    (["--model", "{fp32}", "--backend", "tflite"], "unknown backend 'tflite'; choose from auto, onnxruntime"),
    (["--model", "{fp32}", "--backend", "openvino,openvino"], "--backend names a backend twice: openvino,openvino"),
    (["--model", "{fp32}", "--precision", "bf16"],
     "--device, --precision, --pinning and --partitioner are OpenVINO's: add openvino to --backend"),
    (["--model", "{fp32}", "--backend", "openvino", "--spinning", "off"],
     "--spinning is onnxruntime's: add onnxruntime to --backend"),
    (["--model", "{pt}"], "small.pt: not a model the runtime runs (expected .onnx or .engine)"),
    (["--model", "{fp32}", "--batch", "0"], "--batch must be at least 1, got 0"),
    (["--model", "{fp32}", "--peer", "yolo"], "unknown peer yolo; --peer takes torchvision"),
])
def test_bad_input_is_one_clear_line(models, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*(a.format(**models) for a in args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssd-bench: error: ") and message in err and len(err.splitlines()) == 1


def test_timer_hook_times_stages_and_changes_nothing(models, tiny_coco):
    images = dataset_images(tiny_coco)[:3]
    with Detector(models["fp32"], threads=1) as detector:
        plain = detector(images)
        timer = StageTimer()
        timed = detector(images, timer=timer)
    assert timer.entered == {"preprocess", "network", "decode_nms"}
    assert all(timer.seconds[s] > 0 for s in timer.entered)
    for a, b in zip(plain, timed):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_ssd_bench_runs_without_torch(models, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        from ssd_edge.cli.bench import main
        main(["--model", {str(models["fp32"])!r}, "--runs", "3", "--warmup", "1", "--no-progress",
              "--json", {str(tmp_path / "b.json")!r}])
        assert not any(n == "torch" or n.startswith("torch.") for n, m in sys.modules.items() if m)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["format"] == "ONNX"


def _gpu_backend() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return "onnxruntime" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else None


@pytest.mark.gpu
@pytest.mark.skipif(_gpu_backend() is None, reason="no onnxruntime CUDA provider (onnxruntime-gpu and a GPU)")
def test_gpu_path_reports_the_gpu_and_its_stages(models, tmp_path):
    out = tmp_path / "gpu.json"
    run_cli("--model", str(models["fp32"]), "--backend", "onnxruntime", "--batch", "1,4", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["machine"].get("gpu"), "a GPU machine must name its GPU"
    for row in report["results"]:
        assert "CUDAExecutionProvider" in row["backend"]
        assert {"network", "decode_nms"} <= set(row["stages_timed"])
        latency = row["latency_ms"]
        assert latency["p50"] <= latency["p90"] <= latency["p99"]


def test_backends_side_by_side_with_their_precision_and_spinning(models, tmp_path):
    pytest.importorskip("openvino", reason="backend 'openvino' needs `pip install 'ssd-edge[openvino]'`")
    out = tmp_path / "backends.json"
    run_cli("--model", str(models["fp32"]), "--model", str(models["int8"]), "--backend", "onnxruntime-cpu,openvino",
            "--precision", "bf16", "--spinning", "on", "--json", str(out), "--markdown", str(tmp_path / "b.md"))
    report = json.loads(out.read_text())
    backends = {row["name"]: row["backend"] for row in report["results"]}
    fp32, int8 = str(models["fp32"]), str(models["int8"])
    assert list(backends) == [f"{fp32} [onnxruntime-cpu]", f"{fp32} [openvino]", f"{int8} [onnxruntime-cpu]",
                              f"{int8} [openvino]"]
    assert backends[f"{fp32} [onnxruntime-cpu]"] == "onnxruntime (CPUExecutionProvider)"
    bf16 = report["machine"]["bf16"]
    precision = "bf16" if bf16 else "f32 instead of bf16"  # a CPU without bf16 says so in the row
    assert backends[f"{fp32} [openvino]"].endswith(f"(CPU, {precision})")
    assert backends[f"{int8} [openvino]"].endswith(f"(CPU, {precision}, int8 QDQ)")
    settings = report["settings"]
    assert (settings["backend"], settings["precision"], settings["spinning"]) == ("onnxruntime-cpu,openvino", "bf16",
                                                                                  True)
    assert "small.onnx [openvino] | ONNX | openvino " in (tmp_path / "b.md").read_text()


def test_bench_options_are_refused_where_they_are_built(models):
    from dataclasses import replace
    from pathlib import Path

    from ssd_edge.bench.run import BenchError, BenchOptions

    options = BenchOptions(models=(Path(models["fp32"]),))
    with pytest.raises(BenchError, match="--warmup must be at least 0, got -1"):
        replace(options, warmup=-1)
    with pytest.raises(BenchError, match="no model to benchmark"):
        BenchOptions(models=())
