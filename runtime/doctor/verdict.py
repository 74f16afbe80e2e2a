"""One line of ssd-doctor's answer: a `Verdict` (ok / missing / FAILED, what was found, and
the fix), and `checking`, which turns a check that crashed into a FAILED verdict carrying
its traceback, so one broken part never hides the rest of the report."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Callable

OK = "ok"
MISSING = "missing"  # an optional part is absent: what it means is said, nothing is broken
FAILED = "FAILED"  # a part that is there does not work: the command exits 1
STATUSES = (OK, MISSING, FAILED)


@dataclass(frozen=True)
class Verdict:
    """status: OK, MISSING or FAILED; name: the part checked ("onnxruntime"); detail: what
    was found, one line; fix: what to do (empty for OK); notes: longer text for the
    markdown report only (a table, a traceback)."""

    status: str
    name: str
    detail: str
    fix: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"verdict status must be one of {STATUSES}, got {self.status!r}")

    def line(self, name_width: int = 22) -> str:
        """'ok       onnxruntime            1.20.1 ...' (the fix follows for the others)."""
        text = f"{self.status:<8} {self.name:<{name_width}} {self.detail}"
        return f"{text}. Fix: {self.fix}" if self.fix else text


def ok(name: str, detail: str, notes: str = "") -> Verdict:
    return Verdict(OK, name, detail, notes=notes)


def missing(name: str, detail: str, fix: str, notes: str = "") -> Verdict:
    return Verdict(MISSING, name, detail, fix, notes)


def failed(name: str, detail: str, fix: str, notes: str = "") -> Verdict:
    return Verdict(FAILED, name, detail, fix, notes)


def checking(name: str, fix: str, check: Callable[[], list[Verdict]]) -> list[Verdict]:
    """`check()`'s verdicts; an exception it raises becomes one FAILED verdict naming the
    exception (the traceback goes to the report's notes), `fix` saying what to do."""
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - the doctor reports every failure, it never stops at one
        return [failed(name, f"{type(exc).__name__}: {exc}", fix, notes=traceback.format_exc())]
