"""ssd-doctor: what of ssd-edge works on this machine, one verdict per line.

`diagnose()` checks the libraries and the GPU (`checks`), the CUDA decode + NMS with NVRTC
and on the GPU (`gpu_checks`), and the user's model and engine (`model_checks`); `report`
turns the verdicts into terminal lines and a markdown report. Torch-free, like the whole
runtime: it runs on the README's Jetson install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ssd_edge.runtime.doctor.verdict import FAILED, MISSING, OK, Verdict, checking

__all__ = ["FAILED", "MISSING", "OK", "Verdict", "diagnose"]


def diagnose(model: str | Path | None = None, engine: str | Path | None = None, nvrtc: bool = True,
             kernel_runs: int = 50, progress: Callable[[Verdict], None] = lambda verdict: None) -> list[Verdict]:
    """Every check, in order; `progress` is called with each verdict as it comes.

    model: an .onnx to run on onnxruntime; engine: a .engine to run through the TensorRT
    backend (and compare with `model` when both are given). nvrtc: also compile the kernel
    with NVRTC for every Jetson SM where NVRTC is installed. kernel_runs: timed runs of the
    GPU decode + NMS per batch size."""
    from ssd_edge.runtime.doctor import gpu_checks, model_checks
    from ssd_edge.runtime.doctor.checks import ENVIRONMENT_CHECKS, Machine

    machine, verdicts = Machine(), []

    def run(name: str, fix: str, check: Callable[[], list[Verdict]]) -> None:
        for verdict in checking(name, fix, check):
            verdicts.append(verdict)
            progress(verdict)

    bug = "attach this report to a bug report"
    for name, check in ENVIRONMENT_CHECKS:
        run(name, bug, lambda check=check: check(machine))
    model_path, engine_path = (Path(p) if p is not None else None for p in (model, engine))
    spec = None
    if model_path is not None:
        spec = _spec_or_none(model_path)
    if nvrtc:
        run("NVRTC kernel check", bug, lambda: gpu_checks.check_nvrtc(machine, spec))
    run("CUDA decode + NMS", gpu_checks.KERNEL_FIX, lambda: gpu_checks.check_kernel(machine))
    if not any(v.name == "CUDA decode + NMS" and v.status == FAILED for v in verdicts):
        run("decode + NMS speed", bug, lambda: gpu_checks.check_kernel_speed(machine, runs=kernel_runs))
    if model_path is not None:
        run("model (onnxruntime)", bug, lambda: model_checks.check_model(machine, model_path))
    if engine_path is not None:
        run("engine (TensorRT)", model_checks.ENGINE_FIX + "; if it persists, " + bug,
            lambda: model_checks.check_engine(machine, engine_path, model_path))
    return verdicts


def _spec_or_none(model: Path):
    """The model's ModelSpec for the NVRTC launch check, or None when it cannot be read
    (the model check then says why)."""
    try:
        from ssd_edge.runtime.backends.onnxruntime_backend import open_session
        from ssd_edge.runtime.model_file import spec_from_onnx_metadata

        return spec_from_onnx_metadata(open_session(model).get_modelmeta().custom_metadata_map, model)
    except Exception:  # noqa: BLE001 - reported by the model check
        return None
