"""The inference function Triton calls (through PyTriton) with a batch of requests.

One `DetectorModel` per model instance owns one Detector. PyTriton hands it the requests
Triton's dynamic batcher grouped (a list, one dict of input tensors per request); all
usable images of all of them go through the Detector as one list, which is one network
batch when the model's batch axis is dynamic. A request whose inputs are unusable gets its
reason in its `error` output and never reaches the network; the others are answered as
usual. Only a fault of the server itself (the network failing) raises, which fails every
request of that execution: PyTriton cannot fail one request of a batch.
"""

from __future__ import annotations

import functools
import threading
from collections import Counter
from typing import Callable, Mapping, Sequence

import numpy as np

from ssd_edge.runtime.detector import Detector
from ssd_edge.runtime.serve.inputs import RequestError, images_from_array, images_from_bytes
from ssd_edge.runtime.serve.protocol import BYTES_INPUT, RAW_INPUT, pack, pack_error


class BatchLog:
    """Thread-safe counts of what each execution got: {images: executions} and
    {requests: executions}."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.images: Counter[int] = Counter()
        self.requests: Counter[int] = Counter()

    def record(self, requests: int, images: int) -> None:
        with self._lock:
            self.requests[requests] += 1
            self.images[images] += 1

    def snapshot(self) -> dict[str, dict[int, int]]:
        with self._lock:
            return {"images": dict(sorted(self.images.items())), "requests": dict(sorted(self.requests.items()))}


class DetectorModel:
    """requests -> responses for one Triton model (`input_name` says which: encoded files
    in BYTES_INPUT, or BGR pixels in RAW_INPUT) on one Detector. max_megapixels: the most
    pixels of one encoded image (its header is read first; None: no limit)."""

    def __init__(self, detector: Detector, input_name: str, batch_log: BatchLog | None = None,
                 max_megapixels: float | None = None) -> None:
        readers: dict[str, Callable[[np.ndarray], list[np.ndarray]]] = {
            BYTES_INPUT: functools.partial(images_from_bytes, max_megapixels=max_megapixels),
            RAW_INPUT: images_from_array,
        }
        if input_name not in readers:
            raise ValueError(f"input_name must be one of {sorted(readers)}, got {input_name!r}")
        self.detector = detector
        self.input_name = input_name
        self._read = readers[input_name]
        self.batch_log = batch_log
        self.num_classes = len(detector.class_names)

    def __call__(self, requests: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        per_request: list[list[np.ndarray] | str] = []
        for request in requests:
            try:
                per_request.append(self._read(np.asarray(request[self.input_name])))
            except KeyError:
                per_request.append(f"missing input {self.input_name!r}")
            except RequestError as exc:
                per_request.append(str(exc))
        images = [image for item in per_request if not isinstance(item, str) for image in item]
        if self.batch_log is not None:
            self.batch_log.record(len(requests), len(images))
        found = iter(self.detector(images) if images else [])
        responses = []
        for request, item in zip(requests, per_request):
            if isinstance(item, str):
                rows = len(request[self.input_name]) if self.input_name in request else 1
                responses.append(pack_error(rows, self.num_classes, item))
            else:
                responses.append(pack([next(found) for _ in item], self.num_classes))
        return responses
