"""The process's one TensorRT logger and Runtime/Builder creation, on a fake tensorrt
module (tests/tensorrt_fakes.py) that keeps the first logger it is given, as TensorRT does."""

import logging
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssd_edge.runtime.backends.tensorrt_backend import EngineError, EngineRunner
from ssd_edge.runtime.backends.tensorrt_logging import ErrorCollector, create, process_logger
from ssd_edge.runtime.cuda.resources import GpuError
from tests.helpers.tensorrt_fakes import Severity, fake_tensorrt

REASON = "CUDA initialization failure with error: 35"


def test_one_logger_per_process_and_module():
    trt = fake_tensorrt()
    assert process_logger(trt) is process_logger(trt)
    assert process_logger(fake_tensorrt()) is not process_logger(trt)  # another module, another logger
    assert isinstance(process_logger(trt), trt.ILogger)


def test_each_operation_reads_only_its_own_errors(caplog):
    logger = process_logger(fake_tensorrt())
    caplog.set_level(logging.INFO, logger="ssd_edge.tensorrt")
    logger.log(Severity.ERROR, "before")
    with logger.collecting() as first:
        logger.log(Severity.ERROR, "one")
        with logger.collecting() as inner:
            logger.log(Severity.INTERNAL_ERROR, "two")
        logger.log(Severity.WARNING, "just a warning")
        logger.log(Severity.INFO, "chatter")
    logger.log(Severity.ERROR, "after")
    assert first == ["one", "two"] and inner == ["two"]
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "ssd_edge.tensorrt"] == [
        ("ERROR", "before"), ("ERROR", "one"), ("ERROR", "two"), ("WARNING", "just a warning"), ("ERROR", "after")]


def test_collector_is_safe_across_threads():
    collector = ErrorCollector()
    with collector.collecting() as errors:
        workers = [threading.Thread(target=lambda i=i: [collector.add_error(f"{i}:{n}") for n in range(200)])
                   for i in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert sorted(errors) == sorted(f"{i}:{n}" for i in range(4) for n in range(200))


@pytest.mark.parametrize("factory", ["Runtime", "Builder"])
def test_null_factory_becomes_an_error_with_the_logged_reason(factory):
    trt = fake_tensorrt("10.3.0", start_failure=factory, reason=REASON)
    with pytest.raises(GpuError) as caught:
        create(trt, factory)
    assert str(caught.value) == f"TensorRT 10.3.0 could not create its {factory}: {REASON}"
    assert trt._loggers_given == [process_logger(trt)]


def test_null_factory_without_a_logged_reason_says_what_to_check():
    trt = fake_tensorrt("11.4.0.106", start_failure="Runtime")
    with pytest.raises(GpuError, match=r"^TensorRT 11\.4\.0\.106 could not create its Runtime: TensorRT logged "
                                       r"no reason; check that the NVIDIA driver works \(nvidia-smi\)"):
        create(trt, "Runtime")


def test_the_error_type_is_the_callers():
    class Unavailable(Exception):
        pass

    with pytest.raises(Unavailable, match="could not create its Builder"):
        create(fake_tensorrt(start_failure="Builder"), "Builder", error=Unavailable)


def test_any_other_type_error_propagates():
    trt = fake_tensorrt()

    def wrong_call(logger):
        raise TypeError("__init__(): incompatible constructor arguments")

    trt.Runtime = wrong_call
    with pytest.raises(TypeError, match="incompatible constructor arguments"):
        create(trt, "Runtime")


def test_a_created_object_is_returned():
    trt = fake_tensorrt()
    runtime = create(trt, "Runtime")
    assert isinstance(runtime, trt.Runtime) and runtime._logger is process_logger(trt)


# --- the TensorRT backend ------------------------------------------------------------------


def _engine_runner(trt, path: Path):
    sidecar = SimpleNamespace(spec=None, built_for=lambda: "TensorRT 10.3.0 on Orin (sm_87)")
    cuda_context = SimpleNamespace(name="Orin", compute_capability=(8, 7))
    return EngineRunner(path, sidecar, trt, cuda_context, stream=None)


def test_second_engine_errors_reach_its_message(tmp_path):
    # TensorRT logs to the first logger it was given: with a logger per engine, the second
    # engine's failure came out as "TensorRT said: deserializeCudaEngine failed".
    trt = fake_tensorrt()
    for name in ("first", "second"):
        path = tmp_path / f"{name}.engine"
        path.write_bytes(f"{name} engine: magic tag mismatch".encode())
        with pytest.raises(EngineError) as caught:
            _engine_runner(trt, path)
        said = str(caught.value).split("TensorRT said: ", 1)[1]
        assert said.startswith(f"{name} engine: magic tag mismatch. Engines are tied")
    assert len(set(map(id, trt._loggers_given))) == 1


def test_backend_cannot_create_runtime(tmp_path):
    path = tmp_path / "model.engine"
    path.write_bytes(b"x")
    trt = fake_tensorrt("10.3.0", start_failure="Runtime", reason=REASON)
    with pytest.raises(GpuError, match=rf"^TensorRT 10\.3\.0 could not create its Runtime: {REASON}$"):
        _engine_runner(trt, path)
