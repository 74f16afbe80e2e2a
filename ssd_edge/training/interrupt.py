"""Ctrl-C during training: stop at a safe point, never half-way through a checkpoint, and
never lose the interrupt.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be. When
that is inside the fork of a DataLoader worker (an epoch starting), the exception is raised
in an at-fork handler, printed as "Exception ignored in ..." and dropped: training went on
to the end. Raised elsewhere it can kill a worker half-way through starting (worker-died
errors). So while training runs, SIGINT only records the request (`StopRequest`); the loop
looks at it between steps and before each epoch, and stops with a KeyboardInterrupt there.
Phases that start no processes (validation) opt in to stopping at once (`at_once`). A
second Ctrl-C always stops at once. Data workers ignore SIGINT: the main process decides.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self._at_once = True
        self._pid = os.getpid()

    def _on_sigint(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked data worker before its init: the main process decides
            return
        if self.requested or self._at_once:
            self.requested = True
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: the main thread may be inside a print to stderr right now
        os.write(2, b"\nstopping after the current step (Ctrl-C again to stop at once)\n")

    @contextlib.contextmanager
    def installed(self, enabled: bool = True) -> Iterator["StopRequest"]:
        """Handle SIGINT as described above while the block runs (in the main thread, where
        nobody else has replaced Python's own handler); restore the previous handler after.
        The block starts in 'at once' mode; `deferred()` marks the parts to protect."""
        own = (enabled and threading.current_thread() is threading.main_thread()
               and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        previous = signal.signal(signal.SIGINT, self._on_sigint) if own else None
        try:
            yield self
        finally:
            if own:
                signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Inside the block a first Ctrl-C is only recorded; `check()` acts on it."""
        at_once, self._at_once = self._at_once, False
        try:
            yield
        finally:
            self._at_once = at_once

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was requested."""
        if self.requested:
            raise KeyboardInterrupt


def ignore_sigint_in_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: a terminal's Ctrl-C reaches the whole process group; the
    workers leave it to the main process, which shuts them down in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
