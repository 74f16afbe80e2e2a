"""The runtime-only install (`pip install ".[runtime]"`, README's CPU deployment row), for
real: a fresh virtual environment in a temporary folder with this checkout installed into it.
Every console script answers --help; the torch-free ones do their work (ssd-predict, ssd-demo
headless, ssd-bench, ssd-dataset, ssd-doctor, ssd-eval with the small `eval` extra); the
others end in one line naming their extra, exit 2, before any work. The packages it installs
are a stated set (what makes its size; README, "Install by machine").

Installing takes a minute or two (the packages come from the registry, or pip's cache): slow,
and in the default run (CI runs it). Skipped, with the reason, where pip cannot install.
"""

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.demo import write_video

ROOT = Path(__file__).resolve().parents[1]

# What `.[runtime]` installs, by distribution name (pip's normalised form). A new package here
# is a decision: it grows every CPU device's install (README states the size and its parts).
RUNTIME_DISTRIBUTIONS = {"ssd-edge", "numpy", "opencv-python", "onnxruntime", "scipy",
                         # onnxruntime's own requirements
                         "flatbuffers", "packaging", "protobuf"}
# Optional requirements some onnxruntime releases had (coloredlogs, sympy): allowed, not required.
ONNXRUNTIME_OPTIONAL = {"coloredlogs", "humanfriendly", "sympy", "mpmath"}
VENV_TOOLS = {"pip", "setuptools", "wheel"}
SIZE_BOUND_MB = 700  # 613 MB measured (opencv-python 290, scipy 143, onnxruntime 78, numpy 73)

pytestmark = pytest.mark.slow


def _run(args, timeout=600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)


def _extra(name: str) -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.extras_require"][name].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with `ROOT[runtime]` installed (a regular, non-editable install)."""
    home = tmp_path_factory.mktemp("runtime-venv")
    env = home / "venv"
    made = _run([sys.executable, "-m", "venv", env], timeout=300)
    assert made.returncode == 0, made.stderr
    # From a copy of the checkout's sources: pip builds in the source folder, and the checkout's
    # own build/ must not be touched (nor its .venv folders copied).
    source = home / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv*", ".git", "build", "runs", "dist", "*.egg-info",
                                                                "__pycache__", "dataset_coco", ".pytest_cache"))
    installed = _run([env / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q",
                      f"{source}[runtime]"], timeout=900, cwd=home)
    if installed.returncode != 0 and ("No matching distribution" in installed.stderr
                                      or "Could not find a version" in installed.stderr
                                      or "NewConnectionError" in installed.stderr):
        pytest.skip(f"pip cannot install the runtime's packages here: {installed.stderr.strip().splitlines()[-1]}")
    assert installed.returncode == 0, installed.stderr
    return env


@pytest.fixture(scope="module")
def work(tmp_path_factory, model_path, tiny_coco):
    """An ONNX model (made with torch in this environment), an image folder, a short clip."""
    home = tmp_path_factory.mktemp("runtime-work")
    images = home / "images"
    images.mkdir()
    for record in sorted((Path(tiny_coco) / "val").iterdir())[:2]:
        (images / record.name).write_bytes(record.read_bytes())
    return {"model": model_path, "data": tiny_coco, "images": images, "clip": write_video(home / "clip.avi", 6),
            "home": home}


def _command(venv: Path, name: str, *args, cwd=None, timeout=600) -> subprocess.CompletedProcess:
    # run outside the checkout (default: the venv's temporary folder): nothing is written into it
    return _run([venv / "bin" / name, *args], timeout=timeout, cwd=cwd or venv.parent,
                env={**os.environ, "OMP_NUM_THREADS": "1"})


def _assert_names_extra(done: subprocess.CompletedProcess, extra: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"pip install 'ssd-edge[{extra}]'" in lines[0] or extra == "serve", lines[0]


def test_installs_the_stated_packages_only(venv):
    listed = _run([venv / "bin" / "python", "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"])
    names = {entry["name"].lower().replace("_", "-") for entry in json.loads(listed.stdout)}
    assert RUNTIME_DISTRIBUTIONS <= names
    assert names - RUNTIME_DISTRIBUTIONS - VENV_TOOLS <= ONNXRUNTIME_OPTIONAL, "new packages in the runtime install"
    site = next((venv / "lib").glob("python3*/site-packages"))
    size_mb = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6
    assert size_mb < SIZE_BOUND_MB, f"the runtime install grew to {size_mb:.0f} MB"


def test_every_console_script_answers_help(venv):
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    scripts = [line.split("=")[0].strip() for line in parser["options.entry_points"]["console_scripts"].splitlines()
               if line.strip()]
    assert len(scripts) == 9
    for script in scripts:
        done = _command(venv, script, "--help", timeout=120)
        assert done.returncode == 0 and done.stdout.startswith("usage: "), f"{script}: {done.stderr}"


def test_torch_free_commands_work(venv, work, tmp_path):
    model = work["model"]
    predicted = _command(venv, "ssd-predict", "--model", model, work["images"], "--output", tmp_path / "predict",
                         cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert len(json.loads((tmp_path / "predict" / "detections.json").read_text())["images"]) == 2
    demo = _command(venv, "ssd-demo", "--model", model, "--source", work["clip"], "--headless",
                    "--output", tmp_path / "demo.mp4")
    assert demo.returncode == 0 and "stopped: end of file." in demo.stdout, demo.stderr
    bench = _command(venv, "ssd-bench", "--model", model, "--runs", "3", "--warmup", "1", "--no-progress")
    assert bench.returncode == 0 and "machine: " in bench.stdout, bench.stderr
    synth = _command(venv, "ssd-dataset", "synth", tmp_path / "synth", "--train", "2", "--val", "2")
    assert synth.returncode == 0, synth.stderr
    checked = _command(venv, "ssd-dataset", "check", tmp_path / "synth")
    assert checked.returncode == 0 and "no problems found" in checked.stdout, checked.stdout + checked.stderr
    doctor = _command(venv, "ssd-doctor", "--no-nvrtc", "--report", tmp_path / "doctor.md", cwd=tmp_path)
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, doctor.stderr


def test_commands_needing_an_extra_say_which_before_any_work(venv, work, tmp_path):
    model, data = work["model"], work["data"]
    _assert_names_extra(_command(venv, "ssd-train", "--datapath", data, "--save", tmp_path / "m.pt"), "train")
    _assert_names_extra(_command(venv, "ssd-export", "--weights", model, "--format", "int8", "--calib-data",
                                 work["images"]), "export")
    _assert_names_extra(_command(venv, "ssd-eval", "--weights", model, "--datapath", data), "eval")
    report = tmp_path / "bench.json"
    for args, extra in ((["--data", data], "eval"), (["--plot", tmp_path / "bench.png"], "plot"),
                        (["--peer", "torchvision"], "train")):
        done = _command(venv, "ssd-bench", "--model", model, "--json", report, *args)
        _assert_names_extra(done, extra)
        assert "machine:" not in done.stdout and not report.exists()
    served = _command(venv, "ssd-serve", "--model", model, cwd=tmp_path)
    _assert_names_extra(served, "serve")
    assert "PyTriton" in served.stderr and "numpy<2" in served.stderr
    assert not (tmp_path / "m.pt").exists()


def test_eval_works_with_the_eval_extra(venv, work, tmp_path):
    extra = _extra("eval")
    assert len(extra) == 1 and extra[0].startswith("pycocotools"), "the eval extra stays one small package"
    installed = _run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", *extra])
    assert installed.returncode == 0, installed.stderr
    out = tmp_path / "eval.json"
    done = _command(venv, "ssd-eval", "--weights", work["model"], "--datapath", work["data"], "--json", out,
                    "--no-progress")
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())["results"][0]
    assert result["images"] == 4 and 0.0 <= result["AP"] <= 1.0
