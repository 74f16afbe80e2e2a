"""ssd-serve run where PyTriton is not (the torch .venv): one line pointing to the serving
environment's ssd-serve when there is one, else how to make it; never an install into this one."""

import subprocess
import sys

import pytest

from ssd_edge.common.errors import MissingDependency
from ssd_edge.runtime.serve.environment import require_pytriton


@pytest.fixture
def no_pytriton(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytriton", None)


def test_points_to_the_serving_environment(tmp_path, monkeypatch, no_pytriton):
    command = tmp_path / ".venv-serve" / "bin" / "ssd-serve"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere" / ".venv"))
    with pytest.raises(MissingDependency) as caught:
        require_pytriton(cwd=tmp_path)
    message = str(caught.value)
    assert f"run {command} instead" in message and "numpy<2" in message
    assert "\n" not in message and "pip install 'ssd-edge[serve]'" not in message


def test_says_how_to_make_it_when_there_is_none(tmp_path, monkeypatch, no_pytriton):
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "elsewhere" / ".venv"))
    with pytest.raises(MissingDependency, match=r"make it with: python -m venv \.venv-serve && \.venv-serve/bin/pip "
                                                r"install 'ssd-edge\[runtime,serve\]'"):
        require_pytriton(cwd=tmp_path)


def test_the_command_exits_2_in_one_line_before_loading(tmp_path):
    code = ("import sys; sys.modules['pytriton'] = None; from ssd_edge.cli.serve import main; "
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "--model", str(tmp_path / "missing.onnx")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "PyTriton" in done.stderr and "missing.onnx" not in done.stderr


def test_tritonservers_cuda_lines_are_explained_where_there_is_no_gpu():
    from ssd_edge.runtime.cuda.device import NoGpu, gpu_info
    from ssd_edge.runtime.serve.environment import cpu_only_note

    try:
        gpu_info()
    except NoGpu:
        note = cpu_only_note()
        assert "CudaDriverHelper has not been initialized" in note and "run on the CPU" in note
    else:
        assert cpu_only_note() is None
