"""A running `ssd-demo` for the --web tests: started as a subprocess, its output lines read
on a thread (wait_for a line), stopped with SIGTERM as a service manager stops it."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time


class DemoProcess:
    """`ssd-demo --web 127.0.0.1:0` in a subprocess; its output lines read on a thread."""

    def __init__(self, argv):
        self.process = subprocess.Popen([sys.executable, "-m", "ssd_edge.cli.demo", *argv], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"ssd-demo printed no {pattern!r}:\n{''.join(self.output)}")

    def stop(self, timeout=15):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
