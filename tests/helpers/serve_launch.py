"""Start `ssd-serve` as a child process, from another Python environment, on free ports of
this machine, and wait until its models are ready.

    from tests.helpers.serve_launch import launch_server

    with launch_server(".venv-serve/bin/python", "model.onnx", "server.log", "--max-batch", "8") as server:
        client = DetectionClient(server.http)            # or server.grpc ("grpc://HOST:PORT")

The server needs PyTriton (numpy<2) while the caller may run numpy 2 with only tritonclient:
tests and benchmarks drive it this way. Stopping sends SIGTERM, as a supervisor would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ssd_edge.runtime.serve.client import DetectionClient
from ssd_edge.runtime.serve.server import ServeError


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct TCP ports free on `host` now (the system's choice; another process
    could still take one before the server binds it)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class ServerProcess:
    """A running ssd-serve child: its process, addresses ("HOST:PORT" for HTTP,
    "grpc://HOST:PORT"), the metrics URL and its log file."""

    process: subprocess.Popen
    http: str
    grpc: str
    metrics: str
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.is_file() else ""

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, then wait; kill if it outlives `timeout_s`. Returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def launch_server(python: str | os.PathLike, model: str | os.PathLike, log: str | os.PathLike,
                  *serve_args: str, host: str = "127.0.0.1", timeout_s: float = 120.0,
                  cwd: str | os.PathLike | None = None) -> ServerProcess:
    """Run `python -m ssd_edge.cli.serve --model MODEL` on `host` and three free ports, with
    `serve_args` added, its output into `log`; return once both models are ready. ServeError
    with the log's end when it exits or is not ready within `timeout_s`."""
    python = Path(python)
    if not python.is_file():
        raise ServeError(f"{python}: no such interpreter for ssd-serve (`make setup` creates .venv-serve)")
    http, grpc, metrics = free_ports(3, host)
    command: Sequence[str] = [
        str(python), "-m", "ssd_edge.cli.serve", "--model", str(model), "--address", host,
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), *serve_args,
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the child's environment is its own
    log = Path(log)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    server = ServerProcess(process, f"{host}:{http}", f"grpc://{host}:{grpc}", f"http://{host}:{metrics}/metrics", log)
    deadline = time.monotonic() + timeout_s
    with DetectionClient(server.http) as probe:
        while not probe.is_ready():
            if process.poll() is not None or time.monotonic() > deadline:
                status = process.poll()
                server.stop(timeout_s=5)
                why = f"exited with status {status}" if status is not None else f"not ready after {timeout_s:g} s"
                raise ServeError(f"ssd-serve on {model} {why}; its log ends:\n{server.log_tail()}")
            time.sleep(0.3)
    return server
