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

SIGTERM (docker stop, systemd, Slurm, kill) is handled the same way: a service manager's
stop gets the same safe stop and the same "what is kept, how to resume" line, with the
signal named and exit status 143 (128 + SIGTERM, what a service manager expects of a stop).
Data workers ignore it too (systemd signals the whole control group): the main process
shuts them down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    def __init__(self) -> None:
        self.requested = False
        self.signal: signal.Signals | None = None  # the first stop signal received
        self._at_once = True
        self._pid = os.getpid()

    def _on_signal(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked data worker before its init: the main process decides
            return
        if self.signal is None:
            self.signal = signal.Signals(signum)
        if self.requested or self._at_once:
            self.requested = True
            raise KeyboardInterrupt
        self.requested = True
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        # os.write, not print: the main thread may be inside a print to stderr right now
        os.write(2, f"\nstopping after the current step ({again} again to stop at once)\n".encode())

    @contextlib.contextmanager
    def installed(self, enabled: bool = True) -> Iterator["StopRequest"]:
        """Handle SIGINT and SIGTERM as described above while the block runs (in the main
        thread, for each signal that still has Python's own handler); restore the previous
        handlers after. The block starts in 'at once' mode; `deferred()` marks the parts to
        protect."""
        defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
        main = enabled and threading.current_thread() is threading.main_thread()
        owned = [signum for signum in SIGNALS if main and signal.getsignal(signum) is defaults[signum]]
        previous = {signum: signal.signal(signum, self._on_signal) for signum in owned}
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

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
    """DataLoader worker_init_fn: a terminal's Ctrl-C reaches the whole process group (and
    systemd's SIGTERM the whole control group); the workers leave it to the main process,
    which shuts them down in order (and they exit with it if it is killed)."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
