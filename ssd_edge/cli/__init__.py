"""Command-line entry points: each module parses arguments and calls library functions.

`run_command` is the one place where a command turns the project's own errors (and the
operating system's, such as a full disk or a missing folder) into one line on stderr and
an exit status; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn, TypeVar

from ssd_edge.common.errors import SSDEdgeError

T = TypeVar("T")

# What ssd-predict and ssd-demo show unless told otherwise. A model's own score threshold
# is the evaluation one (0.001 for SSDLite, as torchvision): right for mAP, hundreds of
# boxes on a picture. ssd-eval and the Detector API keep the model's.
SHOW_SCORE_THRESHOLD = 0.3

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def fail(prog: str, message: object, code: int = EXIT_ERROR) -> NoReturn:
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(code)


def run_command(prog: str, work: Callable[[], T], interrupted: str = "interrupted") -> T:
    """`work()`, with the project's errors and OSErrors ending the command in one line
    (exit 2, or the error's own `exit_code`) and Ctrl-C in `interrupted` (exit 130)."""
    try:
        return work()
    except SSDEdgeError as exc:
        fail(prog, exc, exc.exit_code)
    except OSError as exc:
        fail(prog, exc)
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
