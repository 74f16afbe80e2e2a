"""What ssd-doctor finds on this machine before running anything: Python, NumPy, OpenCV
(and its GStreamer), onnxruntime and its providers, TensorRT (and whether ssd-edge can use
it), pycuda, nvcc, the CUDA driver, the GPU and its compute capability, DLA cores.

Each check returns Verdicts and records what later checks need in a `Machine`. Nothing is
imported at module level beyond the standard library and the project's torch-free errors:
a missing or broken library is a verdict, never an ImportError.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import shutil
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ssd_edge.runtime.doctor.verdict import Verdict, failed, missing, ok

ORT_FIX = "pip install 'ssd-edge[runtime]' (CPU); with an NVIDIA GPU: pip install onnxruntime-gpu " \
          "(on a Jetson, NVIDIA's onnxruntime-gpu wheel for your JetPack)"
TENSORRT_FIX = "on a Jetson it comes with JetPack (sudo apt install python3-libnvinfer); on a PC: " \
               "pip install 'ssd-edge[gpu]' (TensorRT 10 or newer)"
PYCUDA_FIX = "pip install 'ssd-edge[jetson]' (pycuda builds against CUDA: put /usr/local/cuda/bin on PATH first)"
NVCC_FIX = "put the CUDA toolkit's bin folder on PATH (JetPack: export PATH=/usr/local/cuda/bin:$PATH)"
DRIVER_FIX = "install or repair the NVIDIA driver (nvidia-smi must list the GPU; on a Jetson: reflash or " \
             "reinstall JetPack), and check that this user may open /dev/nvidia*"
NO_GPU_MEANING = "the CUDA path (TensorRT engines, the CUDA decode + NMS) cannot be checked here; " \
                 "ONNX models run on onnxruntime's CPU provider"


@dataclass
class Machine:
    """What the checks found, for the checks that follow.

    gpu: the CUDA driver's GpuInfo of device 0, or None; tensorrt: the imported module when
    ssd-edge can use it; pycuda: pycuda.driver imported; nvcc: its path; providers:
    onnxruntime's available providers ([] without onnxruntime); opencv: cv2 imported."""

    gpu: Any = None
    tensorrt: ModuleType | None = None
    pycuda: bool = False
    nvcc: str | None = None
    providers: list[str] = field(default_factory=list)
    opencv: bool = False

    @property
    def cuda_path(self) -> bool:
        """Whether the CUDA decode + NMS can be compiled and run here."""
        return self.gpu is not None and self.pycuda and self.nvcc is not None


def _version(module: ModuleType) -> str:
    return str(getattr(module, "__version__", None) or getattr(module, "VERSION_TEXT", "?"))


def _import(name: str) -> tuple[ModuleType | None, BaseException | None]:
    """(module, None); (None, None) when it is not installed; (None, error) when it is
    installed but does not import."""
    try:
        if importlib.util.find_spec(name) is None:
            return None, None
        return importlib.import_module(name), None
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None, None
        return None, exc
    except Exception as exc:  # noqa: BLE001 - a broken install raises anything: OSError, RuntimeError...
        return None, exc


def _not_imported(name: str, module: str, error: BaseException | None, reinstall: str, absent: str,
                  install: str) -> list[Verdict]:
    """The verdict on a library `module` that did not import: FAILED (fix: `reinstall`) when
    it is installed but broken, else missing (`absent` says what that means; fix: `install`)."""
    if error is not None:
        return [failed(name, f"{module} is installed but does not import ({type(error).__name__}: {error})",
                       reinstall)]
    return [missing(name, absent, install)]


def check_python(machine: Machine) -> list[Verdict]:
    return [ok("Python", f"{platform.python_version()} ({sys.executable}) on {platform.machine()} "
                         f"{platform.system()} {platform.release()}")]


def check_numpy(machine: Machine) -> list[Verdict]:
    import numpy

    return [ok("NumPy", f"{numpy.__version__}")]


def check_opencv(machine: Machine) -> list[Verdict]:
    cv2, error = _import("cv2")
    if cv2 is None:
        return _not_imported(
            "OpenCV", "cv2", error, "reinstall it: pip install --force-reinstall opencv-python (Jetson: JetPack's "
            "python3-opencv)", "not installed: images cannot be read or preprocessed, so no model can run",
            "pip install 'ssd-edge[runtime]' (Jetson: JetPack's OpenCV, sudo apt install python3-opencv)")
    machine.opencv = True
    from ssd_edge.runtime.demo.gstreamer import JETSON_OPENCV_HELP, gstreamer_available

    verdicts = [ok("OpenCV", f"{cv2.__version__} ({getattr(cv2, '__file__', '?')})")]
    if gstreamer_available(cv2.getBuildInformation()):
        verdicts.append(ok("OpenCV GStreamer", "built in: ssd-demo can open CSI cameras and GStreamer pipelines"))
    else:
        verdicts.append(missing("OpenCV GStreamer", "this OpenCV was built without GStreamer: no CSI camera or "
                                "GStreamer pipeline in ssd-demo (files, USB cameras and RTSP through FFmpeg work)",
                                JETSON_OPENCV_HELP))
    return verdicts


def check_onnxruntime(machine: Machine) -> list[Verdict]:
    ort, error = _import("onnxruntime")
    if ort is None:
        return _not_imported("onnxruntime", "onnxruntime", error,
                             "reinstall onnxruntime (or onnxruntime-gpu), only one of the two",
                             "not installed: .onnx models cannot run (engines still can)", ORT_FIX)
    machine.providers = list(ort.get_available_providers())
    verdicts = [ok("onnxruntime", f"{ort.__version__}, providers {', '.join(machine.providers)}")]
    if "CUDAExecutionProvider" not in machine.providers:
        verdicts.append(missing("onnxruntime CUDA", "no CUDAExecutionProvider: .onnx models run on the CPU only",
                                "only with an NVIDIA GPU: pip uninstall onnxruntime && pip install onnxruntime-gpu "
                                "(on a Jetson: NVIDIA's onnxruntime-gpu wheel for your JetPack)"))
    return verdicts


def check_tensorrt(machine: Machine) -> list[Verdict]:
    from ssd_edge.runtime.backends.tensorrt_support import NOT_SUPPORTED, Capabilities, old_jetpack, unsupported

    upgrade = "JetPack 6 or newer (TensorRT 10.3+); on a PC: pip install 'tensorrt>=10'"
    trt, error = _import("tensorrt")
    if trt is None:
        jetson = old_jetpack()
        if jetson:
            return [failed("TensorRT", f"{NOT_SUPPORTED}: this Jetson runs {jetson}", upgrade)]
        return _not_imported("TensorRT", "tensorrt", error,
                             "its libraries (libnvinfer) must match the Python bindings: " + TENSORRT_FIX,
                             "not installed: .engine files cannot be built or run here", TENSORRT_FIX)
    version = getattr(trt, "__version__", "(unknown version)")
    problem = unsupported(version) or Capabilities.of(trt).missing()
    if problem:
        return [failed("TensorRT", f"{version} cannot be used: {problem}", upgrade)]
    machine.tensorrt = trt
    return [ok("TensorRT", f"{version}: supported (engines build and run)")]


def check_pycuda(machine: Machine) -> list[Verdict]:
    pycuda, error = _import("pycuda")
    if pycuda is None and error is None:
        return [missing("pycuda", "not installed: the TensorRT backend and the CUDA decode + NMS cannot run",
                        PYCUDA_FIX)]
    driver, error = (None, error) if pycuda is None else _import("pycuda.driver")
    if driver is None:
        if "libcuda" in str(error):
            return [missing("pycuda", f"installed, but there is no NVIDIA driver to load ({error})", DRIVER_FIX)]
        return [failed("pycuda", f"installed but does not import ({type(error).__name__}: {error})",
                       "rebuild it against this machine's CUDA: pip install --no-cache-dir --force-reinstall pycuda")]
    machine.pycuda = True
    verdicts = [ok("pycuda", _version(pycuda))]
    machine.nvcc = shutil.which("nvcc")
    if machine.nvcc:
        verdicts.append(ok("nvcc", f"{machine.nvcc} (pycuda compiles the decode + NMS kernel with it)"))
    else:
        verdicts.append(missing("nvcc", "not on PATH: pycuda cannot compile the CUDA decode + NMS kernel; "
                                "onnxruntime then decodes in NumPy and engines cannot run", NVCC_FIX))
    return verdicts


def _driver_absent(message: str) -> bool:
    """Whether a NoGpu message means there is no driver or no device (not a broken one)."""
    return any(text in message for text in ("no NVIDIA driver", "CUDA_ERROR_NO_DEVICE", "(0 visible)"))


def check_gpu(machine: Machine) -> list[Verdict]:
    from ssd_edge.runtime.cuda.device import NoGpu, describe_gpu, driver_cuda_version, gpu_info

    try:
        machine.gpu = gpu_info()
    except NoGpu as exc:
        seen = describe_gpu()  # nvidia-smi or a Jetson's device tree may still see one
        if seen is None and _driver_absent(str(exc)):
            return [missing("GPU", f"no GPU ({exc}): {NO_GPU_MEANING}",
                            "none needed on a CPU box; on a GPU machine: " + DRIVER_FIX)]
        where = f"{seen['name']} is there, but " if seen else ""
        return [failed("GPU", f"{where}the CUDA driver API fails: {exc}", DRIVER_FIX)]
    gpu, described = machine.gpu, describe_gpu() or {}
    major, minor = gpu.compute_capability
    return [
        ok("CUDA driver", f"driver {described.get('driver', '?')}, supports CUDA {driver_cuda_version() or '?'}"),
        ok("GPU", f"{gpu.name}, compute capability {major}.{minor} (sm_{major}{minor})"),
    ]


def check_dla(machine: Machine) -> list[Verdict]:
    if machine.tensorrt is None or machine.gpu is None:
        return [missing("DLA cores", "not counted: TensorRT and a GPU are needed to ask",
                        "of the supported Jetsons only AGX Orin and Orin NX (JetPack 6) have DLA cores; "
                        "install TensorRT (JetPack) to count them")]
    from ssd_edge.runtime.backends.tensorrt_logging import create
    from ssd_edge.runtime.backends.tensorrt_support import no_dla_cores

    cores = int(create(machine.tensorrt, "Builder").num_DLA_cores)
    meaning = "ssd-export --dla-core N builds for one" if cores else no_dla_cores(machine.tensorrt.__version__)
    return [ok("DLA cores", f"{cores} ({meaning})")]


ENVIRONMENT_CHECKS = (
    ("Python", check_python),
    ("NumPy", check_numpy),
    ("OpenCV", check_opencv),
    ("onnxruntime", check_onnxruntime),
    ("TensorRT", check_tensorrt),
    ("pycuda", check_pycuda),
    ("GPU", check_gpu),
    ("DLA cores", check_dla),
)
