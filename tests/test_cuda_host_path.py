"""The pycuda launcher of the CUDA decode + NMS (runtime/cuda/decode_nms.py) on a machine
without a GPU: it runs against a recording stand-in of the slice of pycuda.driver it calls
(device memory is host memory, a prepared call runs the kernel on the CPU emulation of
tests/cuda_emulation), so the detections are the real kernels' and every driver call per
batch is counted: launches, stream synchronisations, copies, and the launch lists built in
Python. Regressions in the host path's per-batch work show here, without a GPU.

Per batch, in steady state: 3 kernel launches (2 for a background-only model; 4 with
agnostic_nms), 1 stream synchronisation, 1 copy back, no launch list rebuilt (before this host path: 5 launches
through pycuda's unprepared calls, 2 synchronisations, 2 copies, the launch list rebuilt
every batch)."""

from __future__ import annotations

import ctypes
from collections import Counter

import numpy as np
import pytest

from ssd_edge.runtime.cuda.decode_nms import FIRST_RECORDS_PER_IMAGE, CudaDecodeNms
from ssd_edge.runtime.cuda.resources import DeviceBuffer, Stream
from ssd_edge.runtime.detections import PostprocessConfig
from ssd_edge.runtime.doctor.kernel_cases import KernelCase, kernel_difference, random_outputs, random_priors
from ssd_edge.runtime.stage_timer import StageTimer
from tests.helpers import cuda_emulator
from tests.helpers.decode_nms_cases import random_batches

pytestmark = pytest.mark.skipif(cuda_emulator.compiler() is None, reason="no C++ compiler to build the CUDA emulation")


class _DeviceAllocation:
    def __init__(self, driver: "RecordingDriver", nbytes: int) -> None:
        self._memory = np.zeros(nbytes + 256, np.uint8)
        self._address = self._memory.ctypes.data + (-self._memory.ctypes.data % 256)  # as cuMemAlloc aligns
        self._driver = driver

    def __int__(self) -> int:
        return self._address

    def free(self) -> None:
        self._driver.calls["cuMemFree"] += 1
        self._memory = None


class _HostAllocation:
    """Page-locked memory: an array whose .base frees it, as pycuda's pagelocked_empty."""

    def __init__(self, driver: "RecordingDriver", shape, dtype) -> None:
        self._array = np.zeros(shape, dtype)
        self.__array_interface__ = self._array.__array_interface__
        self._driver = driver

    def free(self) -> None:
        self._driver.calls["cuMemFreeHost"] += 1


class _Stream:
    def __init__(self, driver: "RecordingDriver") -> None:
        self._driver = driver
        self.handle = id(self)

    def synchronize(self) -> None:
        self._driver.calls["cuStreamSynchronize"] += 1


class _Function:
    """A kernel of the emulated module: prepare() takes the struct format of its arguments,
    prepared_async_call() converts them as pycuda would pack them and runs the emulation."""

    def __init__(self, driver: "RecordingDriver", name: str) -> None:
        self._driver, self.name, self.arg_format = driver, name, None

    def prepare(self, arg_format: str) -> "_Function":
        self._driver.calls["prepare"] += 1
        self.arg_format = arg_format
        return self

    def prepared_async_call(self, grid, block, stream, *args, shared_size: int = 0) -> None:
        self._driver.calls["cuLaunchKernel"] += 1
        self._driver.launched.append(self.name)
        assert self.arg_format is not None, f"{self.name}: launched before prepare()"
        assert len(args) == len(self.arg_format), f"{self.name}: {len(args)} arguments for {self.arg_format!r}"
        assert isinstance(stream, _Stream)
        kinds = {"P": ctypes.c_void_p, "i": ctypes.c_int, "f": ctypes.c_float}
        values = [kinds[code](int(a) if code != "f" else float(a)) for code, a in zip(self.arg_format, args)]
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        grid, block = (tuple(grid) + (1, 1))[:3], (tuple(block) + (1, 1))[:3]
        error = ctypes.create_string_buffer(512)
        status = self._driver.library.emu_launch(self.name.encode(), *grid, *block, ctypes.c_size_t(shared_size),
                                                 pointers, 0, error, ctypes.c_size_t(len(error)))
        if status != 0:
            raise RuntimeError(f"{self.name}: emulation failed ({status}): {error.value.decode()}")


class _Module:
    def __init__(self, driver: "RecordingDriver") -> None:
        self._driver = driver

    def get_function(self, name: str) -> _Function:
        self._driver.calls["cuModuleGetFunction"] += 1
        return _Function(self._driver, name)


class RecordingDriver:
    """The slice of pycuda.driver that the launcher and its resources call, counting each
    call; the kernels run on the CPU emulation in `library`."""

    def __init__(self, library) -> None:
        self.library = library
        self.library.emu_launch.restype = ctypes.c_int
        self.calls: Counter = Counter()
        self.launched: list[str] = []

    def module(self) -> _Module:
        return _Module(self)

    def Stream(self) -> _Stream:  # noqa: N802 - pycuda's name
        return _Stream(self)

    def mem_alloc(self, nbytes: int) -> _DeviceAllocation:
        self.calls["cuMemAlloc"] += 1
        return _DeviceAllocation(self, nbytes)

    def pagelocked_empty(self, shape, dtype) -> np.ndarray:
        self.calls["cuMemHostAlloc"] += 1
        return np.asarray(_HostAllocation(self, shape, dtype))

    def memcpy_htod_async(self, destination: int, host: np.ndarray, stream) -> None:
        self.calls["cuMemcpyHtoDAsync"] += 1
        host = np.ascontiguousarray(host)
        ctypes.memmove(int(destination), host.ctypes.data, host.nbytes)

    def memcpy_dtoh_async(self, host: np.ndarray, source: int, stream) -> None:
        self.calls["cuMemcpyDtoHAsync"] += 1
        assert host.flags.c_contiguous
        ctypes.memmove(host.ctypes.data, int(source), host.nbytes)

    def take(self) -> Counter:
        """The calls since the last take()."""
        calls, self.calls = self.calls, Counter()
        self.launched = []
        return calls


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return cuda_emulator.build(tmp_path_factory.mktemp("cuda_host_path"))


class Loaded:
    """A CudaDecodeNms on the recording driver with a case's outputs uploaded."""

    def __init__(self, library, case: KernelCase, max_batch: int | None = None) -> None:
        self.driver = RecordingDriver(library)
        self.case = case
        self.stream = Stream(driver=self.driver)
        self.decoder = CudaDecodeNms(self.stream, case.priors, case.confs.shape[2], max_batch or len(case.locs),
                                     case.config, driver=self.driver, module=self.driver.module())
        self.buffers = [DeviceBuffer(array.nbytes, what, driver=self.driver)
                        for array, what in ((case.locs, "locs"), (case.confs, "confs"))]
        for buffer, array in zip(self.buffers, (case.locs, case.confs)):
            self.stream.copy_to_device(buffer.address, np.ascontiguousarray(array, np.float32))
        self.plans_built = 0
        launches = self.decoder.plan.launches

        def counted(*args, **kwargs):  # how often the launch list is built in Python
            self.plans_built += 1
            return launches(*args, **kwargs)

        self.decoder.plan.launches = counted
        self.driver.take()

    def run(self, timer=None):
        locs, confs = (buffer.address for buffer in self.buffers)
        if timer is None:
            return self.decoder.run(locs, confs, self.case.image_sizes)
        return self.decoder.run(locs, confs, self.case.image_sizes, timer)

    def assert_agrees(self, got) -> None:
        probs, possible = self.decoder.scores(len(self.case.locs))
        difference = kernel_difference(self.case, got, probs, possible)
        assert difference is None, f"{self.case.name}: {difference}"


def few_detections_case(batch: int = 4) -> KernelCase:
    """At most a few detections per image (a deployment threshold)."""
    rng = np.random.default_rng(3)
    locs, confs = random_outputs(rng, batch, 300, 6, logit_scale=2.0)
    confs[..., 0] += 8.0
    return KernelCase("few", random_priors(rng, 300), locs, confs, [(480, 640)] * batch,
                      PostprocessConfig(score_threshold=0.5, iou_threshold=0.45, top_k=100, max_detections=100))


def test_one_sync_and_one_copy_per_batch_in_steady_state(library):
    loaded = Loaded(library, few_detections_case())
    for attempt in range(3):
        got = loaded.run()
        launched = list(loaded.driver.launched)
        calls = loaded.driver.take()
        assert launched == ["ssd_softmax", "ssd_class_nms", "ssd_merge"] and calls["cuLaunchKernel"] == 3, calls
        assert calls["cuStreamSynchronize"] == 1, calls
        assert calls["cuMemcpyDtoHAsync"] == 1, calls
        assert calls["prepare"] == 0 and calls["cuModuleGetFunction"] == 0, calls  # prepared once, at construction
        assert calls["cuMemcpyHtoDAsync"] == 0 and calls["cuMemAlloc"] == 0 and calls["cuMemHostAlloc"] == 0, calls
        assert loaded.plans_built == 1, "the launch list is built once per batch size and output addresses"
    assert 0 < max(len(d.scores) for d in got) <= FIRST_RECORDS_PER_IMAGE
    loaded.assert_agrees(got)


def test_the_launch_order_is_the_plans(library):
    loaded = Loaded(library, few_detections_case(batch=2))
    loaded.run()
    assert loaded.driver.launched == ["ssd_softmax", "ssd_class_nms", "ssd_merge"]


def test_agnostic_nms_launches_four_kernels_with_one_sync_and_one_copy(library):
    """NMS across the classes: ssd_softmax, ssd_class_top_k, ssd_agnostic_nms, ssd_pack, still
    one synchronisation and one copy per batch, prepared once; its detections by the kernel's rule."""
    case = few_detections_case()
    case = KernelCase("few-agnostic", case.priors, case.locs, case.confs, case.image_sizes,
                      case.config.replace(agnostic_nms=True))
    loaded = Loaded(library, case)
    for attempt in range(2):
        got = loaded.run()
        launched = list(loaded.driver.launched)
        calls = loaded.driver.take()
        assert launched == ["ssd_softmax", "ssd_class_top_k", "ssd_agnostic_nms", "ssd_pack"], launched
        assert calls["cuLaunchKernel"] == 4 and calls["cuStreamSynchronize"] == 1, calls
        assert calls["cuMemcpyDtoHAsync"] == 1 and calls["prepare"] == 0, calls
    assert 0 < max(len(d.scores) for d in got) <= FIRST_RECORDS_PER_IMAGE
    loaded.assert_agrees(got)


@pytest.mark.parametrize("agnostic", [False, True], ids=["per-class", "agnostic"])
def test_more_detections_than_covered_cost_one_more_copy_once(library, agnostic):
    """At threshold 0.001 every image has up to max_detections records: the first batch
    needs a second copy and synchronisation; the next ones cover it in one."""
    case = random_batches(batches=(3,), priors=300, classes=6)[0]
    case = KernelCase(case.name, case.priors, case.locs, case.confs, case.image_sizes,
                      PostprocessConfig(score_threshold=0.001, iou_threshold=0.55, top_k=300, max_detections=300,
                                        agnostic_nms=agnostic))
    loaded = Loaded(library, case, max_batch=4)
    got = loaded.run()
    calls = loaded.driver.take()
    assert sum(len(d.scores) for d in got) > 3 * FIRST_RECORDS_PER_IMAGE
    assert calls["cuMemcpyDtoHAsync"] == 2 and calls["cuStreamSynchronize"] == 2, calls
    loaded.assert_agrees(got)
    loaded.driver.take()
    again = loaded.run()
    calls = loaded.driver.take()
    assert calls["cuMemcpyDtoHAsync"] == 1 and calls["cuStreamSynchronize"] == 1
    assert calls["cuLaunchKernel"] == (4 if agnostic else 3)
    assert [d.scores.tolist() for d in again] == [d.scores.tolist() for d in got]


def test_a_background_only_model_launches_two_kernels(library):
    rng = np.random.default_rng(5)
    locs, confs = random_outputs(rng, 2, 100, 1)
    case = KernelCase("background-only", random_priors(rng, 100), locs, confs, [(300, 300)] * 2, PostprocessConfig())
    loaded = Loaded(library, case)
    got = loaded.run()
    calls = loaded.driver.take()
    assert calls["cuLaunchKernel"] == 2 and calls["cuStreamSynchronize"] == 1 and calls["cuMemcpyDtoHAsync"] == 1
    assert all(len(d.scores) == 0 for d in got)


def test_a_timed_batch_adds_only_the_timers_synchronisation(library):
    loaded = Loaded(library, few_detections_case())
    timer = StageTimer()
    loaded.run(timer)
    calls = loaded.driver.take()
    assert calls["cuStreamSynchronize"] == 2 and calls["cuMemcpyDtoHAsync"] == 1 and calls["cuLaunchKernel"] == 3
    assert timer.seconds["decode_nms"] > 0 and timer.seconds["device_to_host"] > 0


def test_a_failed_construction_frees_what_it_allocated(library):
    driver = RecordingDriver(library)
    case = few_detections_case()

    class BrokenStream:  # the default boxes' upload fails, after the buffers were allocated
        pycuda_stream = None

        def copy_to_device(self, address, host):
            raise RuntimeError("cuMemcpyHtoDAsync failed: out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        CudaDecodeNms(BrokenStream(), case.priors, 6, 4, case.config, driver=driver, module=driver.module())
    assert driver.calls["cuMemAlloc"] == driver.calls["cuMemFree"] == 1
    assert driver.calls["cuMemHostAlloc"] == driver.calls["cuMemFreeHost"] == 1
