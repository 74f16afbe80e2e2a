"""Our TensorRT code against NVIDIA's real TensorRT Python bindings, on a machine with neither
TensorRT's libraries nor a GPU.

`make setup` installs the bindings wheels (about 1 MB each; the `-libs` wheels they normally
pull are placeholders that cannot install here) under .trt/<version>: tensorrt-cu12-bindings
10.3.0 (JetPack 6) and 11.4.0.106, and tensorrt-bindings 8.6.1, the nearest 8.x, which must be
refused. They import once the few C symbols they resolve at load time come from stand-in
libraries compiled here from tests/tensorrt_standin/*.c (every factory returns NULL, as a
TensorRT that cannot start does). Each version runs tests/helpers/tensorrt_probe.py in its own
interpreter; the tests below read its report.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tensorrt_api_uses

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
STANDIN = TESTS / "tensorrt_standin"
INSTALLED = REPO / ".trt"
VERSIONS = {"8.6": "8.6.1", "10.3": "10.3.0", "11.4": "11.4.0.106"}
SUPPORTED = ("10.3", "11.4")
REASON = "CUDA initialization failure with error: 35"


def build_standins(out: Path, major: int) -> Path:
    """libnvinfer.so.<major>, libnvonnxparser, libnvinfer_plugin (and 8.x's libnvparsers) in `out`."""
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        pytest.fail(f"no C compiler ({compiler}) to build TensorRT's stand-in libraries; install gcc")
    out.mkdir(parents=True)
    libraries = ["nvinfer", "nvonnxparser", "nvinfer_plugin"] + (["nvparsers"] if major < 10 else [])
    for library in libraries:
        soname = f"lib{library}.so.{major}"
        subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", f"-Wl,-soname,{soname}", "-o",
                        str(out / soname), str(STANDIN / f"{library}.c")], check=True, capture_output=True, text=True)
    return out


# Uses each of which the check must reject (line: the error expected), to show that it bites.
MUTANTS = {
    "export/engine.py": (
        "def _configure(trt, builder, config, network):\n"
        "    config.set_flag(trt.BuilderFlag.FP16)\n"  # no capability guard: gone in 11.x
        "    config.set_flag(trt.BuilderFlag.STRICT_TYPES)\n"  # removed in 10.0
        "    config.max_workspace_size = 1 << 30\n"  # removed in 10.0
        "    builder.build_engine(network, config)\n"  # removed in 10.0
        "    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE)\n"  # the size is missing
    ),
    "runtime/backends/tensorrt_backend.py": (
        "class EngineRunner:\n"
        "    def infer(self, trt):\n"
        "        self.context.execute_async_v3(stream=0)\n"  # the keyword is stream_handle
    ),
}
MUTANT_ERRORS = {
    "export/engine.py:2": "no BuilderFlag.FP16",
    "export/engine.py:3": "no BuilderFlag.STRICT_TYPES",
    "export/engine.py:4": "no IBuilderConfig.max_workspace_size",
    "export/engine.py:5": "no Builder.build_engine",
    "export/engine.py:6": ("IBuilderConfig.set_memory_pool_limit called with 1 positional []; "
                           "it takes (pool, pool_size)"),
    "runtime/backends/tensorrt_backend.py:3": "IExecutionContext.execute_async_v3 called with 0 positional ['stream']",
}


@pytest.fixture(scope="session")
def api_uses(tmp_path_factory):
    """Every TensorRT use in runtime/ and export/, and the JSON file the probes read (with the
    mutants' uses)."""
    uses = tensorrt_api_uses.scan_tree(REPO)
    mutants = [use for name, source in MUTANTS.items() for use in tensorrt_api_uses.scan_source(source, name)]
    path = tmp_path_factory.mktemp("tensorrt_api") / "uses.json"
    path.write_text(json.dumps({"project": tensorrt_api_uses.to_json(uses),
                                "mutants": tensorrt_api_uses.to_json(mutants)}))
    return uses, path


@pytest.fixture(scope="session")
def report(tmp_path_factory, api_uses):
    """{version label: probe.py's report}, each made on first use."""
    made = {}

    def get(label: str) -> dict:
        if label not in made:
            site = INSTALLED / label
            if not (site / "tensorrt_bindings").is_dir():
                if label == "8.6" and sys.version_info >= (3, 12):
                    pytest.skip("tensorrt-bindings 8.6.1 has wheels for Python 3.11 and older only")
                pytest.fail(f"{site}: the TensorRT {VERSIONS[label]} bindings are not installed; run `make setup`")
            work = tmp_path_factory.mktemp(f"trt{label}")
            libraries = build_standins(work / "lib", int(label.split(".")[0]))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(site), str(STANDIN / "front_end"), str(REPO)])
            env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libraries), env.get("LD_LIBRARY_PATH")]))
            done = subprocess.run([sys.executable, "-m", "tests.helpers.tensorrt_probe", str(api_uses[1]), str(work)],
                                  env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
            made[label] = json.loads(done.stdout)
        return made[label]

    return get


def test_the_scan_finds_our_uses_of_tensorrt(api_uses):
    """A scanner that misses uses would pass everything: it must see each kind in our code."""
    found = {(use.kind, use.key) for use in api_uses[0]}
    assert {
        ("attribute", "Runtime"), ("attribute", "Builder"), ("attribute", "OnnxParser"),
        ("attribute", "ILogger.Severity.ERROR"), ("attribute", "TensorIOMode.INPUT"),
        ("attribute", "MemoryPoolType.WORKSPACE"), ("attribute", "BuilderFlag.FP16"),
        ("member", "Builder.build_serialized_network"), ("member", "IBuilderConfig.get_timing_cache().serialize"),
        ("member", "IExecutionContext.execute_async_v3"), ("member", "ICudaEngine.get_tensor_profile_shape"),
        ("set", "IBuilderConfig.DLA_core"), ("set", "IBuilderConfig.progress_monitor"),
        ("override", "ILogger.log"), ("override", "IProgressMonitor.step_complete"),
        ("probe", "BuilderFlag.FP16"), ("probe", "IProgressMonitor"),
    } <= found
    by_key = {(use.kind, use.key): use for use in api_uses[0]}
    assert by_key[("member", "IExecutionContext.execute_async_v3")].keywords == ("stream_handle",)
    assert ("capability", "fp16_flag") in by_key[("attribute", "BuilderFlag.FP16")].guards
    assert ("probe", "IProgressMonitor") in by_key[("override", "IProgressMonitor.step_complete")].guards


def test_the_scan_sees_guards_aliases_and_wrapped_calls():
    source = (
        "def f(trt, capabilities, builder, config):\n"
        "    flags = trt.BuilderFlag\n"
        "    if options.half and capabilities.fp16_flag:\n"
        "        config.set_flag(flags.FP16)\n"
        "    else:\n"
        "        config.set_flag(flags.TF32)\n"
        "    base = getattr(trt, 'IProgressMonitor', None)\n"
        "    base.__init__(self)\n"
        "    check('build', builder.build_serialized_network, network, config, must_succeed=True)\n"
        "    config.DLA_core = 0\n"
    )
    uses = {(u.kind, u.key, u.positional, u.guards) for u in tensorrt_api_uses.scan_source(source, "export/engine.py")}
    assert ("attribute", "BuilderFlag.FP16", -1, (("capability", "fp16_flag"),)) in uses
    assert ("attribute", "BuilderFlag.TF32", -1, ()) in uses  # the else branch is not guarded
    assert ("attribute", "IProgressMonitor.__init__", 0, (("probe", "IProgressMonitor"),)) in uses
    assert ("member", "Builder.build_serialized_network", 2, ()) in uses
    assert ("set", "IBuilderConfig.DLA_core", -1, ()) in uses


@pytest.mark.parametrize("label", list(VERSIONS))
def test_the_real_bindings_import_over_the_stand_ins(report, label):
    out = report(label)
    assert out["version"] == VERSIONS[label]
    assert out["file"].startswith(str(STANDIN / "front_end"))  # `import tensorrt`: the 2-line front end
    assert out["bindings"].startswith(str(INSTALLED / label / "tensorrt_bindings"))


@pytest.mark.parametrize("label", SUPPORTED)
def test_every_tensorrt_use_exists_where_feature_detection_says(report, api_uses, label):
    api = report(label)["api"]
    assert api["bugs"] == []
    assert api["checked"] >= len([u for u in api_uses[0] if u.kind != "probe"]) - 12  # nearly all ran unguarded
    # 11.x has no weak typing: BuilderFlag.FP16 exists only in 10.x and is reached only behind its probe
    assert api["absent_behind_guards"] == (["BuilderFlag.FP16"] if label == "11.4" else [])


@pytest.mark.parametrize("label", SUPPORTED)
def test_the_check_rejects_wrong_uses(report, label):
    found = dict(bug.split(": ", 1) for bug in report(label)["mutants"]["bugs"])
    expected = {where: error for where, error in MUTANT_ERRORS.items() if label == "11.4" or "FP16" not in error}
    assert set(found) == set(expected)
    for where, error in expected.items():
        assert found[where].startswith(error), (where, found[where])


@pytest.mark.parametrize("label, fp16_flag", [("10.3", True), ("11.4", False)])
def test_feature_detection_picks_the_branch_on_the_real_module(report, label, fp16_flag):
    out = report(label)
    assert out["capabilities"] == dict(fp16_flag=fp16_flag, strongly_typed_flag=True, only_strongly_typed=not fp16_flag,
                                       memory_pools=True, progress_monitor=True, dla=True)
    assert out["missing"] is None and out["fp16_from_graph"] is (not fp16_flag)
    assert out["runtime_import"] == "returned"
    assert out["build_environment"].startswith("TensorRTUnavailable: no NVIDIA GPU to build a TensorRT engine on")


def test_tensorrt_8_is_refused_naming_its_version(report):
    out = report("8.6")
    unsupported = "TensorRT 8.6.1: this TensorRT/JetPack is not supported (needs TensorRT 10+, JetPack 6)"
    assert out["runtime_import"].startswith(f"GpuError: model.engine: {unsupported}")
    assert out["build_environment"].startswith(f"TensorRTUnavailable: {unsupported}")


@pytest.mark.parametrize("label", SUPPORTED)
def test_tensorrt_that_cannot_start_gives_its_logged_reason(report, label):
    version = VERSIONS[label]
    said = report(label)["start_with_reason"]
    assert said["create Runtime"] == f"GpuError: TensorRT {version} could not create its Runtime: {REASON}"
    assert said["create Builder"] == f"TensorRTUnavailable: TensorRT {version} could not create its Builder: {REASON}"
    assert said["runtime"] == said["create Runtime"]  # the engine runner, as a user meets it
    assert said["export"] == said["create Builder"]  # the engine build
    silent = report(label)["start_without_reason"]
    assert silent["runtime"].startswith(f"GpuError: TensorRT {version} could not create its Runtime: TensorRT "
                                        "logged no reason; check that the NVIDIA driver works")


def test_the_fakes_match_the_real_10_3_module(report):
    """Every name tests/tensorrt_fakes.py defines exists in TensorRT 10.3 with the same kind."""
    out = report("10.3")
    assert len(out["fake_api"]) > 20
    assert {name: kind for name, kind in out["real_api"].items() if out["fake_api"][name] != kind} == {}
