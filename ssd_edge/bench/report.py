"""ssd-bench's report as a terminal table, markdown and JSON (the same numbers in each).

The report is plain data (see `ssd_edge.bench.run.run_bench`): `machine`, `settings`,
`subjects`, `results` (one row per subject and batch size, from `bench.summarize`), and
`accuracy` when a dataset was given.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssd_edge.bench.machine import gpu_text
from ssd_edge.runtime.stage_timer import STAGES

STAGE_HEADERS = {"preprocess": "pre", "host_to_device": "h2d", "network": "net", "device_to_host": "d2h",
                 "decode_nms": "nms", "other": "other"}
NOT_SEPARATE_MARK = "0*"
NOT_SEPARATE_NOTE = ("0* : not a separate step on this backend, so 0 by construction (on the CPU the network reads "
                     "and writes host memory; onnxruntime's CUDA provider copies inside `net`)")
TIMED = ("latency: one call, BGR uint8 images in memory -> final detections, wall clock; stages (mean ms per call): "
         "pre = resize + BGR->RGB + scale, h2d / d2h = copies to / from the GPU, net = the network, "
         "nms = decode + NMS to final detections, other = the rest of the call")


def display_name(row: dict) -> str:
    return Path(row["name"]).name if row["kind"] == "model" else row["name"]


def stage_cells(row: dict, digits: int = 2) -> list[str]:
    cells = []
    for stage in (*STAGES, "other"):
        if stage in row["stages_not_separate"]:
            cells.append(NOT_SEPARATE_MARK)
        else:
            cells.append(f"{row['stages_ms'][stage]:.{digits}f}")
    return cells


def ratio_cells(row: dict, peers: list[str]) -> list[str]:
    return [f"{row['vs'][p]:.2f}x" if p in row["vs"] else "-" for p in peers]


def peer_labels(report: dict) -> list[str]:
    labels: list[str] = []
    for row in report["results"]:
        labels += [label for label in row["vs"] if label not in labels]
    return labels


def _row_cells(row: dict, peers: list[str]) -> list[str]:
    latency = row["latency_ms"]
    return [
        display_name(row), row["format"], row["backend"], str(row["batch"]),
        *(f"{latency[k]:.2f}" for k in ("p50", "p90", "p99", "mean")), f"{row['images_per_s']:.1f}",
        *stage_cells(row), *ratio_cells(row, peers),
    ]


def _headers(peers: list[str]) -> list[str]:
    return ["model", "format", "backend", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "img/s",
            *(STAGE_HEADERS[s] for s in (*STAGES, "other")), *(f"vs {p}" for p in peers)]


def machine_text(machine: dict, threads: int) -> str:
    """One line: CPU, cores, threads used, GPU, library versions."""
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    return (f"{machine['cpu']} ({machine['cores']} logical cores), threads {threads}; "
            f"GPU: {gpu_text(machine)}; {versions}")


def settings_line(report: dict) -> str:
    s = report["settings"]
    return (f"{s['warmup']} warm-up + {s['runs']} timed calls per model and batch, interleaved in rounds; "
            f"source: {s['source']} ({s['images']} images); load average {s['load_average_start']:.2f} at start, "
            f"{s['load_average_end']:.2f} at end")


def terminal(report: dict, machine: bool = True) -> str:
    """The machine first (unless `machine` is False: ssd-bench prints it before the run), then
    the latency table, its notes and the accuracy table."""
    peers = peer_labels(report)
    rows = [_headers(peers)] + [_row_cells(r, peers) for r in report["results"]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    machine_line = f"machine: {machine_text(report['machine'], report['settings']['threads'])}"
    lines = [*([machine_line] if machine else []), f"timing: {settings_line(report)}", ""]
    for n, cells in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
        if n == 0:
            lines.append("-" * len(lines[-1]))
    lines += ["", TIMED, NOT_SEPARATE_NOTE, *notes(report)]
    if report.get("accuracy"):
        lines += ["", accuracy_text(report)]
    return "\n".join(lines)


def notes(report: dict) -> list[str]:
    return [f"{s['label']}: {s['note']}" for s in report["subjects"] if s.get("note")]


def accuracy_rows(report: dict) -> list[list[str]]:
    """Ultralytics' benchmark table (format, size, mAP50-95, mAP50, ms/image, FPS) with the
    p90 / p99 per image, from the smallest batch measured."""
    table = []
    for entry in report["accuracy"]:
        candidates = [r for r in report["results"] if r["name"] == entry["name"]]
        row = min(candidates, key=lambda r: r["batch"])
        per_image = {k: row["latency_ms"][k] / row["batch"] for k in ("mean", "p90", "p99")}
        size = f"{entry['size_mb']:.1f}" if entry.get("size_mb") is not None else "-"
        table.append([
            display_name(row), row["format"], size, f"{entry['AP']:.3f}", f"{entry['AP50']:.3f}",
            f"{per_image['mean']:.2f}", f"{1e3 / per_image['mean']:.1f}", f"{per_image['p90']:.2f}",
            f"{per_image['p99']:.2f}",
        ])
    return table


ACCURACY_HEADERS = ["model", "format", "size MB", "mAP50-95", "mAP50", "ms/image", "FPS", "p90 ms", "p99 ms"]


def accuracy_text(report: dict) -> str:
    rows = [ACCURACY_HEADERS] + accuracy_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"accuracy on {report['settings']['data']} (pycocotools, as ssd-eval; latency from the table above):"]
    for n, cells in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))))
        if n == 0:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines)


def _markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(report: dict, title: str = "ssd-bench") -> str:
    from ssd_edge.bench.machine import markdown as machine_markdown

    peers = peer_labels(report)
    settings = report["settings"]
    lines = [
        f"# {title}", "",
        machine_markdown(report["machine"]),
        f"- threads: {settings['threads']} (onnxruntime intra-op, OpenVINO INFERENCE_NUM_THREADS, whose default "
        "on the CPU is one per physical core or 1 while 1 is faster; torch.set_num_threads for the PyTorch peers)",
        f"- {settings_line(report)}",
        f"- command: `{settings['command']}`", "",
        *_markdown_table(_headers(peers), [_row_cells(r, peers) for r in report["results"]]), "",
        f"- {TIMED}", f"- {NOT_SEPARATE_NOTE}",
        *(f"- {n}" for n in notes(report)),
    ]
    if report.get("accuracy"):
        lines += ["", f"Accuracy on `{settings['data']}` (pycocotools, as ssd-eval):", "",
                  *_markdown_table(ACCURACY_HEADERS, accuracy_rows(report))]
    return "\n".join(lines) + "\n"


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False) + "\n"
