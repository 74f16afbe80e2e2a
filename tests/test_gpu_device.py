"""Which GPU is here (runtime/cuda/device.py, the one place that answers it) and the CUDA
status messages, without a GPU: the driver, nvidia-smi and the device tree are faked."""

import ctypes

import pytest

from ssd_edge.runtime.bench import machine
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
