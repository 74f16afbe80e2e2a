"""ssd-doctor's answer as text: one line per verdict for the terminal, and a markdown
report to attach to a bug (the machine, the verdict table, then each check's notes:
resource tables, timings, tracebacks). The report is written atomically; an existing file
is replaced only when it is an earlier ssd-doctor report."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path
from typing import Sequence

from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.common.errors import UsageError
from ssd_edge.runtime.doctor.verdict import FAILED, MISSING, Verdict

TITLE = "# ssd-doctor report"


def terminal_lines(verdicts: Sequence[Verdict]) -> list[str]:
    width = max((len(v.name) for v in verdicts), default=0)
    return [v.line(width) for v in verdicts]


def summary(verdicts: Sequence[Verdict]) -> str:
    """'2 FAILED, 5 missing, 9 ok' style, FAILED first."""
    counts = {status: sum(v.status == status for v in verdicts) for status in (FAILED, MISSING, "ok")}
    return ", ".join(f"{count} {status}" for status, count in counts.items())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(verdicts: Sequence[Verdict], command: Sequence[str], version: str) -> str:
    """The report: what ran where and when, the verdict table, and every check's notes."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        TITLE, "",
        f"- ssd-edge {version}, run {when} as `{' '.join(command)}`",
        f"- {platform.system()} {platform.release()} {platform.machine()}, Python {platform.python_version()} "
        f"({sys.executable})",
        f"- Result: {summary(verdicts)}",
        "",
        "| status | check | found | fix |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {v.status} | {_cell(v.name)} | {_cell(v.detail)} | {_cell(v.fix)} |" for v in verdicts]
    for verdict in verdicts:
        if verdict.notes:
            fence = "```" if "Traceback" in verdict.notes else ""
            body = f"{fence}\n{verdict.notes.rstrip()}\n{fence}" if fence else verdict.notes.rstrip()
            lines += ["", f"## {verdict.name} ({verdict.status})", "", body]
    return "\n".join(lines) + "\n"


def check_report_path(path: Path) -> bool:
    """Whether writing the report to `path` replaces an earlier ssd-doctor report. Raises
    UsageError, before any check runs, for a folder or a file that is not such a report."""
    if path.is_dir():
        raise UsageError(f"--report {path}: is a folder; give a file name such as {path / 'ssd-doctor-report.md'}")
    if not path.exists():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline().rstrip("\n")
    except OSError as exc:
        raise UsageError(f"--report {path}: exists and cannot be read ({exc}); give another path") from None
    if first != TITLE:
        raise UsageError(f"--report {path}: exists and is not an ssd-doctor report; it is left as it is: "
                         "give another path or remove it")
    return True


def write_report(path: Path, text: str) -> Path:
    """Write the report atomically (a crash never leaves half a report)."""
    write_text_atomic(path, text)
    return path
