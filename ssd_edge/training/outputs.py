"""The files one training run writes, named after its `--save` path so that two runs saved
into one folder never share one, checked before the work starts, and written so that a
failed write names the file and leaves the previous complete version in place.

For `--save runs/ssd.pt`: `runs/ssd.pt` (last checkpoint), `runs/ssd.best.pt` (best mAP@0.5),
`runs/ssd.metrics.csv` and `runs/ssd.curves.png`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ssd_edge.common.atomic import PartialFile, remove_stale_partials
from ssd_edge.common.errors import SSDEdgeError


class RunFileError(SSDEdgeError, OSError):
    """A training output that cannot be written; the message names the file and the reason."""


@dataclass(frozen=True)
class RunFiles:
    save: Path

    @property
    def best(self) -> Path:
        return self.save.with_name(f"{self.save.stem}.best{self.save.suffix}")

    @property
    def metrics(self) -> Path:
        return self.save.with_name(f"{self.save.stem}.metrics.csv")

    @property
    def curves(self) -> Path:
        return self.save.with_name(f"{self.save.stem}.curves.png")

    def all(self) -> tuple[Path, ...]:
        return self.save, self.best, self.metrics, self.curves

    def prepare(self) -> list[Path]:
        """Make the folder, prove a file can be created in it (not only that its mode bits
        allow it: root, read-only mounts), and remove this run's own leftovers: the hidden
        `.partial` files of saves that a kill interrupted. Returns the leftovers removed."""
        folder = self.save.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFileError(f"{self.save}: its folder {folder} cannot be made ({exc.strerror or exc})") from None
        if self.save.is_dir():
            raise RunFileError(f"{self.save}: is a folder; --save takes the checkpoint's file name, "
                               f"e.g. {self.save / 'ssd.pt'}")
        try:
            PartialFile(self.save).discard()
        except OSError as exc:
            raise RunFileError(f"{self.save}: cannot write in {folder} ({exc.strerror or exc}); "
                              "choose a writable folder with --save") from None
        return self.remove_leftovers()

    def remove_leftovers(self) -> list[Path]:
        """Delete the `.partial` files that an interrupted atomic write of one of this run's
        files left, once untouched for a minute (another live run's save is never pulled
        away); nothing else."""
        return [path for target in self.all() for path in remove_stale_partials(target)]


@contextlib.contextmanager
def writing(path: Path, keeps: Path) -> Iterator[None]:
    """Turn an OSError while writing `path` into an RunFileError naming it and the reason
    ("No space left on device"), and saying that `keeps` holds the last complete state."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, SSDEdgeError):
            raise
        raise RunFileError(f"{path}: could not be written ({exc.strerror or exc}); {keeps} holds the last "
                          "complete checkpoint") from None

