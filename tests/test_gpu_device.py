"""Which GPU is here (runtime/cuda/device.py, the one place that answers it) and the CUDA
status messages, without a GPU: the driver, nvidia-smi and the device tree are faked."""

import ctypes

import pytest

from ssd_edge.bench import machine
from ssd_edge.runtime.cuda import device
from ssd_edge.runtime.cuda.device import GpuInfo, NoGpu, describe_gpu, gpu_text
from ssd_edge.runtime.cuda.resources import GpuError, check

SMI = {"name": "NVIDIA GeForce RTX 4090 (smi)", "driver": "550.54.14", "cuda": "12.4"}
JETSON = {"name": "NVIDIA Jetson AGX Orin Developer Kit", "driver": "JetPack", "cuda": "12.2"}


def _no_driver(device_index=0):
    raise NoGpu("no NVIDIA driver (libcuda) found")


@pytest.fixture
def probes(monkeypatch):
    """Set what each probe answers: probes(driver=GpuInfo | None, smi=..., jetson=..., cuda=...)."""

    def set_probes(driver=None, smi=None, jetson=None, cuda=None):
        monkeypatch.setattr(device, "gpu_info", (lambda d=0: driver) if driver else _no_driver)
        monkeypatch.setattr(device, "_nvidia_smi", lambda: smi)
        monkeypatch.setattr(device, "_jetson", lambda: jetson)
        monkeypatch.setattr(device, "driver_cuda_version", lambda: cuda)

    return set_probes


def test_the_driver_names_the_gpu_first(probes):
    probes(driver=GpuInfo("NVIDIA GeForce RTX 4090", (8, 9)), smi=SMI, cuda="12.6")
    assert describe_gpu() == {"name": "NVIDIA GeForce RTX 4090", "driver": "550.54.14", "cuda": "12.6"}
    probes(driver=GpuInfo("Orin", (8, 7)), jetson=JETSON)
    assert describe_gpu() == {"name": "Orin", "driver": "JetPack", "cuda": "12.2"}
    probes(driver=GpuInfo("Orin", (8, 7)))
    assert describe_gpu() == {"name": "Orin", "driver": "?", "cuda": "?"}


def test_nvidia_smi_then_the_device_tree_when_the_driver_api_cannot_answer(probes):
    probes(smi=SMI, jetson=JETSON)
    assert describe_gpu() == SMI
    probes(jetson=JETSON)
    assert describe_gpu() == JETSON
    probes()
    assert describe_gpu() is None


def test_benchmark_reports_take_the_gpu_from_device(probes):
    probes(driver=GpuInfo("Orin", (8, 7)), jetson=JETSON)
    info = machine.describe()
    assert info["gpu"] == {"name": "Orin", "driver": "JetPack", "cuda": "12.2"}
    assert machine.gpu_text(info) == gpu_text(info["gpu"]) == "Orin (driver JetPack, CUDA 12.2)"
    assert "- GPU: Orin (driver JetPack, CUDA 12.2)" in machine.markdown(info)
    probes()
    assert "gpu" not in machine.describe() and machine.gpu_text(machine.describe()) == "none"


class _FakeDriver:
    """The one libcuda entry point `_check` uses to name a CUresult."""

    def cuGetErrorName(self, status, name_ref):
        if status != 100:
            return 1  # CUDA_ERROR_INVALID_VALUE: an unknown status
        name_ref._obj.value = b"CUDA_ERROR_NO_DEVICE"
        return 0


def test_driver_status_named_once():
    with pytest.raises(NoGpu) as caught:
        device._check(100, "cuInit", _FakeDriver())
    assert str(caught.value) == "CUDA driver call cuInit failed with CUDA_ERROR_NO_DEVICE (100)"
    with pytest.raises(NoGpu, match=r"^CUDA driver call cuInit failed with CUresult 999$"):
        device._check(999, "cuInit", _FakeDriver())
    device._check(0, "cuInit", _FakeDriver())  # success says nothing


def test_check_names_the_call_once():
    def pycuda_init():  # pycuda's own errors already read "<call> failed: <reason>"
        raise RuntimeError("cuInit failed: no CUDA-capable device is detected")

    with pytest.raises(GpuError) as caught:
        check("cuInit", pycuda_init)
    assert str(caught.value) == "cuInit failed: no CUDA-capable device is detected"

    def tensorrt_call():
        raise RuntimeError("bad shape")

    with pytest.raises(GpuError, match=r"^setInputShape failed: bad shape$"):
        check("setInputShape", tensorrt_call)
    with pytest.raises(GpuError, match=r"^executeAsyncV3 failed$"):
        check("executeAsyncV3", lambda: False, must_succeed=True)


def test_no_driver_here_is_a_plain_no_gpu():
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        with pytest.raises(NoGpu, match="no NVIDIA driver"):
            device.gpu_info()
    else:
        pytest.skip("this machine has a CUDA driver")


# ------------------------------------------------------------------ the GPU tests, torch-free

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

TESTS = Path(__file__).parent
PYTEST_WITHOUT_TORCH = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any `import torch` now raises ImportError, as on a torch-free Jetson
    sys.modules["torchvision"] = None
    sys.modules["onnx"] = None  # nor onnx/onnxsim: the Jetson install has no export packages either
    sys.modules["onnxsim"] = None
    import pytest
    status = pytest.main(sys.argv[1:])
    hidden = ("torch", "torchvision", "onnx", "onnxsim")
    imported = sorted({n.split(".")[0] for n, m in sys.modules.items() if m and n.split(".")[0] in hidden})
    assert not imported, f"{imported} imported"
    sys.exit(status)
""")


def pytest_without_torch(*args: str, stubs: Path | None = None) -> subprocess.CompletedProcess:
    """pytest ARGS in a fresh interpreter where torch, onnx and onnxsim cannot be imported
    (the README's Jetson install); `stubs`: a folder
    put first on the path (stand-in pycuda / tensorrt packages)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSD_EDGE_TEST_ONNX", "PYTHONPATH")}
    if stubs is not None:
        env["PYTHONPATH"] = str(stubs)
    return subprocess.run(
        [sys.executable, "-c", PYTEST_WITHOUT_TORCH, "-p", "no:cacheprovider", "-v", "-rs", *args],
        cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=600,
    )


def test_gpu_and_tensorrt_tests_collect_and_run_without_torch():
    """`pytest -m "gpu or tensorrt"` on a torch- and onnx-free install: the GPU tests are
    collected and run (here: skip for want of a GPU, each with its reason); modules that
    need torch or onnx are skipped as modules, not collection errors."""
    result = pytest_without_torch("-m", "gpu or tensorrt", "tests")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.splitlines()[-1]
    for test in ("test_kernel_equals_numpy_on_edge_cases", "test_kernel_equals_numpy_on_model_outputs",
                 "test_onnx_on_gpu_feeds_the_kernel", "test_tensorrt_engine_end_to_end"):
        assert f"tests/test_cuda_kernel_gpu.py::{test}" in output, f"{test} was not collected:\n{output}"


def _stub(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    return root


def _pycuda_stub(root: Path, init_error: str) -> dict[str, str]:
    """A pycuda whose cuInit fails with `init_error`, as pycuda reports it."""
    return {
        "pycuda/__init__.py": "VERSION_TEXT = 'stub'\n",
        "pycuda/driver.py": f"""
            class Error(Exception):
                pass

            def init():
                raise Error({init_error!r})
        """,
    }


def test_a_broken_gpu_probe_fails_the_gpu_and_tensorrt_tests_instead_of_skipping(tmp_path):
    stubs = _stub(tmp_path, {**_pycuda_stub(tmp_path, "cuInit failed: unknown error"),
                             "tensorrt/__init__.py": "__version__ = '10.3.0'\n"})
    result = pytest_without_torch("-m", "gpu or tensorrt", "tests/test_cuda_kernel_gpu.py", stubs=stubs)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "SKIPPED" not in output
    assert "GPU probe broken: the CUDA driver is there but fails: Error: cuInit failed: unknown error" in output
    assert "tests/test_cuda_kernel_gpu.py::test_tensorrt_engine_end_to_end ERROR" in output
    assert "TensorRT 10.3.0 is installed but the GPU probe says broken" in output


def test_gpu_tests_skip_where_there_is_no_gpu_and_tensorrt_tests_where_it_is_absent(tmp_path):
    stubs = _stub(tmp_path, _pycuda_stub(tmp_path, "cuInit failed: no CUDA-capable device is detected"))
    result = pytest_without_torch("-m", "gpu or tensorrt", "tests/test_cuda_kernel_gpu.py", stubs=stubs)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "no CUDA GPU (cuInit failed: no CUDA-capable device is detected)" in output
    assert "TensorRT is not installed" in output
    assert "FAILED" not in output and "ERROR" not in output
