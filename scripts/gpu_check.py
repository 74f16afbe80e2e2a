#!/usr/bin/env python3
"""gpu-check: everything worth knowing about the GPU path on a machine met for the first time,
in bounded steps (about 6 minutes in all), with no network and no torch. Run from a checkout
of the repository (the kit's src/ssd-edge-src.tar.gz) with the kit installed:

    python scripts/gpu_check.py [--out gpu-check] [--model X.onnx] [--engine X.engine] [--budget 360]

Steps: the environment; a GPU probe; `pytest -m "gpu or tensorrt"`; the kernel on the
doctor's cases against NumPy; compute-sanitizer memcheck/racecheck/initcheck/synccheck on a
set of kernel cases (where compute-sanitizer exists); threads and several decoders at once;
outputs written on another stream (the TensorRT hand-off, proxied by a copy on a second stream
where TensorRT is absent); per-kernel times at thresholds 0.001 and 0.3 and tied logits, batch 1
and 8; FP64/FP32 instruction counts from Nsight Compute (where ncu exists); ssd-doctor; TensorRT
end to end (the pytest step's TensorRT tests, and ssd-doctor --engine when given one).

Each step runs in its own process with a timeout (a kernel fault poisons the CUDA context of
the process it happens in). One summary: OUT/summary.json and OUT/summary.md.
Exit status: 0 every step ran and passed; 1 a step failed or timed out; 3 no GPU here: the
steps that need one were skipped, and the summary says which (the others ran and passed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXIT_OK, EXIT_FAILED, EXIT_NO_GPU = 0, 1, 3
SANITIZER_TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")
# step -> (timeout in seconds, needs a GPU)
STEPS = {
    "environment": (30, False),
    "probe": (30, False),
    "pytest": (150, False),
    "kernel-cases": (60, True),
    "sanitizers": (150, True),
    "threads": (40, True),
    "handoff": (30, True),
    "timings": (60, True),
    "ncu": (90, True),
    "doctor": (120, False),
    "tensorrt": (90, True),
}


# ------------------------------------------------------------------ steps run in a child process

def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def step_environment(args) -> dict:
    import importlib

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None}
    packages = {}
    for name in ("numpy", "pycuda", "onnxruntime", "tensorrt", "cv2", "scipy", "pytest", "ssd_edge"):
        try:
            module = importlib.import_module(name)
            packages[name] = str(getattr(module, "__version__", getattr(module, "VERSION_TEXT", "installed")))
        except Exception as exc:  # noqa: BLE001 - a report: any import failure is worth saying as it is
            packages[name] = f"absent ({type(exc).__name__}: {exc})"
    info["packages"] = packages
    try:
        import onnxruntime

        info["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except Exception:  # noqa: BLE001
        pass
    info["tools"] = {tool: shutil.which(tool) for tool in ("nvidia-smi", "nvcc", "compute-sanitizer", "ncu", "nsys")}
    try:
        from ssd_edge.runtime.cuda.device import describe_gpu

        info["gpu"] = describe_gpu()
    except Exception as exc:  # noqa: BLE001
        info["gpu"] = f"unknown ({exc})"
    return {"status": "ok", "details": info}


# What a GPU path that is absent (rather than broken) says: pycuda, the driver or a device missing.
ABSENT = ("the GPU path needs pycuda", "no NVIDIA GPU driver", "no CUDA GPU on this machine", "no CUDA-capable device",
          "CUDA_ERROR_NO_DEVICE")


def step_probe(args) -> dict:
    """"no-gpu" where pycuda, the driver or a device is absent; "failed" where one is there
    but does not work (that is a finding, not a reason to skip quietly)."""
    try:
        from ssd_edge.runtime.cuda.resources import primary_context

        context = primary_context()
    except Exception as exc:  # noqa: BLE001 - the reason is the result
        reason = f"{type(exc).__name__}: {exc}"
        return {"status": "no-gpu" if any(a in reason for a in ABSENT) else "failed", "reason": reason}
    return {"status": "ok", "details": {"gpu": context.name, "compute_capability": list(context.compute_capability)}}


def _cases(small: bool):
    from ssd_edge.runtime.doctor.kernel_cases import kernel_cases

    cases = kernel_cases()
    if small:  # the sanitizers slow kernels 10-100x: a few small cases, both batch sizes
        cases = [c for c in cases if c.name.startswith(("random-b1-0", "random-b8-2", "identical-boxes-and-scores"))]
    return cases


def step_kernel_cases(args) -> dict:
    from ssd_edge.runtime.doctor.gpu_checks import _DeviceRun, compare_with_numpy

    device, cases = _DeviceRun(), _cases(args.small)
    try:
        problem, notes = compare_with_numpy(device.detect, cases)
    finally:
        device.close()
    if problem:
        return {"status": "failed", "reason": problem, "details": notes}
    return {"status": "ok", "details": {"cases": len(cases), "notes": notes}}


def step_threads(args) -> dict:
    """Two decoders, each with its own stream, driven from four threads at once: every
    result must equal the single-threaded one."""
    from concurrent.futures import ThreadPoolExecutor

    from ssd_edge.runtime.doctor.gpu_checks import _DeviceRun
    from ssd_edge.runtime.doctor.kernel_cases import ssdlite_case

    cases = [ssdlite_case(1, seed=1), ssdlite_case(8, seed=2)]
    devices = [_DeviceRun(), _DeviceRun()]
    try:
        with devices[0].loaded(cases[0]) as run_a, devices[1].loaded(cases[1]) as run_b:
            expected = [_key(run_a()), _key(run_b())]
            runs = [run_a, run_b]

            def work(i: int) -> bool:
                return all(_key(runs[i % 2]()) == expected[i % 2] for _ in range(20))

            with ThreadPoolExecutor(4) as pool:
                agree = list(pool.map(work, range(4)))
    finally:
        for device in devices:
            device.close()
    if not all(agree):
        return {"status": "failed", "reason": f"threads disagreeing with the single-threaded run: {agree}"}
    details = "2 decoders on 2 streams, 4 threads x 20 runs, all equal the first run"
    if args.model:  # two Detectors of the model (onnxruntime's GPU outputs into the kernel) from 4 threads
        import numpy as np

        from ssd_edge.runtime.detector import Detector

        images = [np.random.default_rng(i).integers(0, 255, (240, 320, 3), np.uint8) for i in range(4)]
        with Detector(args.model, backend="onnxruntime") as first, \
                Detector(args.model, backend="onnxruntime") as second:
            detectors = [first, second]
            expected = [_key(first(images)), _key(second(images))]
            if expected[0] != expected[1]:
                return {"status": "failed", "reason": "two Detectors of one model disagree"}
            with ThreadPoolExecutor(4) as pool:
                agree = list(pool.map(lambda i: all(_key(detectors[i % 2](images)) == expected[0]
                                                    for _ in range(5)), range(4)))
        if not all(agree):
            return {"status": "failed", "reason": f"Detectors in threads disagree: {agree}"}
        details += f"; 2 Detectors of {Path(args.model).name} (onnxruntime), 4 threads x 5 batches agree"
    return {"status": "ok", "details": details}


def _key(detections) -> list:
    return [(d.labels.tolist(), d.scores.tolist(), d.boxes.tolist()) for d in detections]


def step_handoff(args) -> dict:
    """The network's outputs written by someone else on another stream (TensorRT's place;
    proxied by a copy on a second pycuda stream), handed over with an event: the decode
    must see the finished outputs."""
    import numpy as np
    import pycuda.driver as cuda

    from ssd_edge.runtime.cuda.decode_nms import CudaDecodeNms
    from ssd_edge.runtime.cuda.resources import DeviceBuffer, Stream, primary_context
    from ssd_edge.runtime.doctor.kernel_cases import kernel_difference, ssdlite_case

    case = ssdlite_case(8, seed=3)
    context = primary_context()
    with context:
        ours, theirs = Stream(), cuda.Stream()
        decoder = CudaDecodeNms(ours, case.priors, case.confs.shape[2], len(case.locs), case.config)
        locs, confs = DeviceBuffer(case.locs.nbytes, "locs"), DeviceBuffer(case.confs.nbytes, "confs")
        try:
            for _ in range(5):
                host_locs = cuda.pagelocked_empty(case.locs.shape, np.float32)
                host_confs = cuda.pagelocked_empty(case.confs.shape, np.float32)
                host_locs[...], host_confs[...] = case.locs, case.confs
                cuda.memcpy_htod_async(locs.address, host_locs, theirs)
                cuda.memcpy_htod_async(confs.address, host_confs, theirs)
                done = cuda.Event()
                done.record(theirs)
                ours.pycuda_stream.wait_for_event(done)
                found = decoder.run(locs.address, confs.address, case.image_sizes)
                probs, possible = decoder.scores(len(case.locs))
                difference = kernel_difference(case, found, probs, possible)
                if difference:
                    return {"status": "failed", "reason": f"after a hand-off on another stream: {difference}"}
        finally:
            decoder.close()
            locs.free()
            confs.free()
            ours.close()
    return {"status": "ok", "details": "5 hand-offs (copy on a second stream, event, wait), all agree with NumPy"}


def step_timings(args) -> dict:
    """Each kernel's time (CUDA events around its prepared launch), median of 50, for
    SSDLite-sized outputs at thresholds 0.001 and 0.3 and with tied logits, batch 1 and 8."""
    import numpy as np
    import pycuda.driver as cuda

    from ssd_edge.runtime.cuda.decode_nms import CudaDecodeNms
    from ssd_edge.runtime.cuda.resources import DeviceBuffer, Stream, primary_context
    from ssd_edge.runtime.detections import PostprocessConfig
    from ssd_edge.runtime.doctor.kernel_cases import ssdlite_case

    context, rows = primary_context(), []
    with context:
        stream = Stream()
        try:
            for batch in (1, 8):
                base = ssdlite_case(batch)
                for label, threshold, tied in (("0.001", 0.001, False), ("0.3", 0.3, False), ("tied", 0.3, True)):
                    confs = np.zeros_like(base.confs) if tied else base.confs
                    config = PostprocessConfig(score_threshold=threshold)
                    decoder = CudaDecodeNms(stream, base.priors, confs.shape[2], batch, config)
                    locs_buf, confs_buf = DeviceBuffer(base.locs.nbytes, "locs"), DeviceBuffer(confs.nbytes, "confs")
                    try:
                        stream.copy_to_device(locs_buf.address, np.ascontiguousarray(base.locs))
                        stream.copy_to_device(confs_buf.address, np.ascontiguousarray(confs))
                        decoder.run(locs_buf.address, confs_buf.address, base.image_sizes)  # warm-up
                        launches = decoder._launches(batch, locs_buf.address, confs_buf.address)
                        times = {}
                        for kernel, function, grid, block, shared, kernel_args in launches:
                            start, end, samples = cuda.Event(), cuda.Event(), []
                            for _ in range(50):
                                start.record(stream.pycuda_stream)
                                function.prepared_async_call(grid, block, stream.pycuda_stream, *kernel_args,
                                                             shared_size=shared)
                                end.record(stream.pycuda_stream)
                                end.synchronize()
                                samples.append(start.time_till(end) * 1e3)
                            times[kernel] = round(float(np.median(samples)), 2)
                        wall = []
                        for _ in range(50):
                            began = time.perf_counter()
                            decoder.run(locs_buf.address, confs_buf.address, base.image_sizes)
                            wall.append((time.perf_counter() - began) * 1e6)
                        rows.append({"batch": batch, "logits": label, "kernel_us": times,
                                     "run_us_p50": round(float(np.median(wall)), 1)})
                    finally:
                        decoder.close()
                        locs_buf.free()
                        confs_buf.free()
        finally:
            stream.close()
    return {"status": "ok", "details": rows}


def step_kernel_once(args) -> dict:
    """One SSDLite-sized decode at 0.001, batch 8: what ncu profiles."""
    from ssd_edge.runtime.doctor.gpu_checks import _DeviceRun
    from ssd_edge.runtime.doctor.kernel_cases import ssdlite_case

    device = _DeviceRun()
    try:
        with device.loaded(ssdlite_case(8)) as run:
            run()
    finally:
        device.close()
    return {"status": "ok"}


CHILD_STEPS = {"environment": step_environment, "probe": step_probe, "kernel-cases": step_kernel_cases,
               "threads": step_threads, "handoff": step_handoff, "timings": step_timings,
               "kernel-once": step_kernel_once}


# ------------------------------------------------------------------ the driver

def _run(command: list[str], timeout: float, out: Path, name: str) -> tuple[int | None, str, float]:
    began = time.perf_counter()
    log = out / f"{name}.log"
    try:
        result = subprocess.run(command, cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=timeout)
        code, text = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as exc:
        code = None
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    log.write_text(text)
    return code, text, time.perf_counter() - began


def _child(step: str, out: Path, timeout: float, wrapper: list[str] = (), extra: list[str] = ()) -> dict:
    result_file = out / f"{step}.json"
    result_file.unlink(missing_ok=True)
    command = [*wrapper, sys.executable, str(Path(__file__).resolve()), "--child", step,
               "--result", str(result_file), *extra]
    code, text, seconds = _run(command, timeout, out, step + ("-" + wrapper[2] if wrapper else ""))
    if code is None:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s", "seconds": round(seconds, 1)}
    if result_file.exists():
        result = json.loads(result_file.read_text())
    else:
        result = {"status": "failed", "reason": f"exit {code}: {text.strip().splitlines()[-1] if text.strip() else ''}"}
    if code != 0 and result.get("status") == "ok":
        result = {"status": "failed", "reason": f"exit {code} (see {step}.log)", "details": result.get("details")}
    result["seconds"] = round(seconds, 1)
    return result


def run_pytest(out: Path, timeout: float) -> dict:
    code, text, seconds = _run([sys.executable, "-m", "pytest", "-m", "gpu or tensorrt", "tests", "-q", "-rs",
                                "-p", "no:cacheprovider"], timeout, out, "pytest")
    last = text.strip().splitlines()[-1] if text.strip() else ""
    if code is None:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s", "seconds": round(seconds, 1)}
    status = "ok" if code in (0, 5) else "failed"
    return {"status": status, "details": last, "seconds": round(seconds, 1)}


def run_sanitizers(out: Path, timeout: float) -> dict:
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        return {"status": "skipped", "reason": "compute-sanitizer is not on PATH (CUDA toolkit's bin)"}
    results, each = {}, timeout / len(SANITIZER_TOOLS)
    for name in SANITIZER_TOOLS:
        wrapper = [tool, "--tool", name, "--error-exitcode", "9"]
        if name == "racecheck":
            wrapper += ["--racecheck-report", "all"]
        result = _child("kernel-cases", out, each, wrapper=wrapper, extra=["--small"])
        results[name] = result["status"] if result["status"] != "failed" else f"failed: {result.get('reason')}"
    failed = {k: v for k, v in results.items() if v != "ok"}
    return {"status": "failed" if failed else "ok", "details": results}


NCU_METRICS = ",".join(f"smsp__sass_thread_inst_executed_op_{op}_pred_on.sum"
                       for op in ("dadd", "dmul", "dfma", "fadd", "fmul", "ffma"))


def run_ncu(out: Path, timeout: float) -> dict:
    tool = shutil.which("ncu")
    if tool is None:
        return {"status": "skipped", "reason": "Nsight Compute (ncu) is not on PATH"}
    command = [tool, "--csv", "--metrics", NCU_METRICS, "-k", "regex:ssd_", sys.executable,
               str(Path(__file__).resolve()), "--child", "kernel-once", "--result", str(out / "ncu-run.json")]
    code, text, seconds = _run(command, timeout, out, "ncu")
    if code is None:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s", "seconds": round(seconds, 1)}
    counts: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        cells = [c.strip('"') for c in line.split('","')]
        if len(cells) > 3 and "inst_executed_op" in line:
            kernel = next((c for c in cells if c.startswith("ssd_")), "?").split("(")[0]
            metric = next(c for c in cells if "inst_executed_op" in c)
            try:
                value = float(cells[-1].replace(",", ""))
            except ValueError:
                continue
            counts.setdefault(kernel, {})[metric.split("_op_")[1].split("_pred")[0]] = \
                counts.get(kernel, {}).get(metric.split("_op_")[1].split("_pred")[0], 0) + value
    if code != 0 or not counts:
        return {"status": "failed", "reason": f"ncu exit {code}, no counts read (see ncu.log)",
                "seconds": round(seconds, 1)}
    return {"status": "ok", "details": counts, "seconds": round(seconds, 1)}


def run_doctor(out: Path, timeout: float, model: str | None, engine: str | None) -> dict:
    command = [sys.executable, "-m", "ssd_edge.cli.doctor", "--report", str(out / "doctor.md")]
    if model:
        command += ["--model", model]
    if engine:
        command += ["--engine", engine]
    code, text, seconds = _run(command, timeout, out, "doctor")
    if code is None:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s", "seconds": round(seconds, 1)}
    last = text.strip().splitlines()[-1] if text.strip() else ""
    return {"status": "ok" if code == 0 else "failed", "details": last, "exit": code, "seconds": round(seconds, 1)}


def run_tensorrt(out: Path, timeout: float, engine: str | None) -> dict:
    code, text, _ = _run([sys.executable, "-c", "import tensorrt; print(tensorrt.__version__)"], 30, out, "tensorrt")
    if code != 0:
        return {"status": "skipped", "reason": f"TensorRT does not import here: {text.strip().splitlines()[-1:]}"}
    if engine is None:
        return {"status": "skipped", "reason": f"TensorRT {text.strip()} imports; no --engine given (the pytest "
                                               "step ran the TensorRT tests)"}
    return run_doctor(out, timeout, None, engine)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu-check", help="folder for summary.json, summary.md and the logs")
    parser.add_argument("--model", help="an ONNX model for ssd-doctor (the kit's src/demo.onnx)")
    parser.add_argument("--engine", help="a TensorRT engine for the end-to-end step")
    parser.add_argument("--budget", type=float, default=360, help="seconds for all steps (default 360)")
    parser.add_argument("--steps", help=f"comma-separated subset of: {','.join(STEPS)}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--small", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(model=None)
    args = parser.parse_args(argv)

    if args.child:  # one step, in this process: its result as JSON to --result
        try:
            result = CHILD_STEPS[args.child](args)
        except Exception as exc:  # noqa: BLE001 - the step's failure is its result
            result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        Path(args.result).write_text(json.dumps(result, default=str, indent=1))
        return 0 if result["status"] in ("ok", "no-gpu") else 1

    out = Path(args.out).resolve()
    args.model = str(Path(args.model).resolve()) if args.model else None  # the steps run in the checkout
    args.engine = str(Path(args.engine).resolve()) if args.engine else None
    out.mkdir(parents=True, exist_ok=True)
    wanted = list(STEPS) if not args.steps else [s.strip() for s in args.steps.split(",")]
    unknown = [s for s in wanted if s not in STEPS]
    if unknown:
        parser.error(f"unknown steps {unknown}; known: {', '.join(STEPS)}")
    began, results, gpu = time.perf_counter(), {}, None
    for step in ["environment", "probe", *[s for s in wanted if s not in ("environment", "probe")]]:
        timeout, needs_gpu = STEPS[step]
        left = args.budget - (time.perf_counter() - began)
        if needs_gpu and gpu is not None and gpu.get("status") != "ok":
            results[step] = {"status": "skipped",
                             "reason": "no GPU" if gpu.get("status") == "no-gpu" else "the GPU probe failed"}
        elif left < min(timeout, 20):
            results[step] = {"status": "skipped", "reason": f"out of budget ({args.budget:.0f} s)"}
        elif step == "pytest":
            results[step] = run_pytest(out, min(timeout, left))
        elif step == "sanitizers":
            results[step] = run_sanitizers(out, min(timeout, left))
        elif step == "ncu":
            results[step] = run_ncu(out, min(timeout, left))
        elif step == "doctor":
            results[step] = run_doctor(out, min(timeout, left), args.model, args.engine)
        elif step == "tensorrt":
            results[step] = run_tensorrt(out, min(timeout, left), args.engine)
        else:
            extra = ["--model", args.model] if args.model and step == "threads" else []
            results[step] = _child(step, out, min(timeout, left), extra=extra)
        if step == "probe":
            gpu = results[step]
        print(f"gpu-check {step}: {results[step]['status']} {results[step].get('reason', '')}".rstrip(), flush=True)

    no_gpu = gpu is not None and gpu.get("status") == "no-gpu"
    skipped_for_gpu = [s for s, r in results.items() if r.get("reason") == "no GPU"]
    failed = [s for s, r in results.items() if r["status"] in ("failed", "timeout")]
    if failed:
        code = EXIT_FAILED
    elif no_gpu:
        code = EXIT_NO_GPU
    else:
        code = EXIT_OK
    headline = (f"FAILED: {', '.join(failed)}" if failed else
                f"no GPU: skipped {', '.join(skipped_for_gpu)} ({gpu.get('reason')})" if no_gpu else
                "every step ran and passed")
    summary = {"headline": headline, "exit_code": code, "seconds": round(time.perf_counter() - began, 1),
               "no_gpu": no_gpu, "skipped_for_no_gpu": skipped_for_gpu, "failed": failed, "steps": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    lines = ["# gpu-check", "", f"**{headline}** (exit {code}, {summary['seconds']} s)", "",
             "| step | status | seconds | reason / result |", "|---|---|---:|---|"]
    for step, result in results.items():
        said = result.get("reason") or (result.get("details") if isinstance(result.get("details"), str) else "")
        lines.append(f"| {step} | {result['status']} | {result.get('seconds', '')} | {str(said)[:200]} |")
    for step in ("timings", "ncu", "sanitizers", "environment"):
        if results.get(step, {}).get("details") and not isinstance(results[step]["details"], str):
            lines += ["", f"## {step}", "", "```", json.dumps(results[step]["details"], indent=1, default=str), "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print(headline)
    print(f"summary: {out / 'summary.md'} and summary.json")
    return code


if __name__ == "__main__":
    sys.exit(main())
