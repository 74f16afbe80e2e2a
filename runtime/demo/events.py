"""ssd-demo --mqtt: the demo's events as JSON to an MQTT broker (paho-mqtt, the demo-mqtt extra).

    publisher = MqttPublisher("broker.local", 1883, prefix="ssd-edge/jetson-1", sources=["0", "rtsp://cam/2"])
    run_demo(settings, observers=[publisher])      # closed by run_demo

Topics (N: the source's number, 0 for the first --source) and payloads, all QoS 1:

    <prefix>/status             {"seq", "state": "online"|"offline", "time", "sources": [...]}
                                retained; "offline" without seq is the broker's last will (the
                                demo died without closing)
    <prefix>/source/N/crossing  {"seq", "source", "frame", "time", "id", "label", "name",
                                 "direction": "left_to_right"|"right_to_left"|"top_to_bottom"|"bottom_to_top", "counts"}
    <prefix>/source/N/enter     {"seq", "source", "frame", "time", "id", "label", "name"}
    <prefix>/source/N/leave     same fields as enter
    <prefix>/source/N/health    {"seq", "source", "time", "state", "event", "detail", "fps",
                                 "frames", "latency_ms", "dropped_events", "queued_events",
                                 "broker_reconnects"}

frame: the source's frame number (as "source_frame" in the log); time: the wall clock in
seconds when the detections were ready; seq: one counter over every message of the run,
so a gap at a subscriber is an event that was dropped. enter: a track is confirmed (first
reported); leave: the tracker removed it (see loop.Presence); crossing: a track crossed
the source's counting line (counts: every crossing so far). health is sent every
`health_every_s` (event "periodic") and when a source drops out ("dropped"), comes back
("reconnected"), is lost for good ("lost") or ends ("ended"); state is "starting",
"live", "reconnecting", "lost" or "ended"; fps is the source's processed frames per
second since the previous health message; dropped_events counts the events dropped so far
(the queue was full while the broker was away); queued_events those accepted and not yet
acknowledged by the broker.

Delivery: paho's network thread sends, receives acknowledgements and reconnects (backoff
from reconnect_min_s to reconnect_max_s); `on_frame` and `on_source` only put messages
into paho's outgoing queue, bounded at `max_queued` messages (in flight included): while
the broker is away the queue fills, and what does not fit is dropped, counted and reported
(in every health message and at close). Messages in the queue are sent once the broker is
back (QoS 1: at least once; a subscriber may see a message twice after a reconnection, with
the same seq). Across a reconnection paho may send a message made just after it before the
ones that waited (measured here), so a subscriber that needs the order sorts by seq.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from ssd_edge.common.errors import SSDEdgeError, UsageError, require

DEFAULT_PORT = 1883
QOS = 1
CLOSE_DRAIN_S = 3.0  # at close, how long the queued events may take to reach the broker


class MqttError(SSDEdgeError, RuntimeError):
    """The MQTT publisher cannot be set up (the message names the broker and the problem)."""


def parse_broker(text: str) -> tuple[str, int]:
    """'HOST[:PORT]' (an IPv6 address in brackets: [::1]:1883) -> (host, port); ValueError
    naming the problem otherwise."""
    text = text.strip()
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?|([^:\s\[\]]+)(?::(\d+))?", text)
    if not match:
        raise ValueError(f"an MQTT broker is HOST or HOST:PORT, got {text!r}")
    host = match.group(1) or match.group(3)
    port_text = match.group(2) or match.group(4)
    port = int(port_text) if port_text else DEFAULT_PORT
    if not 0 < port < 65536:
        raise ValueError(f"MQTT port {port} in {text!r} is not between 1 and 65535")
    return host, port


def default_prefix() -> str:
    """ssd-edge/<this device's host name> (characters MQTT topics reserve replaced)."""
    return "ssd-edge/" + (re.sub(r"[/#+\s]", "-", socket.gethostname()) or "device")


def check_prefix(prefix: str) -> str:
    prefix = prefix.strip().rstrip("/")
    if not prefix or "#" in prefix or "+" in prefix or "\0" in prefix:
        raise UsageError(f"MQTT topic prefix {prefix!r}: give a non-empty topic without the wildcards + and #")
    return prefix


class _SourceHealth:
    """What the health messages say about one source."""

    def __init__(self) -> None:
        self.state = "starting"
        self.frames = 0
        self.frames_at_last = 0
        self.last_time = time.monotonic()
        self.latency_ms: float | None = None


class MqttPublisher:
    """A DemoObserver publishing the demo's events to an MQTT broker; see the module docstring.

    host, port: the broker; prefix: the topics' prefix; sources: the sources as given (the
    status message lists them); health_every_s: seconds between periodic health messages
    (0: none); max_queued: messages kept while the broker is away; status: receives the
    lines worth telling the user (connected, lost, the totals at close)."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, *, prefix: str | None = None,
                 sources: Sequence[str] = (), health_every_s: float = 5.0, max_queued: int = 1000,
                 status: Callable[[str], None] = lambda line: None, client_id: str | None = None,
                 keepalive_s: int = 30, reconnect_min_s: float = 0.5, reconnect_max_s: float = 30.0) -> None:
        mqtt = require("paho.mqtt.client", "demo-mqtt", "ssd-demo --mqtt")
        if max_queued < 1:
            raise UsageError(f"the MQTT queue must hold at least 1 message, got {max_queued}")
        self.host, self.port = host, port
        self.prefix = check_prefix(prefix or default_prefix())
        self.sources = [str(s) for s in sources]
        self.health_every_s = health_every_s
        self.max_queued = max_queued
        self.status = status
        self._lock = threading.Lock()
        self._seq = 0
        self.published = 0  # accepted into the queue
        self.acknowledged = 0  # PUBACKs from the broker
        self.dropped = 0  # the queue was full (or paho refused them)
        self.broker_connects = 0
        self.connected = threading.Event()
        self._health: dict[int, _SourceHealth] = {}
        self._closed = False
        self._stop = threading.Event()
        self._mqtt = mqtt
        client_id = client_id or f"ssd-demo-{socket.gethostname()}-{os.getpid()}"
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        self._client.max_queued_messages_set(max_queued)
        self._client.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=reconnect_max_s)  # type: ignore[arg-type]
        will = json.dumps(self._status_payload("offline"))
        self._client.will_set(f"{self.prefix}/status", will, qos=QOS, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_connect_fail = self._on_connect_fail
        self._told_unreachable = False
        try:
            self._client.connect_async(host, port, keepalive=keepalive_s)
        except (OSError, ValueError) as exc:
            raise MqttError(f"MQTT broker {host}:{port}: {exc}") from None
        self._client.loop_start()  # paho's thread: connects, sends, reconnects
        self._health_thread = None
        if health_every_s > 0:
            self._health_thread = threading.Thread(target=self._periodic_health, name="mqtt-health", daemon=True)
            self._health_thread.start()

    def describe(self) -> str:
        return (f"publishing events to MQTT broker {self.host}:{self.port} under {self.prefix}/ (QoS {QOS}, "
                f"at most {self.max_queued} queued while the broker is away)")

    # -- the demo's side (must return at once) -------------------------------------------
    def on_frame(self, source: int, annotated_bgr: np.ndarray, record: dict[str, Any]) -> None:
        with self._lock:
            health = self._health.setdefault(source, _SourceHealth())
            health.frames += 1
            health.latency_ms = record.get("latency_ms")
            if health.state == "starting":
                health.state = "live"
        base = {"source": source, "frame": record.get("source_frame"), "time": record.get("time")}
        for event, kind in (("entered", "enter"), ("left", "leave")):
            for who in record.get(event, ()):
                self._publish(f"source/{source}/{kind}", {**base, **who})
        for crossing in record.get("crossings", ()):
            self._publish(f"source/{source}/crossing", {**base, **crossing, "counts": record.get("counts", {})})

    def on_source(self, source: int, event: str, detail: str) -> None:
        """A source's capture event (FrameGrabber's on_event, from its thread)."""
        states = {"dropped": "reconnecting", "reconnected": "live", "lost": "lost", "ended": "ended"}
        with self._lock:
            health = self._health.setdefault(source, _SourceHealth())
            if not (event == "ended" and health.state == "lost"):
                health.state = states.get(event, health.state)
        self._publish_health(source, event, detail)

    def close(self) -> None:
        """Final health messages and "offline", a few seconds for the queue to drain, then
        disconnect; the totals go to `status`. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._health_thread is not None:
            self._health_thread.join(2.0)
        for source in sorted(self._health):
            self._publish_health(source, "closing", "the demo is ending")
        self._publish("status", self._status_payload("offline"), retain=True)
        deadline = time.monotonic() + CLOSE_DRAIN_S
        while self.connected.is_set() and self.unacknowledged > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        unsent = self.unacknowledged
        self._client.disconnect()
        self._client.loop_stop()
        self.status(f"mqtt: {self.published} messages queued, {self.acknowledged} acknowledged by the broker, "
                    f"{self.dropped} dropped (queue full while the broker was away), {unsent} unsent at the end; "
                    f"{self.broker_connects} connection(s) to {self.host}:{self.port}")

    @property
    def unacknowledged(self) -> int:
        with self._lock:
            return self.published - self.acknowledged

    # -- messages -------------------------------------------------------------------------
    def _status_payload(self, state: str) -> dict[str, Any]:
        return {"state": state, "time": round(time.time(), 3), "sources": self.sources}

    def _publish(self, suffix: str, payload: dict[str, Any], retain: bool = False) -> bool:
        """Queue one message (numbered: "seq"); False (and counted) when the queue is full."""
        with self._lock:
            self._seq += 1
            payload = {"seq": self._seq, **payload}
        text = json.dumps(payload, separators=(",", ":"), default=_plain)
        info = self._client.publish(f"{self.prefix}/{suffix}", text, qos=QOS, retain=retain)
        accepted = info.rc in (self._mqtt.MQTT_ERR_SUCCESS, self._mqtt.MQTT_ERR_NO_CONN)
        with self._lock:
            if accepted:
                self.published += 1
            else:
                self.dropped += 1
        return accepted

    def _publish_health(self, source: int, event: str, detail: str = "") -> None:
        now = time.monotonic()
        with self._lock:
            health = self._health.setdefault(source, _SourceHealth())
            elapsed = now - health.last_time
            fps = (health.frames - health.frames_at_last) / elapsed if elapsed > 0 else 0.0
            health.frames_at_last, health.last_time = health.frames, now
            payload = {"source": source, "time": round(time.time(), 3), "state": health.state, "event": event,
                       "detail": detail, "fps": round(fps, 2), "frames": health.frames,
                       "latency_ms": health.latency_ms, "dropped_events": self.dropped,
                       "queued_events": self.published - self.acknowledged,
                       "broker_reconnects": max(0, self.broker_connects - 1)}
        self._publish(f"source/{source}/health", payload)

    def _periodic_health(self) -> None:
        for index in range(len(self.sources)):
            with self._lock:
                self._health.setdefault(index, _SourceHealth())
        while not self._stop.wait(self.health_every_s):
            for source in sorted(self._health):
                self._publish_health(source, "periodic")

    # -- paho's thread ------------------------------------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self.status(f"mqtt: broker {self.host}:{self.port} refused the connection: {reason_code}")
            return
        with self._lock:
            self.broker_connects += 1
            again = self.broker_connects > 1
        self.connected.set()
        self._told_unreachable = False
        self.status(f"mqtt: {'reconnected' if again else 'connected'} to {self.host}:{self.port}")
        self._publish("status", self._status_payload("online"), retain=True)

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        if not self._told_unreachable:  # once; paho goes on trying with backoff
            self._told_unreachable = True
            self.status(f"mqtt: cannot reach the broker {self.host}:{self.port} yet; retrying in the background, "
                        f"events queued meanwhile (at most {self.max_queued})")

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            self.status(f"mqtt: lost the broker {self.host}:{self.port} ({reason_code}); reconnecting, "
                        f"events queued meanwhile (at most {self.max_queued})")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._lock:
            self.acknowledged += 1


def _plain(value: Any) -> Any:
    """NumPy scalars and arrays in the records, as JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
