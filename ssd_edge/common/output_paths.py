"""The one rule for files the tools write: an output never replaces an input, and two
outputs of one run never share a file. Used by ssd-predict, ssd-demo, ssd-export,
ssd-eval and ssd-bench before any work starts.

"The same file" is decided on what the names lead to, not on their spelling: `out/../a.jpg`,
a symbolic link to the input, a hard link, or a folder reached through a link all count
as the input itself.

    check_outputs({"--output": "clip.mp4", "--log": "clip.jsonl"},
                  {"--model": "ssd.onnx", "--source": "clip.mp4"})   # OutputPathError: --output is --source

`OutputFolder` creates a folder for a run's outputs and removes it again when the run fails
before writing anything into it, so a failed run leaves no empty folder behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from ssd_edge.common.errors import UsageError


class OutputPathError(UsageError):
    """An output that would replace an input or another output, or that cannot be
    written; the message names both paths and what to change."""


def _keys(path: str | os.PathLike) -> set[tuple]:
    """What identifies the file `path` leads to: its resolved absolute path and, when it
    exists, its device and inode (which also catches hard links)."""
    path = Path(path)
    keys: set[tuple] = {("path", os.path.normcase(str(path.expanduser().resolve(strict=False))))}
    try:
        status = path.stat()
    except OSError:
        return keys
    keys.add(("inode", status.st_dev, status.st_ino))
    return keys


def same_file(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """True when the two paths lead to one file (or one would-be file), however spelled."""
    return bool(_keys(first) & _keys(second))


def _flatten(named: Mapping[str, object]) -> list[tuple[str, Path]]:
    """(label, path) pairs from {label: path | [paths] | None}."""
    pairs = []
    for label, value in named.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        pairs.extend((label, Path(v)) for v in values if v is not None)
    return pairs


class FileSet:
    """Files already claimed (inputs, or outputs planned so far); `owner(path)` says which
    label claimed the file `path` leads to, or None. A folder claims every file that
    exists under it (a dataset, a folder of images): writing a new file there is fine,
    replacing one of its files is not."""

    def __init__(self, named: Mapping[str, object] | None = None) -> None:
        self._owners: dict[tuple, tuple[str, Path]] = {}
        self._folders: list[tuple[Path, str, Path]] = []  # (resolved folder, label, as given)
        for label, path in _flatten(named or {}):
            self.add(label, path)

    def add(self, label: str, path: str | os.PathLike) -> None:
        if Path(path).is_dir():
            self._folders.append((Path(path).resolve(), label, Path(path)))
            return
        for key in _keys(path):
            self._owners.setdefault(key, (label, Path(path)))

    def owner(self, path: str | os.PathLike) -> tuple[str, Path] | None:
        for key in _keys(path):
            if key in self._owners:
                return self._owners[key]
        if self._folders and Path(path).is_file():
            resolved = Path(path).resolve()
            for folder, label, given in self._folders:
                if resolved.is_relative_to(folder):
                    return label, given
        return None


def check_outputs(outputs: Mapping[str, object], inputs: Mapping[str, object]) -> None:
    """Refuse (OutputPathError) before any work when an output is one of the inputs, is one
    file with another output, or is an existing folder. `outputs` and `inputs` map an
    option's name (as the user typed it: '--log', '--model') to a path, a list of paths or
    None (not given)."""
    taken = FileSet(inputs)
    for label, path in _flatten(outputs):
        claimed = taken.owner(path)
        if claimed is not None:
            other_label, other = claimed
            kind = "input" if other_label in inputs else "output"
            what = f"a file of the {kind} folder" if other.is_dir() else f"the same file as the {kind}"
            raise OutputPathError(
                f"{label} {path} is {what} {other_label} {other}; it would be replaced: "
                f"choose another name or folder for {label}"
            )
        if path.is_dir():
            raise OutputPathError(f"{label} {path} is a folder; give a file name")
        taken.add(label, path)


def check_writable_file(path: str | os.PathLike, label: str) -> Path:
    """`path` as a Path, after checking that a file can be written there (its folder
    exists and is writable, it is not a folder, an existing file is writable); OutputPathError
    naming the option otherwise. Used before long runs whose report is written last."""
    path = Path(path)
    folder = path.parent
    if path.is_dir():
        raise OutputPathError(f"{label} {path} is a folder; give a file name")
    if not folder.is_dir():
        raise OutputPathError(f"{label} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or not _can_create_in(folder):
        raise OutputPathError(f"{label} {path}: the folder {folder} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputPathError(f"{label} {path}: the file exists and is not writable")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in `folder` (tried: a read-only mount or an ACL says
    no where the mode bits say yes, and root passes every os.access check)."""
    try:
        handle, name = tempfile.mkstemp(prefix=".ssd-edge-probe-", dir=folder)
    except OSError:
        return False
    os.close(handle)
    os.unlink(name)
    return True


def unique_name(name: str, taken: Iterable[str], is_free: Callable[[str], bool] = lambda name: True) -> str:
    """`name`, or `stem_1.ext`, `stem_2.ext`, ... : the first not in `taken` (compared
    case-insensitively, as on the file systems that fold case) for which `is_free(name)`."""
    folded = {n.casefold() for n in taken}
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 0
    while candidate.casefold() in folded or not is_free(candidate):
        number += 1
        candidate = f"{stem}_{number}{suffix}"
    return candidate


def output_names(inputs: Sequence[Path], folder: Path, reserved: Sequence[str] = (),
                 replaceable: Iterable[str] = ()) -> list[str]:
    """One file name in `folder` per input path: its own name unless that is taken by an
    earlier output, by one of `reserved`, would be one of the inputs themselves (an output
    folder that holds the inputs) or is a file already there that is not one of
    `replaceable` (the results of an earlier run); then `stem_N.ext` with the first free N."""
    claimed_inputs = FileSet({"input": list(inputs)})
    replaceable = set(replaceable)

    def is_free(name: str) -> bool:
        target = folder / name
        if claimed_inputs.owner(target) is not None:
            return False
        return name in replaceable or not (target.exists() or target.is_symlink())

    names: list[str] = list(reserved)
    for path in inputs:
        names.append(unique_name(path.name, names, is_free))
    return names[len(reserved):]


class OutputFolder:
    """A folder for a run's outputs: created (with its parents) on entry when missing,
    and removed again (with the parents this created) when the block raises and nothing
    was written into it. OutputPathError when it cannot be created or written to."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._created: list[Path] = []

    def __enter__(self) -> Path:
        if self.path.exists() and not self.path.is_dir():
            raise OutputPathError(f"{self.path}: cannot create the output directory (a file has that name)")
        missing = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputPathError(f"{self.path}: cannot create the output directory ({exc.strerror or exc})") from None
        self._created = missing  # deepest first
        if not os.access(self.path, os.W_OK | os.X_OK):
            self.remove_if_empty()
            raise OutputPathError(f"{self.path}: the output directory is not writable")
        return self.path

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.remove_if_empty()

    def remove_if_empty(self) -> None:
        """Remove the folders this created, deepest first, as long as they are empty."""
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:
                return
        self._created = []
