"""Do two runs of one model agree? The torch-free half of parity checks, used by ssd-export
(exported ONNX against PyTorch, INT8 against FP32) and by ssd-doctor (an engine against its
ONNX): run an ONNX file on onnxruntime's CPU provider in fixed-size batches, and compare two
sets of raw outputs and their postprocessed detections. Relative errors are taken against the
reference's largest magnitude, `max|a - b| / max|b|`, so they are meaningful for logits near zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ssd_edge.runtime.backends.onnxruntime_backend import open_session
from ssd_edge.runtime.boxes import pairwise_iou
from ssd_edge.runtime.detections import Detections
from ssd_edge.runtime.postprocess.fast import postprocess
from ssd_edge.runtime.priors import default_boxes
from ssd_edge.runtime.spec import ModelSpec, SpecError

Outputs = tuple[np.ndarray, np.ndarray]  # locs (N, P, 4), confs (N, P, C)


@dataclass(frozen=True)
class OutputDifference:
    """How far one raw output is from its reference."""

    max_abs: float
    max_rel: float  # max_abs / max |reference|

    @classmethod
    def between(cls, output: np.ndarray, reference: np.ndarray) -> "OutputDifference":
        max_abs = float(np.abs(output.astype(np.float64) - reference).max())
        return cls(max_abs, max_abs / max(float(np.abs(reference).max()), 1e-12))


@dataclass(frozen=True)
class ParityReport:
    """Raw-output errors and detection agreement of a model against its reference."""

    images: int
    batch: int
    locs: OutputDifference
    confs: OutputDifference
    detections_matched: int
    detections_total: int

    @property
    def agreement(self) -> float:
        """Matched detections over the detections of the larger side (1.0 when both have none)."""
        return 1.0 if self.detections_total == 0 else self.detections_matched / self.detections_total

    def within(self, rtol: float) -> bool:
        return self.locs.max_rel <= rtol and self.confs.max_rel <= rtol

    def summary(self) -> str:
        return (
            f"{self.images} images at batch {self.batch}: "
            f"locs max abs {self.locs.max_abs:.3g} rel {self.locs.max_rel:.3g}, "
            f"confs max abs {self.confs.max_abs:.3g} rel {self.confs.max_rel:.3g}; "
            f"detections agree {self.agreement:.1%} ({self.detections_matched} of {self.detections_total})"
        )


def in_batches(run: Callable[[np.ndarray], Outputs], images: np.ndarray, batch: int) -> Outputs:
    """Run `run` over images (N, 3, H, W) in chunks of exactly `batch` (the last chunk padded
    by repeating its last image, the padding dropped from the result)."""
    locs, confs = [], []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        real = len(chunk)
        if real < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - real, axis=0)])
        out_locs, out_confs = run(chunk)
        locs.append(out_locs[:real])
        confs.append(out_confs[:real])
    return np.concatenate(locs), np.concatenate(confs)


def onnx_outputs(path: str | os.PathLike, images: np.ndarray, batch: int, session=None) -> Outputs:
    """locs (N, P, 4) and confs (N, P, C) of the ONNX model at `path` on onnxruntime CPU
    (through `session`, when the caller has opened it already)."""
    session = session or open_session(path)
    input_name = session.get_inputs()[0].name
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed != batch:
        raise SpecError(f"{path}: built for batch {fixed}, asked to run at batch {batch}")
    return in_batches(lambda x: tuple(session.run(None, {input_name: x})), images, batch)


def detections(spec: ModelSpec, outputs: Outputs, image_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
    locs, confs = outputs
    return postprocess(locs, confs, default_boxes(spec), image_sizes, spec.postprocess)


def matched_detections(ours: Detections, reference: Detections, iou_threshold: float = 0.5) -> int:
    """Greedy one-to-one matching, best reference score first: a pair needs the same label
    and IoU >= iou_threshold. Returns the number of matched pairs."""
    if len(ours.boxes) == 0 or len(reference.boxes) == 0:
        return 0
    iou = pairwise_iou(reference.boxes[None], ours.boxes[None])[0]  # (R, O)
    iou[reference.labels[:, None] != ours.labels[None, :]] = -1.0
    free = np.ones(len(ours.boxes), bool)
    matched = 0
    for r in np.argsort(-reference.scores, kind="stable"):
        candidates = np.where(free & (iou[r] >= iou_threshold))[0]
        if candidates.size:
            free[candidates[np.argmax(iou[r, candidates])]] = False
            matched += 1
    return matched


def compare(
    spec: ModelSpec,
    outputs: Outputs,
    reference: Outputs,
    image_sizes: Sequence[tuple[int, int]],
    batch: int,
) -> ParityReport:
    """Errors of `outputs` against `reference` and how well their detections agree."""
    ours, theirs = detections(spec, outputs, image_sizes), detections(spec, reference, image_sizes)
    return ParityReport(
        images=len(image_sizes),
        batch=batch,
        locs=OutputDifference.between(outputs[0], reference[0]),
        confs=OutputDifference.between(outputs[1], reference[1]),
        detections_matched=sum(matched_detections(o, t) for o, t in zip(ours, theirs)),
        detections_total=sum(max(len(o.boxes), len(t.boxes)) for o, t in zip(ours, theirs)),
    )
