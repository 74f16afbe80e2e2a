"""Writing files so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; when the block ends without an error the
    temporary file is synced and renamed over `path` (atomic on POSIX), else removed.
    An existing `path` is therefore replaced only once the new file is complete."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{target}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"{target}: the directory {directory} is not writable")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_file_mode())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _default_file_mode() -> int:
    """0o666 less the process umask: the mode a plain open(path, "w") gives a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
