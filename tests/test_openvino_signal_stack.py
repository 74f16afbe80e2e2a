"""OpenVINO backends made and freed in any order, on any thread, leave the process able to
take a signal: the next Ctrl-C (or torch DataLoader's SIGCHLD) is handled, not a SIGSEGV.

OpenVINO's CPU plugin, made with each `ov.Core`, gives the thread that makes it a signal stack
of its own (sigaltstack, for AMX) and unmaps it when that Core goes; it restores the previous
one only when it is freed on the same thread, last made first freed. Two Cores freed in the
order they were made, or one freed on another thread, left the main thread's signal stack
pointing at unmapped memory: the whole test suite in one pytest process died of SIGSEGV, with
no traceback, when the subprocess of test_train_threads exited (SIGCHLD, whose handler torch's
DataLoader had installed, delivered on that stack). The backends now share one Core that is
never freed (`openvino_core`). Run in a subprocess: the failure is a SIGSEGV."""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino", reason="backend 'openvino' needs `pip install 'ssd-edge[openvino]'`")

SCRIPT = textwrap.dedent("""
    import ctypes, gc, signal, sys, threading
    from ssd_edge.runtime import Detector

    class stack_t(ctypes.Structure):
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    def signal_stack_is_mapped():
        stack = stack_t()
        ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
        if not stack.ss_sp:
            return True
        with open("/proc/self/maps") as maps:
            ranges = [[int(x, 16) for x in line.split()[0].split("-")] for line in maps]
        return any(low <= stack.ss_sp < high for low, high in ranges)

    path = sys.argv[1]
    first, second = Detector(path, backend="openvino"), Detector(path, backend="openvino")
    del first  # freed in the order they were made
    gc.collect()
    del second
    gc.collect()
    third = [Detector(path, backend="openvino")]
    freer = threading.Thread(target=third.clear)  # freed on another thread
    freer.start()
    freer.join()
    gc.collect()
    print("signal stack mapped:", signal_stack_is_mapped(), flush=True)
    handled = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: handled.append(signum))
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)  # delivered on the main thread
    print("signal handled:", bool(handled), flush=True)
""")


def test_backends_freed_in_any_order_on_any_thread_leave_signals_deliverable(model_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, model_path], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stdout}{done.stderr[-2000:]}"
    assert "signal stack mapped: True" in done.stdout and "signal handled: True" in done.stdout, done.stdout
