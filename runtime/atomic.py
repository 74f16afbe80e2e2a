"""Writing files so that a crash never leaves a half-written one: everything goes to a
temporary file beside the target (same suffix, so writers that look at it pick the same
format) and is renamed over the target once complete (atomic on POSIX). An existing file
is therefore replaced only by a complete new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class PartialFile:
    """A temporary file beside `target`: write to `.path`, then `commit()` renames it over
    `target` (after an fsync, with the mode a plain open() would give) or `discard()`
    removes it. A missing or read-only directory is refused up front."""

    def __init__(self, target: str | os.PathLike) -> None:
        self.target = Path(target)
        directory = self.target.parent
        if not directory.is_dir():
            raise FileNotFoundError(f"{self.target}: the directory {directory} does not exist")
        if not os.access(directory, os.W_OK):
            raise PermissionError(f"{self.target}: the directory {directory} is not writable")
        fd, name = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=f".partial{self.target.suffix}", dir=directory)
        os.close(fd)
        self.path = Path(name)

    def commit(self) -> Path:
        with open(self.path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(self.path, 0o666 & ~_umask())  # mkstemp makes 0600
        os.replace(self.path, self.target)
        return self.target

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renamed over `path` when the block ends
    without an error, removed otherwise."""
    partial = PartialFile(path)
    try:
        yield partial.path
        partial.commit()
    finally:
        partial.discard()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
