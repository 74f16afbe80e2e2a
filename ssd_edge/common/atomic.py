"""Writing files so that a crash never leaves a half-written one: everything goes to a
temporary file beside the target (same suffix, so writers that look at it pick the same
format) and is renamed over the target once complete (atomic on POSIX). An existing file
is therefore replaced only by a complete new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

# A partial file untouched this long belongs to no live writer (writers write without pause).
STALE_PARTIAL_S = 60.0


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def partial_affixes(target: Path) -> tuple[str, str]:
    """How the partial files of `target` are named: `.<name>.<random>.partial<suffix>`."""
    return f".{target.name}.", f".partial{target.suffix}"


def remove_stale_partials(target: str | os.PathLike, min_age_s: float = STALE_PARTIAL_S) -> list[Path]:
    """Remove the partial files of `target` that a killed writer left and nothing has written
    to for `min_age_s` (so a live writer's file is never pulled away); returns them. Names
    are compared as strings, not as a glob, so any file name works."""
    target = Path(target)
    prefix, suffix = partial_affixes(target)
    removed, now = [], time.time()
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return removed
    for path in entries:
        if not (path.name.startswith(prefix) and path.name.endswith(suffix)):
            continue
        try:
            if path.is_file() and now - path.stat().st_mtime >= min_age_s:
                path.unlink()
                removed.append(path)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed


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
        prefix, suffix = partial_affixes(self.target)
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
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
