"""Progress bars: tqdm's where it is installed, else a line on stderr every tenth of the way.

tqdm comes with the training and export extras; a runtime-only install (a device that
evaluates, checks a dataset or benchmarks) has none, and still shows progress.
"""

from __future__ import annotations

import sys
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


class LineProgress:
    """The part of tqdm's interface the project uses (update, set_postfix_str, close, and
    iteration), writing `desc: done/total unit` at each further tenth of `total`."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", disable: bool = False, **_: object) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit, self.disable = iterable, total, desc, unit, disable
        self.n, self._shown, self._postfix = 0, 0, ""

    def __iter__(self) -> Iterator:
        for item in self.iterable if self.iterable is not None else ():
            yield item
            self.update(1)
        self.close()

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._postfix = text

    def update(self, count: int = 1) -> None:
        self.n += count
        if self.disable or not self.total:
            return
        tenth = min(10, self.n * 10 // self.total)
        if tenth > self._shown:
            self._shown = tenth
            postfix = f" ({self._postfix})" if self._postfix else ""
            print(f"{self.desc}: {self.n}/{self.total} {self.unit}{postfix}", file=sys.stderr, flush=True)

    def close(self) -> None:
        pass


def progress_bar(iterable: Iterable[T] | None = None, **options: object):
    """tqdm(iterable, **options) when tqdm is installed, else a LineProgress with them."""
    try:
        from tqdm import tqdm
    except ImportError:
        return LineProgress(iterable, **options)
    return tqdm(iterable, **options)
