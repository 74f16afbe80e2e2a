"""Where ssd-serve runs: PyTriton 0.7 needs numpy<2, so it lives in an environment of its
own (README: `.venv-serve`), never in the torch one. Run from another environment, ssd-serve
says which command to run instead of suggesting an install that would downgrade numpy there."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ssd_edge.common.errors import MissingDependency

SERVE_VENV = ".venv-serve"
CREATE = f"python -m venv {SERVE_VENV} && {SERVE_VENV}/bin/pip install 'ssd-edge[runtime,serve]'"


def serve_commands(cwd: str | os.PathLike | None = None) -> list[Path]:
    """Existing `.venv-serve/bin/ssd-serve` files beside this environment (the project's
    checkout holds both .venv and .venv-serve) and in the working folder."""
    places = [Path(sys.prefix).resolve().parent, Path(cwd or os.getcwd()).resolve()]
    found = []
    for place in places:
        command = place / SERVE_VENV / "bin" / "ssd-serve"
        if command.is_file() and command not in found:
            found.append(command)
    return found


def require_pytriton(cwd: str | os.PathLike | None = None) -> None:
    """MissingDependency, in one line, when PyTriton is not importable here: the ssd-serve of
    an existing serving environment to run instead, else how to make one."""
    try:
        if importlib.util.find_spec("pytriton") is not None:
            return
    except ValueError:  # sys.modules["pytriton"] is None: made unimportable
        pass
    found = serve_commands(cwd)
    why = "ssd-serve needs PyTriton, which needs numpy<2 and so has an environment of its own"
    if found:
        raise MissingDependency(f"{why}: run {found[0]} instead (this Python, {sys.prefix}, has no PyTriton)")
    raise MissingDependency(f"{why} (this Python, {sys.prefix}, has no PyTriton); make it with: {CREATE}")


# What tritonserver logs at start on a machine without a usable NVIDIA GPU (it probes CUDA
# whatever the models run on); harmless there.
TRITON_CPU_LINES = ("CUDA driver version is insufficient for CUDA runtime version",
                    "CudaDriverHelper has not been initialized", "CUDA memory pool disabled")


def cpu_only_note() -> str | None:
    """On a machine without a usable GPU, one line saying that tritonserver's CUDA lines
    (TRITON_CPU_LINES) are expected there; None where a GPU answers."""
    from ssd_edge.runtime.cuda.device import NoGpu, gpu_info

    try:
        gpu_info()
    except NoGpu as exc:
        return (f"no GPU here ({exc}): tritonserver's lines '{TRITON_CPU_LINES[0]}' and "
                f"'{TRITON_CPU_LINES[1]}' only say so; the models run on the CPU")
    return None
