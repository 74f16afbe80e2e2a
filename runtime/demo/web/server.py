"""`WebViewer`: the demo's web page, a DemoObserver that serves the live annotated video and
the detections to browsers (`ssd-demo --web [HOST:]PORT`).

    viewer = WebViewer(parse_web_address("0.0.0.0:8080"), token=None)  # a token is generated
    print(viewer.url)  # http://127.0.0.1:8080/?token=...
    run_demo(settings, observers=[viewer])  # closes it at the end

Served (each request needs the token when there is one: ?token=, or Authorization: Bearer):
  /                    the page: the video of every source in a grid, detections, tracks,
                       counts, frame rate and latency plot (no external assets, no CDN)
  /video/N.mjpg        source N's annotated video, MJPEG (multipart/x-mixed-replace)
  /snapshot/N.jpg      one JPEG of source N's next frame (503 when none comes within 2 s)
  /events              the state as JSON, pushed by Server-Sent Events (at most events_hz a second,
                       at least once a second)
  /api/state           the same JSON, once, for scripts

The HTTP stack is the standard library's ThreadingHTTPServer, chosen for the long run of a
device: it adds no dependency to the Jetson's minimal install (nothing to pin against
JetPack's Python, nothing to break on an upgrade, maintained with Python itself), and what
the page needs are plain long HTTP responses (MJPEG and Server-Sent Events, no WebSocket
upgrade) for a handful of viewers, where a thread per connection is simple and cheap. An
asyncio stack (aiohttp, Starlette/uvicorn) would earn its dependency with hundreds of
connections or WebRTC, neither of which a camera demo has. http.server does no security
checks of its own, so this module makes them: loopback by default, a token checked on every
request otherwise, the Host header checked on loopback (DNS rebinding), a bounded number of
connections and of viewers (503 beyond), a send timeout that drops a stalled viewer, no
server or Python version in the headers, a strict Content-Security-Policy on the page.

Bounded: the loop only hands frames to the FrameHub (runtime/demo/web/hub.py); one encoder
thread makes each JPEG once; each viewer's thread sends the newest JPEG when its socket takes
it, so a slow or stalled browser loses frames, never the loop. close() stops everything
within a second, stalled connections included (their sockets are shut down).
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
import select
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ssd_edge.common.errors import SSDEdgeError, UsageError
from ssd_edge.runtime.demo.web.address import WebAddress, is_loopback
from ssd_edge.runtime.demo.web.hub import FrameHub

BOUNDARY = "ssdframe"
IDLE_PUSH_S = 1.0  # with no new frame, the state is pushed this often all the same (its ages grow)
CLOSE_GRACE_S = 0.3  # at close, how long streams may take to send their last state and end before being cut
# A video viewer's socket holds about this much unsent (Linux grows it to megabytes otherwise):
# a slow viewer sees frames at most a picture or two behind, and a stalled one holds little memory.
# 256 KiB still carries 12 MB/s over a link with a 20 ms round trip.
VIDEO_SEND_BUFFER = 256 * 1024
_VIDEO = re.compile(r"/video/(\d{1,4})\.mjpg")
_SNAPSHOT = re.compile(r"/snapshot/(\d{1,4})\.jpg")
_PAGE_CSP = ("default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
             "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class WebViewerError(SSDEdgeError, OSError):
    """The web viewer cannot listen where it was asked to (port taken, address not here)."""


@dataclass(frozen=True)
class WebViewerConfig:
    """max_viewers: video streams per source, and event streams, each at most this many (one
    page opens one event stream and one video per source); more get 503. video_fps: JPEGs
    made per second and source, at most. events_hz: state pushes per second and viewer, at
    most. stall_timeout_s: a viewer whose socket takes nothing for this long is dropped."""

    max_viewers: int = 4
    video_fps: float = 25.0
    jpeg_quality: int = 80
    events_hz: float = 10.0
    stall_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_viewers <= 64:
            raise UsageError(f"the web viewer's max_viewers must be 1-64, got {self.max_viewers}")
        if not 1 <= self.jpeg_quality <= 100:
            raise UsageError(f"the web viewer's jpeg_quality must be 1-100, got {self.jpeg_quality}")
        for name in ("video_fps", "events_hz", "stall_timeout_s"):
            if not getattr(self, name) > 0:
                raise UsageError(f"the web viewer's {name} must be positive, got {getattr(self, name)}")

    def max_connections(self, sources: int) -> int:
        """Open connections at most with `sources` sources: every viewer's streams (events and
        a video per source) and 8 more (page loads, API calls); beyond, 503 at once."""
        return self.max_viewers * (max(sources, 1) + 1) + 8


class WebViewer:
    """A DemoObserver serving the demo to browsers at `address`. token: what every request
    must carry (None: none, allowed on loopback only; see address.access_token). Listens from
    construction (WebViewerError when it cannot) until close()."""

    def __init__(self, address: WebAddress, token: str | None, config: WebViewerConfig = WebViewerConfig()) -> None:
        if token is None and not address.loopback:
            raise UsageError(f"--web {address.host}: an address beyond loopback needs an access token")
        self.address, self.token, self.config = address, token, config
        self.hub = FrameHub(config.video_fps, config.jpeg_quality)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._streams: dict[str, int] = {}
        self.frames_sent = 0
        self.frames_dropped = 0  # frames a viewer did not get because it was not ready for them
        self.refused = 0
        try:
            self._server = _Server(address, self)
        except OSError as exc:
            self.hub.close()
            raise WebViewerError(f"--web {address.host}:{address.port}: cannot listen there: {exc.strerror or exc}")
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="ssd-demo-web", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return self.address.url(self.port, self.token)

    def describe(self, generated: bool = False) -> str:
        """The line to print at start: where to point a browser, and how the token came."""
        if self.token is None:
            return (f"web viewer (this machine only; from a laptop: ssh -N -L {self.port}:127.0.0.1:{self.port} "
                    f"<this device>, then open the same URL there): {self.url}")
        how = ("access token generated for this run (--web-token or $SSD_DEMO_WEB_TOKEN keep one)" if generated
               else "access token required")
        elsewhere = (" (from another machine, this machine's address in place of the host)"
                     if self.address.host in ("0.0.0.0", "::") else "")
        return f"web viewer on {self.address.host}:{self.port}, {how}{elsewhere}: {self.url}"

    def on_frame(self, source: int, annotated_bgr: np.ndarray, record: dict[str, Any]) -> None:
        if not self._closing.is_set():
            self.hub.on_frame(source, annotated_bgr, record)

    def on_source(self, source: int, event: str, detail: str) -> None:
        """A source's capture event (the loop's optional observer hook): shown on the page."""
        if not self._closing.is_set():
            self.hub.on_source(source, event, detail)

    def viewers(self) -> dict[str, int]:
        with self._lock:
            return {"video": sum(n for key, n in self._streams.items() if key != "events"),
                    "events": self._streams.get("events", 0), "max": self.config.max_viewers,
                    "frames_sent": self.frames_sent, "frames_dropped": self.frames_dropped,
                    "refused": self.refused}

    def close(self) -> None:
        """Stop serving: every stream ends, stalled ones too; returns within about a second."""
        if self._closing.is_set():
            return
        self._closing.set()
        self.hub.close()
        deadline = time.monotonic() + 1.0
        with self._lock:
            connections = dict(self._connections)
        grace = time.monotonic() + CLOSE_GRACE_S  # streams send their last state and end by themselves
        for thread in connections.values():
            thread.join(timeout=max(0.0, grace - time.monotonic()))
        for connection in connections:
            _shut(connection)  # a send blocked on a stalled client fails at once
        self._server.shutdown()  # serve_forever polls every 0.1 s
        self._server.server_close()
        for thread in [self._thread, *connections.values()]:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- bookkeeping for the request threads ------------------------------------------------------

    def _admit(self, connection: socket.socket) -> bool:
        limit = self.config.max_connections(len(self.hub.sources()))
        with self._lock:
            if self._closing.is_set() or len(self._connections) >= limit:
                self.refused += 1
                return False
            self._connections[connection] = threading.current_thread()
            return True

    def _started(self, connection: socket.socket) -> None:
        with self._lock:
            if connection in self._connections:
                self._connections[connection] = threading.current_thread()

    def _forget(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(connection, None)

    def _take_stream(self, key: str) -> bool:
        with self._lock:
            if self._streams.get(key, 0) >= self.config.max_viewers:
                self.refused += 1
                return False
            self._streams[key] = self._streams.get(key, 0) + 1
            return True

    def _give_stream(self, key: str) -> None:
        with self._lock:
            self._streams[key] -= 1

    def _count(self, sent: int, dropped: int) -> None:
        with self._lock:
            self.frames_sent += sent
            self.frames_dropped += dropped


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # WebViewer.close joins the request threads, with a deadline

    def __init__(self, address: WebAddress, viewer: WebViewer) -> None:
        self.viewer = viewer
        self.address_family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        super().__init__((address.host, address.port), _Handler)

    def server_bind(self) -> None:  # HTTPServer's looks up the host name (slow without DNS); not needed
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        if not self.viewer._admit(request):
            try:  # a fresh socket's send buffer is empty: this does not block
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:
        self.viewer._started(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.viewer._forget(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a viewer that went away mid-response is normal; nothing to report


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "ssd-demo"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.viewer.config.stall_timeout_s  # reads and sends: a stalled peer is dropped
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the demo's own status lines say what matters

    def do_GET(self) -> None:
        viewer = self.server.viewer
        url = urlsplit(self.path)
        refused = self._refusal(viewer, url.query)
        if refused is not None:
            self._send_plain(*refused)
            return
        path = url.path
        video, snapshot = _VIDEO.fullmatch(path), _SNAPSHOT.fullmatch(path)
        try:
            if path in ("/", "/index.html"):
                self._page()
            elif path == "/api/state":
                self._send(HTTPStatus.OK, "application/json", viewer.hub.state_json({"viewers": viewer.viewers()}))
            elif path == "/events":
                self._stream("events", self._events)
            elif video and int(video[1]) in viewer.hub.sources():
                self._stream(f"video/{int(video[1])}", lambda: self._video(int(video[1])))
            elif snapshot and int(snapshot[1]) in viewer.hub.sources():
                self._snapshot(int(snapshot[1]))
            else:
                self._send_plain(HTTPStatus.NOT_FOUND, "not found")
        except OSError:  # the viewer went away, or close() shut its socket
            self.close_connection = True

    # -- access ---------------------------------------------------------------------------------

    def _refusal(self, viewer: WebViewer, query: str) -> tuple[HTTPStatus, str] | None:
        """(status, text) to refuse this request with, or None to serve it. The text says
        nothing about the camera."""
        if viewer.token is None:  # loopback only: refuse pages that reach us through another name
            host = urlsplit("//" + self.headers.get("Host", "")).hostname or ""
            if not is_loopback(host):
                return HTTPStatus.FORBIDDEN, "forbidden: use http://127.0.0.1 (or localhost) to reach this viewer"
            return None
        given = parse_qs(query).get("token", [None])[0]
        authorization = self.headers.get("Authorization", "")
        if given is None and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
        if not given:
            return HTTPStatus.UNAUTHORIZED, "unauthorized: this viewer needs its access token (?token=...)"
        if not hmac.compare_digest(given.encode(), viewer.token.encode()):
            return HTTPStatus.FORBIDDEN, "forbidden: wrong access token"
        return None

    # -- responses ------------------------------------------------------------------------------

    def _page(self) -> None:
        nonce = secrets.token_urlsafe(16)
        body = _page_html().replace("__NONCE__", nonce).encode()
        self._send(HTTPStatus.OK, "text/html; charset=utf-8", body, {"Content-Security-Policy": _PAGE_CSP.format(
            nonce=nonce), "Referrer-Policy": "no-referrer"})

    def _snapshot(self, source: int) -> None:
        jpeg = self.server.viewer.hub.snapshot(source)
        if jpeg is None:
            self._send_plain(HTTPStatus.SERVICE_UNAVAILABLE, "no frame yet")
        else:
            self._send(HTTPStatus.OK, "image/jpeg", jpeg)

    def _stream(self, key: str, serve) -> None:
        viewer = self.server.viewer
        if not viewer._take_stream(key):
            self._send_plain(HTTPStatus.SERVICE_UNAVAILABLE,
                             f"too many viewers (at most {viewer.config.max_viewers}); try again later")
            return
        try:
            serve()
        finally:
            viewer._give_stream(key)
            self.close_connection = True

    def _video(self, source: int) -> None:
        viewer = self.server.viewer
        last = sent = dropped = 0
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIDEO_SEND_BUFFER)
            with viewer.hub.watch(source):  # before the answer: the next frame is kept for this viewer
                self._start_stream(f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.wfile.write(f"--{BOUNDARY}\r\n".encode())
                while not viewer._closing.is_set():
                    found = viewer.hub.wait_jpeg(source, after=last, timeout=1.0)
                    if found is None:  # no new frame for a second (a source reconnecting...)
                        if self._peer_gone():
                            return
                        continue
                    jpeg, seq = found
                    # the next boundary right after the picture: browsers show a part when it ends
                    self.wfile.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n--%s\r\n"
                                     % (len(jpeg), jpeg, BOUNDARY.encode()))
                    if sent:
                        dropped += max(0, seq - last - 1)
                    sent, last = sent + 1, seq
        finally:
            viewer._count(sent, dropped)

    def _events(self) -> None:
        viewer = self.server.viewer
        self._start_stream("text/event-stream")
        self.wfile.write(b"retry: 2000\n\n")
        period, last_seq, last_sent = 1.0 / viewer.config.events_hz, -1, time.monotonic()
        while not viewer._closing.is_set():
            seq = viewer.hub.state_seq
            if seq != last_seq or time.monotonic() - last_sent >= IDLE_PUSH_S:  # a stalled source shows
                data = viewer.hub.state_json({"viewers": viewer.viewers()})
                self.wfile.write(b"data: " + data + b"\n\n")
                last_seq, last_sent = seq, time.monotonic()
            elif self._peer_gone():
                return
            viewer._closing.wait(period)
        if viewer.hub.state_seq != last_seq:  # the demo ended: its last state (final counts) still goes out
            self.wfile.write(b"data: " + viewer.hub.state_json({"viewers": viewer.viewers()}) + b"\n\n")

    def _peer_gone(self) -> bool:
        """The viewer closed its side (noticed without sending: its slot is freed even while
        there is nothing new to send)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True

    def _start_stream(self, content_type: str) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status: HTTPStatus, content_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status == HTTPStatus.UNAUTHORIZED:
            self.send_header("WWW-Authenticate", 'Bearer realm="ssd-demo"')
        self.end_headers()
        self.wfile.write(body)

    def _send_plain(self, status: HTTPStatus, text: str) -> None:
        self._send(status, "text/plain; charset=utf-8", (text + "\n").encode())


@functools.lru_cache(maxsize=1)
def _page_html() -> str:
    return resources.files("ssd_edge.runtime.demo.web").joinpath("page.html").read_text(encoding="utf-8")


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
