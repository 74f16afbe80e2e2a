"""`DetectionClient`: send images to `ssd-serve`, get Detections back, as from a Detector.

    from ssd_edge.runtime.serve.client import DetectionClient

    with DetectionClient("127.0.0.1:8000") as client:      # "grpc://127.0.0.1:8001" for gRPC
        found = client(image_bgr)                          # Detections
        found = client(["a.jpg", image_bgr, jpeg_bytes])   # [Detections], in order

Needs only `tritonclient` (extra `serve-client`), which works with numpy 2. Paths and
`bytes` travel as they are to model `<name>` (the server decodes them as `read_image`
does); BGR arrays travel raw to `<name>_raw` (one request per distinct image size, since a
request is one (B, H, W, 3) tensor), or encoded first with `encode=".png"` (lossless) or
".jpg" (smaller, lossy). Detections come back as the Detector gives them: boxes (N, 4) xyxy
in the original image's pixels, labels (N,), scores (N,), confs (N, C), class names from
the server's model config.

score_threshold: keep only detections scoring above it, on the client. That equals the
server running with that threshold (NMS, top-k and the per-image cap all keep the highest
scores first), so it may only raise the server's threshold, never lower it.

One client holds one connection: use one per thread. A client is a `Predictor`
(runtime/predictor.py), which also opens one: `open_predictor(server=...)`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ssd_edge.common.errors import SSDEdgeError, UsageError, require
from ssd_edge.runtime.detections import Detections, PostprocessConfig
from ssd_edge.runtime.image_io import encode_image
from ssd_edge.runtime.serve.protocol import (
    BYTES_INPUT,
    OUTPUTS,
    RAW_INPUT,
    first_error,
    raw_model,
    read_parameters,
    unpack,
)

Item = Union[np.ndarray, bytes, str, os.PathLike]
PROTOCOLS = {"http": 8000, "grpc": 8001}


class ServeRequestError(SSDEdgeError, RuntimeError):
    """The server refused or failed a request, or cannot be reached; the message says why."""


def parse_server(address: str) -> tuple[str, str]:
    """"HOST:PORT" (HTTP), "http://HOST:PORT" or "grpc://HOST:PORT" -> (protocol, "HOST:PORT");
    a missing port is the protocol's default (8000 / 8001)."""
    protocol, _, rest = address.rpartition("://")
    protocol = protocol or "http"
    if protocol not in PROTOCOLS:
        raise UsageError(f"server {address!r}: unknown protocol {protocol!r}; use http:// or grpc://")
    host, _, port = rest.rstrip("/").partition(":")
    if not host or (port and not port.isdigit()):
        raise UsageError(f"server {address!r}: expected HOST:PORT, e.g. 127.0.0.1:{PROTOCOLS[protocol]}")
    return protocol, f"{host}:{port or PROTOCOLS[protocol]}"


class DetectionClient:
    """A connection to `ssd-serve` at `address` (see `parse_server`).

    model_name: the server's --name (raw arrays go to `<model_name>_raw`).
    encode: None (arrays raw) or a suffix (".png", ".jpg") to encode arrays before sending.
    score_threshold: see the module docstring. timeout_s: per request.
    """

    def __init__(
        self,
        address: str,
        model_name: str = "ssd",
        encode: str | None = None,
        score_threshold: float | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.protocol, self.url = parse_server(address)
        self.model_name, self.encode, self.timeout_s = model_name, encode, timeout_s
        require("tritonclient", "serve-client", "a client of ssd-serve")
        if self.protocol == "http":
            import tritonclient.http as tc

            self._client = tc.InferenceServerClient(self.url, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            import tritonclient.grpc as tc

            self._client = tc.InferenceServerClient(self.url)
        from tritonclient.utils import InferenceServerException

        self._tc, self._server_error = tc, InferenceServerException
        self._parameters: dict[str, str] | None = None
        self._threshold = score_threshold
        if score_threshold is not None and score_threshold < self.server_config.score_threshold:
            raise UsageError(
                f"score_threshold {score_threshold} is below the server's {self.server_config.score_threshold}: "
                "a client can only raise it; start ssd-serve with a lower --score-threshold"
            )

    # --- the server's facts

    def is_ready(self) -> bool:
        """Whether the server answers and both models are loaded."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model_name)
                        and self._client.is_model_ready(raw_model(self.model_name)))
        except Exception:  # noqa: BLE001 - connection refused, reset, ...: not ready
            return False

    def model_config(self, model_name: str | None = None) -> dict:
        """Triton's config of a model, as JSON (dict)."""
        name = model_name or self.model_name
        try:
            if self.protocol == "http":
                return self._client.get_model_config(name)
            return self._client.get_model_config(name, as_json=True)["config"]
        except (self._server_error, OSError) as exc:
            raise ServeRequestError(f"{self.url}: no model config for {name!r}: {_reason(exc)}") from exc

    @property
    def parameters(self) -> dict[str, str]:
        """The model's published parameters (see `protocol`), read once."""
        if self._parameters is None:
            self._parameters = read_parameters(self.model_config())
            if "class_names" not in self._parameters:
                raise ServeRequestError(f"{self.url}: model {self.model_name!r} publishes no class names; "
                                        "is it an ssd-serve model?")
        return self._parameters

    @property
    def class_names(self) -> tuple[str, ...]:
        """All class names, background first."""
        return tuple(json.loads(self.parameters["class_names"]))

    @property
    def server_config(self) -> PostprocessConfig:
        """The postprocessing the server runs."""
        p = self.parameters
        return PostprocessConfig(score_threshold=float(p["score_threshold"]), iou_threshold=float(p["iou_threshold"]),
                                 top_k=int(p["top_k"]), max_detections=int(p["max_detections"]))

    @property
    def config(self) -> PostprocessConfig:
        """The postprocessing in effect: the server's, with this client's score threshold."""
        server = self.server_config
        return server if self._threshold is None else server.replace(score_threshold=self._threshold)

    @property
    def backend(self) -> str:
        return f"ssd-serve {self.protocol}://{self.url} model {self.model_name}"

    def statistics(self, model_name: str | None = None) -> dict[int, int]:
        """Executions per batch size (images) Triton formed for a model so far: {size: count}."""
        name = model_name or self.model_name
        try:
            if self.protocol == "http":
                stats = self._client.get_inference_statistics(name)
            else:
                stats = self._client.get_inference_statistics(name, as_json=True)
        except (self._server_error, OSError) as exc:
            raise ServeRequestError(f"{self.url}: no statistics for {name!r}: {_reason(exc)}") from exc
        out: dict[int, int] = {}
        for model in stats.get("model_stats", []):
            for entry in model.get("batch_stats", []):
                size = int(entry["batch_size"])
                out[size] = out.get(size, 0) + int(entry["compute_infer"]["count"])
        return out

    # --- detection

    def __call__(self, images: Item | Sequence[Item]) -> Detections | list[Detections]:
        """Detections of one image, or a list of them for a list (in order)."""
        single = isinstance(images, (np.ndarray, bytes, str, os.PathLike))
        batch = [images] if single else list(images)
        if not batch:
            raise UsageError("no images to detect in (empty list)")
        found: list[Detections | None] = [None] * len(batch)
        encoded: list[tuple[int, bytes]] = []
        raw: dict[tuple[int, ...], list[int]] = {}
        for i, item in enumerate(batch):
            if isinstance(item, (str, os.PathLike)):
                encoded.append((i, _file_bytes(Path(item))))
            elif isinstance(item, bytes):
                encoded.append((i, item))
            elif isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] == 3:
                if self.encode:
                    encoded.append((i, encode_image(item, self.encode, f"image {i}")))
                else:
                    raw.setdefault(item.shape, []).append(i)
            else:
                shown = f"{item.dtype} {item.shape}" if isinstance(item, np.ndarray) else type(item).__name__
                raise UsageError(f"image {i}: expected a BGR uint8 (H, W, 3) array, bytes or a path, got {shown}")
        if encoded:
            tensor = np.empty((len(encoded), 1), dtype=object)
            tensor[:, 0] = [data for _, data in encoded]
            for (i, _), d in zip(encoded, self._infer(self.model_name, BYTES_INPUT, "BYTES", tensor)):
                found[i] = d
        for indices in raw.values():
            tensor = np.ascontiguousarray(np.stack([batch[i] for i in indices]))
            for i, d in zip(indices, self._infer(raw_model(self.model_name), RAW_INPUT, "UINT8", tensor)):
                found[i] = d
        return found[0] if single else found  # type: ignore[return-value]

    def _infer(self, model: str, input_name: str, datatype: str, tensor: np.ndarray) -> list[Detections]:
        tc = self._tc
        request = tc.InferInput(input_name, list(tensor.shape), datatype)
        request.set_data_from_numpy(tensor)
        wanted = [tc.InferRequestedOutput(name) for name in OUTPUTS]
        extra = {} if self.protocol == "http" else {"client_timeout": self.timeout_s}
        try:
            result = self._client.infer(model, [request], outputs=wanted, **extra)
        except (self._server_error, OSError) as exc:
            raise ServeRequestError(f"{self.url} model {model!r}: {_reason(exc)}") from exc
        message = first_error(result.as_numpy("error"))
        if message:
            raise ServeRequestError(f"{self.url} model {model!r}: {message}")
        found = unpack({name: result.as_numpy(name) for name in OUTPUTS}, self.class_names)
        return found if self._threshold is None else [_above(d, self._threshold) for d in found]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "DetectionClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _reason(exc: Exception) -> str:
    """What went wrong, from tritonclient's exception or a socket's."""
    if isinstance(exc, OSError):
        return f"cannot reach the server ({exc.strerror or exc})"
    return exc.message() or str(exc)


def _file_bytes(path: Path) -> bytes:
    from ssd_edge.runtime.image_io import ImageError, shown_path

    if not path.is_file():
        raise ImageError(f"{shown_path(path)}: no such image file")
    return path.read_bytes()


def _above(found: Detections, threshold: float) -> Detections:
    keep = found.scores > np.float32(threshold)
    return Detections(found.boxes[keep], found.labels[keep], found.scores[keep], found.confs[keep],
                      found.class_names)

