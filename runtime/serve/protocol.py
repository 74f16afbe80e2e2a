"""What goes over the wire between `ssd-serve` and its clients: model, tensor and
parameter names, and the output tensors of one request, packed (server) and unpacked
(client). NumPy only, so both sides share it.

Two Triton models serve one Detector:

    <name>      input  image_bytes  BYTES (B, 1)        encoded JPEG/PNG/BMP/... files
    <name>_raw  input  image        UINT8 (B, H, W, 3)  BGR pixels, as OpenCV holds them

Both answer per image (row b of the request), padded to the most detections of any image
in that request (K >= 1):

    boxes   FP32  (B, K, 4)  xyxy in the original image's pixels
    labels  INT64 (B, K)     1..C-1 (0 in padding rows)
    scores  FP32  (B, K)     (0 in padding rows)
    confs   FP32  (B, K, C)  softmax vector of each box
    count   INT32 (B, 1)     how many of the K rows are detections
    error   BYTES (B, 1)     b"" on success, else why this request failed (every row)

Each model's config carries `parameters` (string values): class_names (JSON list,
background first), input_size (JSON [w, h]), score_threshold, iou_threshold, top_k,
max_detections.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from ssd_edge.runtime.detections import Detections

BYTES_INPUT = "image_bytes"
RAW_INPUT = "image"
RAW_SUFFIX = "_raw"
OUTPUTS = ("boxes", "labels", "scores", "confs", "count", "error")
POSTPROCESS_KEYS = ("score_threshold", "iou_threshold", "top_k", "max_detections")


def raw_model(name: str) -> str:
    """The Triton name of the raw-array model beside encoded-image model `name`."""
    return name + RAW_SUFFIX


def pack(found: Sequence[Detections], num_classes: int) -> dict[str, np.ndarray]:
    """One request's Detections (one per image) as padded output tensors."""
    rows = len(found)
    k = max([1] + [len(d.scores) for d in found])
    out = {
        "boxes": np.zeros((rows, k, 4), np.float32),
        "labels": np.zeros((rows, k), np.int64),
        "scores": np.zeros((rows, k), np.float32),
        "confs": np.zeros((rows, k, num_classes), np.float32),
        "count": np.zeros((rows, 1), np.int32),
        "error": np.full((rows, 1), b"", dtype=object),
    }
    for i, d in enumerate(found):
        n = len(d.scores)
        out["boxes"][i, :n] = d.boxes
        out["labels"][i, :n] = d.labels
        out["scores"][i, :n] = d.scores
        out["confs"][i, :n] = d.confs
        out["count"][i, 0] = n
    return out


def pack_error(rows: int, num_classes: int, message: str) -> dict[str, np.ndarray]:
    """The answer to a request that failed: no detections, `message` in every row's error
    (at least one row, so that an empty request still carries its reason)."""
    out = pack([Detections.empty(num_classes)] * max(rows, 1), num_classes)
    out["error"][:] = message.encode()
    return out


def first_error(error: np.ndarray | None) -> str | None:
    """The request's error message from its `error` output (B, 1), or None on success."""
    if error is None:
        return None
    for item in np.asarray(error).reshape(-1):
        if len(item):
            return item.decode(errors="replace") if isinstance(item, bytes) else str(item)
    return None


def unpack(outputs: Mapping[str, np.ndarray], class_names: Sequence[str]) -> list[Detections]:
    """A successful answer's tensors (name -> array) as one Detections per image."""
    boxes, labels, scores, confs, count = (outputs[name] for name in OUTPUTS[:5])
    names = tuple(class_names)
    return [
        Detections(boxes[b, :n], labels[b, :n].astype(np.int64), scores[b, :n], confs[b, :n], names)
        for b, n in enumerate(int(c) for c in count[:, 0])
    ]


def model_parameters(class_names: Sequence[str], input_size: Sequence[int], config: Any) -> dict[str, str]:
    """The model-config parameters the server publishes (`config` a PostprocessConfig)."""
    parameters = {"class_names": json.dumps(list(class_names)), "input_size": json.dumps(list(input_size))}
    parameters.update({key: str(getattr(config, key)) for key in POSTPROCESS_KEYS})
    return parameters


def read_parameters(model_config: Mapping[str, Any]) -> dict[str, str]:
    """The `parameters` of a model config as Triton returns it in JSON: name -> string."""
    found = model_config.get("parameters", {}) or {}
    return {key: value.get("string_value", "") for key, value in found.items() if isinstance(value, Mapping)}
