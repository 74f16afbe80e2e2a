"""The root of ssd-edge's own errors.

Every error the project raises about the user's input, files, models or machine derives
from `SSDEdgeError`, so a command line catches it once and prints one line; anything else
is a bug and keeps its traceback. Subclasses keep the built-in base a caller would expect
(`SpecError` is also a `ValueError`, `GpuError` a `RuntimeError`) as a mixin.
"""

from __future__ import annotations


class SSDEdgeError(Exception):
    """A problem the user can act on; the message names the file or value and what to do.

    exit_code: what a command line exits with when this error ends it (2: bad input or
    environment; a few errors, such as a failed parity check, use 1)."""

    exit_code = 2


class UsageError(SSDEdgeError, ValueError):
    """An argument or setting that cannot be used (an unknown backend, a negative count, a
    source in no known form); the message names it and what would do."""


class MissingDependency(SSDEdgeError, ImportError):
    """An optional package this path needs is not installed; the message names the extra."""


def require(module: str, extra: str, purpose: str):
    """Import `module`, or raise MissingDependency saying to install ssd-edge[`extra`]."""
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{purpose} needs the '{module.split('.')[0]}' package ({exc}); install it with: "
            f"pip install 'ssd-edge[{extra}]'"
        ) from None
