"""ssd-doctor on this machine: it runs torch-free in a subprocess, names every missing part
with its fix, runs a small exported model, reports a corrupt one as one FAILED line, and
writes its report atomically. Its GPU kernel check (the comparison with NumPy) runs here on
the CPU emulation of the kernel, so the logic a GPU user relies on is checked too."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ssd_edge.cli.doctor import DEFAULT_REPORT, main
from ssd_edge.runtime.cuda.plan import DecodeNmsPlan
from ssd_edge.runtime.doctor import FAILED, MISSING, OK, checking
from ssd_edge.runtime.doctor.gpu_checks import compare_with_numpy
from ssd_edge.runtime.doctor.kernel_cases import kernel_cases
from ssd_edge.runtime.doctor.report import TITLE, write_report
from ssd_edge.runtime.doctor.verdict import Verdict
from ssd_edge.runtime.postprocess.fast import possible_boxes, postprocess, softmax
from tests.helpers import cuda_emulator

STATUSES = (OK, MISSING, FAILED)


def _has_driver() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
        return True
    except OSError:
        return False


def run_doctor_without_torch(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`ssd-doctor ARGS` in a fresh interpreter where torch cannot be imported; it also
    checks afterwards that nothing imported torch."""
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        from ssd_edge.cli.doctor import main
        status = main({list(args)!r})
        assert not any(n.split(".")[0] == "torch" for n, m in sys.modules.items() if m), "torch was imported"
        sys.exit(status)
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def verdict_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """{check name: (status, rest of the line)} from ssd-doctor's output."""
    found = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition(" ")
        if status in STATUSES:
            name, _, detail = rest.strip().partition("  ")
            found[name.strip()] = (status, detail.strip())
    return found


def test_doctor_runs_without_torch_and_names_what_is_missing_with_the_fix(tmp_path):
    result = run_doctor_without_torch(tmp_path, "--kernel-runs", "5")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = verdict_lines(result.stdout)
    for name in ("Python", "NumPy", "OpenCV", "onnxruntime", "TensorRT", "pycuda", "GPU", "DLA cores",
                 "CUDA decode + NMS"):
        assert name in lines, f"no verdict for {name}:\n{result.stdout}"
    for name, (status, detail) in lines.items():
        assert status != FAILED, f"{name}: {detail}"
        if status == MISSING:
            assert ". Fix: " in detail and detail.split(". Fix: ")[1].strip(), f"{name} has no fix: {detail}"
    if importlib.util.find_spec("tensorrt") is None:
        status, detail = lines["TensorRT"]
        assert status == MISSING and "not installed" in detail and "python3-libnvinfer" in detail
    if importlib.util.find_spec("pycuda") is None:
        assert lines["pycuda"][0] == MISSING and "ssd-edge[jetson]" in lines["pycuda"][1]
    if not _has_driver():
        status, detail = lines["GPU"]
        assert status == MISSING and "no GPU" in detail and "cannot be checked here" in detail
        assert lines["CUDA decode + NMS"][0] == MISSING
    if importlib.util.find_spec("nvidia.cuda_nvrtc") is not None:  # the dev extra installs it
        status, detail = lines["NVRTC kernel check"]
        assert status == OK and all(arch in detail for arch in ("sm_53", "sm_72", "sm_87", "sm_90"))

    report = (tmp_path / DEFAULT_REPORT).read_text()
    assert report.startswith(TITLE + "\n")
    for name, (status, _) in lines.items():
        assert f"| {status} | {name} |" in report
    assert f"report written: {DEFAULT_REPORT}" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == [DEFAULT_REPORT]  # no partial file left behind


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    torch = pytest.importorskip("torch")  # exporting needs torch; running the doctor does not
    from ssd_edge.export.to_onnx import export_onnx
    from ssd_edge.models import build_model
    from ssd_edge.models.calibration import calibrate_batchnorm

    torch.manual_seed(1)
    model = calibrate_batchnorm(build_model("mobilenetv3_ssd", ["bg", "cat", "dog"], imgsz=160),
                                torch.rand(4, 3, 160, 160))
    return export_onnx(model, tmp_path_factory.mktemp("doctor") / "model.onnx", dynamic=True)


def doctor(capsys, *args: str) -> tuple[int, dict[str, tuple[str, str]], str]:
    """ssd-doctor run in this process: (exit status, verdict lines, all output)."""
    try:
        status = main(["--no-nvrtc", "--kernel-runs", "5", *args])
    except SystemExit as exc:
        status = exc.code
    out = capsys.readouterr()
    return status, verdict_lines(out.out), out.out + out.err


def test_doctor_runs_an_exported_model(onnx_model, tmp_path, capsys):
    status, lines, output = doctor(capsys, "--model", str(onnx_model), "--report", str(tmp_path / "r.md"))
    assert status == 0, output
    state, detail = lines["model (onnxruntime)"]
    assert state == OK and "model.onnx: mobilenetv3_ssd, 160x160, 2 classes; 4 images in" in detail
    assert "onnxruntime (" in detail


def test_a_corrupt_model_is_one_failed_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    status, lines, output = doctor(capsys, "--model", str(bad), "--report", str(tmp_path / "r.md"))
    assert status == 1
    state, detail = lines["model (onnxruntime)"]
    assert state == FAILED and str(bad) in detail and "Fix: " in detail
    assert "Traceback" not in output
    assert "| FAILED | model (onnxruntime) |" in (tmp_path / "r.md").read_text()


def write_engine_with_sidecar(path: Path) -> Path:
    """A stand-in engine file (not a real engine) with a valid sidecar beside it."""
    from ssd_edge.runtime.model_file import EngineSidecar, sidecar_path
    from ssd_edge.runtime.spec import DefaultBoxConfig, ModelSpec

    spec = ModelSpec(arch="mobilenetv3_ssd", input_size=(64, 64), class_names=("bg", "a", "b"),
                     default_boxes=DefaultBoxConfig(feature_maps=((4, 4), (2, 2)), scales=(0.2, 0.5, 1.0),
                                                    aspect_ratios=((2.0,), (2.0,))))
    path.write_bytes(b"\x00" * 64)
    sidecar_path(path).write_text(EngineSidecar(spec=spec, tensorrt_version="10.3.0").to_json())
    return path


def test_an_engine_that_cannot_run_here_is_said_plainly(tmp_path, capsys):
    engine = write_engine_with_sidecar(tmp_path / "model.engine")
    status, lines, output = doctor(capsys, "--engine", str(engine), "--report", str(tmp_path / "r.md"))
    state, detail = lines["engine (TensorRT)"]
    if importlib.util.find_spec("tensorrt") is None:
        assert status == 0 and state == MISSING and "cannot run here: TensorRT" in detail
    missing_file = tmp_path / "nowhere.engine"
    status, lines, _ = doctor(capsys, "--engine", str(missing_file), "--report", str(tmp_path / "r.md"))
    assert status == 1 and lines["engine (TensorRT)"] == (FAILED, f"{missing_file}: no such file. Fix: give the "
                                                                   "path of a .engine built by ssd-export")


def test_a_folder_or_an_engine_without_its_sidecar_is_named_as_such(tmp_path, capsys):
    folder = tmp_path / "models"
    folder.mkdir()
    status, lines, output = doctor(capsys, "--model", str(folder), "--engine", str(folder),
                                   "--report", str(tmp_path / "r.md"))
    assert status == 1 and "Traceback" not in output
    for name, kind in (("model (onnxruntime)", "an .onnx model"), ("engine (TensorRT)", "a .engine")):
        state, detail = lines[name]
        assert state == FAILED and detail.startswith(f"{folder}: is a folder, not {kind} file. Fix: "), detail
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 64)
    status, lines, _ = doctor(capsys, "--engine", str(engine), "--report", str(tmp_path / "r.md"))
    state, detail = lines["engine (TensorRT)"]
    assert status == 1 and state == FAILED
    assert detail.startswith(f"{engine}: its sidecar is missing (expected {tmp_path / 'model.engine.json'},"), detail
    (tmp_path / "model.engine.json").write_text("{not json")
    status, lines, _ = doctor(capsys, "--engine", str(engine), "--report", str(tmp_path / "r.md"))
    state, detail = lines["engine (TensorRT)"]
    assert status == 1 and state == FAILED and "not a readable engine sidecar" in detail, detail


def test_a_report_path_that_cannot_be_written_is_refused_before_any_check(tmp_path, capsys):
    missing_folder = tmp_path / "nowhere" / "r.md"
    status, lines, output = doctor(capsys, "--report", str(missing_folder))
    assert status == 2 and not lines, output  # refused before any check runs
    assert f"--report {missing_folder}: the folder {missing_folder.parent} does not exist" in output
    # /proc takes no new files, not even from root (whom a folder's mode bits do not stop)
    status, lines, output = doctor(capsys, "--report", "/proc/r.md")
    assert status == 2 and not lines, output
    assert "--report /proc/r.md: the folder /proc is not writable" in output


def test_a_report_that_cannot_be_written_after_the_checks_keeps_the_failed_status(tmp_path, capsys, monkeypatch):
    def vanished(path, text):  # the folder removed while the checks ran
        raise FileNotFoundError(f"{path}: the directory {path.parent} does not exist")

    monkeypatch.setattr("ssd_edge.runtime.doctor.report.write_report", vanished)  # the CLI imports it per call
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf" * 10)
    status, lines, output = doctor(capsys, "--model", str(bad), "--report", str(tmp_path / "r.md"))
    assert status == 1 and lines["model (onnxruntime)"][0] == FAILED
    assert "no report written" in output and "the directory" in output and "Traceback" not in output
    status, lines, output = doctor(capsys, "--report", str(tmp_path / "r.md"))
    assert status == 2 and "no report written" in output


def test_an_earlier_report_is_replaced_and_said_so_any_other_file_is_left_alone(tmp_path, capsys):
    report = tmp_path / "r.md"
    report.write_text(TITLE + "\n\nan earlier run\n")
    status, _, output = doctor(capsys, "--report", str(report))
    assert status == 0 and f"report replaced: {report}" in output
    assert "an earlier run" not in report.read_text()

    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    status, lines, output = doctor(capsys, "--report", str(notes))
    assert status == 2 and not lines  # refused before any check runs
    assert f"--report {notes}: exists and is not an ssd-doctor report" in output
    assert notes.read_text() == "# my notes\n"


def test_the_report_is_written_atomically(tmp_path):
    """A write that fails half-way (here: text the encoder rejects after the first lines)
    leaves the earlier report whole and no partial file."""
    report = tmp_path / "r.md"
    write_report(report, TITLE + "\nfirst\n")
    with pytest.raises(UnicodeEncodeError):
        write_report(report, TITLE + "\n" + "x" * 100_000 + "\ud800 an unpaired surrogate\n")
    assert report.read_text() == TITLE + "\nfirst\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]


def test_a_check_that_crashes_is_a_failed_verdict_with_its_traceback():
    def broken():
        raise ZeroDivisionError("division by zero")

    (verdict,) = checking("GPU", "attach this report", broken)
    assert (verdict.status, verdict.name, verdict.detail) == (FAILED, "GPU", "ZeroDivisionError: division by zero")
    assert "Traceback" in verdict.notes and "broken" in verdict.notes
    assert verdict.line().endswith("ZeroDivisionError: division by zero. Fix: attach this report")
    with pytest.raises(ValueError, match="'fine'"):
        Verdict("fine", "x", "y")


def test_the_reference_agrees_with_the_fast_path_on_the_doctors_cases():
    """The doctor compares the GPU with both; on the cases it runs them on they agree."""
    small = [case for case in kernel_cases() if case.reference]
    assert small and {1, 8} <= {len(case.locs) for case in kernel_cases()}
    def numpy_path(case):  # NumPy's fast path, with its float32 scores as a kernel's
        scores = softmax(case.confs).transpose(0, 2, 1)
        possible = np.zeros(scores.shape[::2], bool)
        for b, image in enumerate(case.confs):
            possible[b, possible_boxes(np.ascontiguousarray(image.T), case.config.score_threshold)] = True
        return postprocess(case.locs, case.confs, case.priors, case.image_sizes, case.config), scores, possible

    problem, notes = compare_with_numpy(numpy_path, small)
    assert problem is None and len(notes) == len(small)


@pytest.fixture(scope="module")
def emulation(tmp_path_factory):
    if cuda_emulator.compiler() is None:
        pytest.skip("no C++ compiler to build the CUDA emulation")
    return cuda_emulator.build(tmp_path_factory.mktemp("doctor_emulation"))


def emulated(library):
    def decode(case):
        plan = DecodeNmsPlan(len(case.priors), case.confs.shape[2], len(case.locs), case.config)
        kernels = cuda_emulator.EmulatedDecodeNms(library, plan, case.priors)
        found = kernels(case.locs, case.confs, case.image_sizes)
        return found, kernels.probabilities(), kernels.possible()

    return decode


def test_the_doctors_kernel_check_passes_the_kernel_run_on_the_cpu_emulation(emulation):
    """The kernel check a GPU user runs, with the kernel executed by the CPU emulation
    instead of a GPU: every case but the SSDLite-sized ones (minutes on emulated threads)."""
    cases = [case for case in kernel_cases() if not case.name.startswith("ssdlite")]
    problem, notes = compare_with_numpy(emulated(emulation), cases)
    assert problem is None, problem
    assert len(notes) == len(cases)


def test_the_doctors_kernel_check_catches_a_kernel_whose_scores_are_off(emulation):
    def nudged(case):
        found, probs, possible = emulated(emulation)(case)
        found[0].scores[:1] *= np.float32(1 - 1e-5)  # 10x the float32 rounding the check allows
        return found, probs, possible

    case = next(c for c in kernel_cases() if c.name == "random-b8-0")
    problem, _ = compare_with_numpy(nudged, [case])
    assert problem is not None and problem.startswith(
        "differs from the NumPy fast path on random-b8-0: NumPy on the kernel's scores: image 0: scores")


def test_the_doctor_and_what_it_runs_import_without_torch():
    code = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None
        sys.modules["torchvision"] = None
        import ssd_edge.cli.doctor, ssd_edge.runtime.doctor
        from ssd_edge.runtime.doctor import checks, gpu_checks, kernel_cases, model_checks, report, verdict
        import ssd_edge.runtime.detector, ssd_edge.export.parity, ssd_edge.export.engine  # what the checks call
        import ssd_edge.runtime.cuda.kernel_resources, ssd_edge.runtime.postprocess.reference
        assert not any(n.split(".")[0] == "torch" for n, m in sys.modules.items() if m)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("label", ["10.3", "11.4", "8.6"])
def test_the_doctor_on_nvidias_real_tensorrt_bindings(label, tmp_path):
    """The real bindings (installed by `make setup` under .trt/, importing over stand-in
    libraries, as test_tensorrt_bindings.py does): 10.3 and 11.4 are supported, 8.6 FAILED
    by name; without a GPU the DLA cores cannot be counted."""
    from tests.test_tensorrt_bindings import INSTALLED, STANDIN, build_standins

    site = INSTALLED / label
    if not (site / "tensorrt_bindings").is_dir():
        if label == "8.6" and sys.version_info >= (3, 12):
            pytest.skip("tensorrt-bindings 8.6.1 has wheels for Python 3.11 and older only")
        pytest.fail(f"{site}: the TensorRT bindings are not installed; run `make setup`")
    libraries = build_standins(tmp_path / "lib", int(label.split(".")[0]))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(STANDIN / "front_end")]))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libraries), os.environ.get("LD_LIBRARY_PATH")]))
    engine = write_engine_with_sidecar(tmp_path / "model.engine")
    result = run_doctor_without_torch(tmp_path, "--no-nvrtc", "--engine", str(engine), env=env)
    status, detail = verdict_lines(result.stdout)["TensorRT"]
    if label == "8.6":
        assert result.returncode == 1, result.stdout + result.stderr
        assert status == FAILED and detail.startswith("8.6.1 cannot be used: TensorRT 8.6.1: this TensorRT/JetPack "
                                                      "is not supported (needs TensorRT 10+, JetPack 6). "
                                                      "Fix: JetPack 6")
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert (status == OK and detail.startswith(f"{label}.")
                and detail.endswith(": supported (engines build and run)"))
    if not _has_driver():
        lines = verdict_lines(result.stdout)
        assert lines["DLA cores"][0] == MISSING
        why = "TensorRT (a supported version) is not installed" if label == "8.6" else "there is no GPU"
        status, detail = lines["engine (TensorRT)"]
        assert status == MISSING and detail.startswith(f"{engine} cannot run here: {why}. Fix: ")


@pytest.mark.parametrize("probe, expected", [
    ((None, "no NVIDIA driver (libcuda) found", None),
     (MISSING, "no GPU (no NVIDIA driver (libcuda) found): the CUDA "
               "path (TensorRT engines, the CUDA decode + NMS) cannot be checked here")),
    ((None, "CUDA driver call cuInit failed with CUDA_ERROR_UNKNOWN (999)", {"name": "Orin", "driver": "JetPack",
                                                                             "cuda": "12.6"}),
     (FAILED, "Orin is there, but the CUDA driver API fails: CUDA driver call cuInit failed with CUDA_ERROR_UNKNOWN")),
    ((None, "CUDA driver call cuInit failed with CUDA_ERROR_UNKNOWN (999)", None),
     (FAILED, "the CUDA driver API fails: CUDA driver call cuInit failed with CUDA_ERROR_UNKNOWN")),
    ((("Orin", (8, 7)), None, {"name": "Orin", "driver": "JetPack", "cuda": "12.6"}),
     (OK, "Orin, compute capability 8.7 (sm_87)")),
])
def test_the_gpu_verdict_tells_no_gpu_from_a_broken_driver(monkeypatch, probe, expected):
    """The driver's answers are set here (this machine has no GPU); the verdicts are the doctor's."""
    from ssd_edge.runtime.cuda import device
    from ssd_edge.runtime.doctor.checks import Machine, check_gpu

    found, error, seen = probe

    def gpu_info(index=0):
        if error:
            raise device.NoGpu(error)
        return device.GpuInfo(*found)

    monkeypatch.setattr(device, "gpu_info", gpu_info)
    monkeypatch.setattr(device, "describe_gpu", lambda index=0: seen)
    monkeypatch.setattr(device, "driver_cuda_version", lambda: "12.6")
    machine = Machine()
    verdict = check_gpu(machine)[-1]
    assert verdict.name == "GPU" and verdict.status == expected[0] and verdict.detail.startswith(expected[1])
    assert (machine.gpu is not None) == (expected[0] == OK)
    if expected[0] == OK:
        assert check_gpu(machine)[0].detail == "driver JetPack, supports CUDA 12.6"


@pytest.mark.parametrize("import_error, status", [
    ("libcuda.so.1: cannot open shared object file: No such file or directory", MISSING),
    ("_driver.cpython-311.so: undefined symbol: cuMemAllocAsync", FAILED),
])
def test_pycuda_that_does_not_import_is_missing_without_a_driver_and_failed_otherwise(tmp_path, import_error, status):
    stubs = tmp_path / "stubs"
    (stubs / "pycuda").mkdir(parents=True)
    (stubs / "pycuda" / "__init__.py").write_text("VERSION_TEXT = 'stub'\n")
    (stubs / "pycuda" / "driver.py").write_text(f"raise ImportError({import_error!r})\n")
    env = dict(os.environ, PYTHONPATH=str(stubs))
    result = run_doctor_without_torch(tmp_path, "--no-nvrtc", env=env)
    assert result.returncode == (1 if status == FAILED else 0), result.stdout + result.stderr
    got, detail = verdict_lines(result.stdout)["pycuda"]
    assert got == status and import_error in detail and ". Fix: " in detail


def test_the_nvrtc_check_holds_the_models_own_plan_against_the_kernels_limits(onnx_model):
    """The exported model fits every SM; the same model asking for more candidates per class
    than the kernel keeps (top_k 600 > 512) is a FAILED line saying so."""
    import dataclasses

    from ssd_edge.runtime.cuda import kernel_resources
    from ssd_edge.runtime.detector import Detector
    from ssd_edge.runtime.doctor.checks import Machine
    from ssd_edge.runtime.doctor.gpu_checks import check_nvrtc

    try:
        kernel_resources.find_nvrtc()
    except kernel_resources.KernelResourceError as exc:
        pytest.skip(f"NVRTC is not installed ({exc})")
    with Detector(onnx_model, backend="onnxruntime-cpu") as detector:
        spec = detector.spec
    (fits,) = check_nvrtc(Machine(), spec)
    assert fits.status == OK and fits.detail.endswith("sm_53, sm_72, sm_87, sm_90; every launch at batch 1, 8 fits")
    (refused,) = check_nvrtc(Machine(), dataclasses.replace(spec, top_k=600))
    assert refused.status == FAILED
    assert f"this model ({spec.num_priors} boxes x {spec.num_classes} classes): the CUDA decode + NMS keeps at most " \
           "512 candidates per class" in refused.detail
