"""Run runtime/decode_nms.cu on the CPU: the kernels compiled by the host C++ compiler
against tests/cuda_emulation/cuda_emulation.h, executed through the same
`DecodeNmsPlan` (workspace layout, launches, arguments, record unpacking) that the pycuda
launcher uses on a GPU. Host memory stands in for device memory."""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ssd_edge.runtime.cuda.plan import KERNEL_SOURCE, DecodeNmsPlan

HERE = Path(__file__).resolve().parents[1] / "cuda_emulation"
DYNAMIC_SHARED = "extern __shared__ __align__(16) unsigned char smem[];"
DYNAMIC_SHARED_KERNELS = 3  # ssd_class_nms, ssd_merge, ssd_agnostic_nms


def compiler() -> str | None:
    return shutil.which("g++") or shutil.which("c++")


def build(directory: Path, source: str | None = None) -> ctypes.CDLL:
    """Compile the emulated kernels (of `source`, default the real decode_nms.cu) into
    `directory` (reused when the sources are unchanged)."""
    source = KERNEL_SOURCE.read_text() if source is None else source
    if source.count(DYNAMIC_SHARED) != DYNAMIC_SHARED_KERNELS:
        raise RuntimeError(f"{KERNEL_SOURCE}: expected the dynamic shared declaration {DYNAMIC_SHARED_KERNELS} times")
    emulated = source.replace(DYNAMIC_SHARED, "unsigned char* smem = emu::dynamic_shared();")
    harness = (HERE / "launch.cpp").read_text() + (HERE / "cuda_emulation.h").read_text()
    harness += "".join((HERE / name).read_text() for name in ("cuda_keywords.h", "kernel_adapters.h"))
    digest = hashlib.sha256((emulated + harness).encode()).hexdigest()[:16]
    library = directory / f"decode_nms_emulated_{digest}.so"
    if not library.exists():
        (directory / "decode_nms_emulated.cu").write_text(emulated)
        command = [
            compiler(), "-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
            "-I", str(HERE), "-I", str(directory), str(HERE / "launch.cpp"), "-o", str(library),
        ]
        subprocess.run(command, check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(library))


def _ctype(value):
    if isinstance(value, np.uintp):
        return ctypes.c_void_p(int(value))
    if isinstance(value, np.int32):
        return ctypes.c_int(int(value))
    if isinstance(value, np.float32):
        return ctypes.c_float(float(value))
    raise TypeError(f"unexpected kernel argument {value!r}")


class EmulatedDecodeNms:
    """The CUDA decode + NMS of `plan`, run by the emulation in `library`."""

    def __init__(self, library: ctypes.CDLL, plan: DecodeNmsPlan, priors_cxcywh: np.ndarray) -> None:
        self.library, self.plan = library, plan
        self.library.emu_launch.restype = ctypes.c_int
        self.workspace = np.zeros(plan.workspace_bytes + 256, np.uint8)
        self.base = -self.workspace.ctypes.data % 256  # 256-aligned, as cuMemAlloc is
        priors = np.ascontiguousarray(priors_cxcywh, np.float32).view(np.uint8).ravel()
        start = self.base + plan.offsets["priors"]
        self.workspace[start:start + priors.size] = priors

    def address(self, name: str) -> int:
        return self.workspace.ctypes.data + self.base + self.plan.offsets[name]

    def view(self, name: str, dtype, count: int) -> np.ndarray:
        start = self.base + self.plan.offsets[name]
        return self.workspace[start:start + count * np.dtype(dtype).itemsize].view(dtype)

    def __call__(self, locs: np.ndarray, confs: np.ndarray, image_sizes, reverse: bool = False):
        locs = np.ascontiguousarray(locs, np.float32)
        confs = np.ascontiguousarray(confs, np.float32)
        batch = len(locs)
        error = ctypes.create_string_buffer(512)
        workspace = self.workspace.ctypes.data + self.base
        for launch in self.plan.launches(workspace, locs.ctypes.data, confs.ctypes.data, batch):
            values = [_ctype(a) for a in launch.args]
            addresses = [ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values]
            pointers = (ctypes.c_void_p * len(values))(*addresses)
            status = self.library.emu_launch(
                launch.kernel.encode(), *launch.grid, *launch.block, ctypes.c_size_t(launch.shared_bytes), pointers,
                int(reverse), error, ctypes.c_size_t(len(error)),
            )
            if status != 0:
                raise RuntimeError(f"{launch.kernel}: emulation failed ({status}): {error.value.decode()}")
        self.last_batch = batch
        det_count = self.view("det_count", np.int32, batch).copy()
        records = self.view("packed", np.float32, int(det_count.sum()) * self.plan.record_width)
        records = records.reshape(-1, self.plan.record_width).copy()
        return self.plan.detections(det_count, records, image_sizes)

    def possible(self) -> np.ndarray:
        """(B, P) bool of the last run: the default boxes ssd_softmax took the softmax of."""
        rows = self.view("possible", np.uint8, self.last_batch * self.plan.num_priors)
        return rows.reshape(self.last_batch, self.plan.num_priors).astype(bool)

    def probabilities(self) -> np.ndarray:
        """(B, C, P) float32 of the last run: the kernel's softmax (only the possible default
        boxes' columns are written)."""
        shape = (self.last_batch, self.plan.num_classes, self.plan.num_priors)
        return self.view("probs", np.float32, int(np.prod(shape))).reshape(shape).copy()
