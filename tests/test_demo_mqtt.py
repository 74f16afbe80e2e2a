"""ssd-demo --mqtt against a real Mosquitto broker (tests/helpers/mqtt.py): the events of a
clip whose crossings test_demo.py knows, objects entering and leaving, health, and the
broker stopped mid-run and restarted (reconnection, a bounded queue, the drop count)."""

import json
import os
import time

import cv2
import numpy as np
import pytest

from ssd_edge.runtime.demo.capture import FrameGrabber
from ssd_edge.runtime.demo.events import MqttPublisher, parse_broker
from ssd_edge.runtime.demo.loop import DemoOptions, record_demo, source_events
from tests.helpers.demo import FRAME_SIZE, moving_shapes
from tests.helpers.mqtt import Mosquitto, Subscriber
from tests.helpers.tracking_video import ShapeDetector

if os.environ.get("CI") == "true":
    import paho.mqtt.client  # noqa: F401  (CI installs the demo-mqtt extra: missing, the tests fail)
else:
    pytest.importorskip("paho.mqtt.client", reason="the demo-mqtt extra (paho-mqtt) is not installed")

SHAPE_FRAMES, EMPTY_FRAMES = 36, 34  # the shapes cross x = 100 (see test_demo.py), then the view is empty
LINE = ((100.0, 120.0), (100.0, 0.0))
PREFIX = "test/edge"


def empty_frame() -> np.ndarray:
    width, height = FRAME_SIZE
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 60)], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "shapes_then_empty.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 20, FRAME_SIZE)
    for i in range(SHAPE_FRAMES):
        writer.write(moving_shapes(i))
    for _ in range(EMPTY_FRAMES):
        writer.write(empty_frame())
    writer.release()
    return path


@pytest.fixture
def broker(tmp_path):
    mosquitto = Mosquitto(tmp_path / "broker").start()
    yield mosquitto
    mosquitto.stop()


def run_clip(clip, tmp_path, observers):
    settings = DemoOptions(model="unused", source=str(clip), headless=True, output=str(tmp_path / "out.mp4"),
                            count_line=LINE)
    grabber = FrameGrabber(lambda: cv2.VideoCapture(str(clip)), live=False, on_event=source_events(observers, 0))
    return record_demo(ShapeDetector(), grabber, settings, fps=20, observers=observers)


def said_offline(messages):
    """The publisher said "offline" (its last message)."""
    return any(p.get("state") == "offline" for t, p in messages if t.endswith("/status"))


def by_kind(messages, kind):
    return [payload for topic, payload in messages if topic.endswith("/" + kind)]


def test_parse_broker():
    assert parse_broker("broker.local") == ("broker.local", 1883)
    assert parse_broker("10.0.0.2:8883") == ("10.0.0.2", 8883)
    assert parse_broker("[::1]:1884") == ("::1", 1884)
    for bad in ("host:0", "host:99999", "a:b:c", ""):
        with pytest.raises(ValueError):
            parse_broker(bad)


def test_a_clip_with_known_crossings_publishes_its_events(clip, tmp_path, broker):
    subscriber = Subscriber(broker.port, f"{PREFIX}/#", client_id="sub-events")
    lines = []
    publisher = MqttPublisher("127.0.0.1", broker.port, prefix=PREFIX, sources=[str(clip)], health_every_s=0,
                              status=lines.append, reconnect_min_s=0.1, reconnect_max_s=0.5)
    assert publisher.connected.wait(10)
    summary = run_clip(clip, tmp_path, [publisher])
    log = [json.loads(line) for line in summary.log.read_text().splitlines()]
    messages = subscriber.wait_for(said_offline)
    subscriber.close()

    crossings = by_kind(messages, "crossing")
    assert [(c["name"], c["direction"]) for c in crossings] == [("circle", "right_to_left"),
                                                               ("square", "left_to_right")]
    assert crossings[0]["frame"] < crossings[1]["frame"]  # the circle (1.5 px a frame) first, then the square
    assert crossings[-1]["counts"] == {"square": {"left_to_right": 1, "right_to_left": 0},
                                       "circle": {"left_to_right": 0, "right_to_left": 1}}
    logged = [(r["source_frame"], c["id"], c["direction"]) for r in log for c in r["crossings"]]
    assert [(c["frame"], c["id"], c["direction"]) for c in crossings] == logged
    # both shapes enter when their tracks are confirmed, and leave when the tracker removes
    # them: the first frame more than max_misses (30) after the last one they were seen in
    enter, leave = by_kind(messages, "enter"), by_kind(messages, "leave")
    assert sorted(e["name"] for e in enter) == ["circle", "square"] and all(e["frame"] <= 1 for e in enter)
    assert sorted(e["name"] for e in leave) == ["circle", "square"]
    assert {e["id"] for e in enter} == {e["id"] for e in leave}
    assert all(e["frame"] == SHAPE_FRAMES - 1 + 31 for e in leave), leave
    assert all(topic.startswith(f"{PREFIX}/source/0/") for topic, p in messages if not topic.endswith("/status"))
    health = by_kind(messages, "health")
    assert [h["event"] for h in health] == ["ended", "closing"]
    assert health[-1]["frames"] == SHAPE_FRAMES + EMPTY_FRAMES and health[-1]["state"] == "ended"
    assert health[-1]["dropped_events"] == 0
    seqs = sorted(p["seq"] for t, p in messages if "seq" in p)
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost, nothing twice
    status = by_kind(messages, "status")
    assert status[0]["state"] == "online" and status[-1]["state"] == "offline"
    assert publisher.dropped == 0 and any("0 dropped" in line and "0 unsent" in line for line in lines), lines


class BrokerOutage:
    """An observer (before the publisher) that stops the broker at frame `stop_at` and
    starts it again at frame `start_at`, holding the loop `hold_s` meanwhile so that
    health messages pile up; samples how many messages the publisher holds."""

    def __init__(self, broker, publisher, stop_at, start_at, hold_s):
        self.broker, self.publisher = broker, publisher
        self.stop_at, self.start_at, self.hold_s = stop_at, start_at, hold_s
        self.frames = 0
        self.most_held = 0
        self.disconnected_seen = False

    def on_frame(self, source, annotated, record):
        if self.frames == self.stop_at:
            self.broker.stop()
            deadline = time.monotonic() + 5
            while self.publisher.connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.disconnected_seen = not self.publisher.connected.is_set()
        if self.stop_at <= self.frames < self.start_at:
            end = time.monotonic() + self.hold_s
            while time.monotonic() < end:
                self.most_held = max(self.most_held, self.publisher.unacknowledged)
                time.sleep(0.005)
        if self.frames == self.start_at:
            self.broker.start()
            assert self.publisher.connected.wait(10), "the publisher did not reconnect"
        self.frames += 1

    def close(self):
        pass


def test_broker_stopped_mid_run_reconnects_with_a_bounded_queue_and_counts_the_drops(clip, tmp_path, broker):
    subscriber = Subscriber(broker.port, f"{PREFIX}/#", client_id="sub-outage")
    lines = []
    publisher = MqttPublisher("127.0.0.1", broker.port, prefix=PREFIX, sources=[str(clip)], health_every_s=0.02,
                              max_queued=5, status=lines.append, reconnect_min_s=0.1, reconnect_max_s=0.3)
    assert publisher.connected.wait(10)
    outage = BrokerOutage(broker, publisher, stop_at=4, start_at=12, hold_s=0.05)
    run_clip(clip, tmp_path, [outage, publisher])
    messages = subscriber.wait_for(said_offline)
    subscriber.close()

    assert outage.disconnected_seen and publisher.broker_connects == 2 and subscriber.connects >= 2
    assert any("mqtt: lost the broker" in line for line in lines) and any("mqtt: reconnected" in line for line in lines)
    assert outage.most_held <= 5  # the queue stayed bounded while the broker was away
    assert publisher.dropped > 0
    received = {p["seq"] for t, p in messages if "seq" in p}
    issued = publisher._seq
    missing = set(range(1, issued + 1)) - received
    assert len(missing) == publisher.dropped  # every gap a subscriber sees is a counted drop, and no more
    health = by_kind(messages, "health")
    assert health[-1]["event"] == "closing" and health[-1]["dropped_events"] == publisher.dropped
    # the events after the outage all arrived: both crossings (frames ~20 and ~25)
    assert [(c["name"], c["direction"]) for c in by_kind(messages, "crossing")] == [
        ("circle", "right_to_left"), ("square", "left_to_right")]
    assert any(f"{publisher.dropped} dropped" in line for line in lines)


def test_the_publisher_starts_without_a_broker_and_delivers_once_it_comes(tmp_path):
    broker = Mosquitto(tmp_path / "late").start()
    subscriber = Subscriber(broker.port, f"{PREFIX}/#", client_id="sub-late")  # a persistent session,
    broker.stop()  # kept by the broker across its restart: the first event cannot arrive before it
    publisher = MqttPublisher("127.0.0.1", broker.port, prefix=PREFIX, sources=["x"], health_every_s=0,
                              max_queued=50, reconnect_min_s=0.1, reconnect_max_s=0.3)
    try:
        frame = np.zeros((8, 8, 3), np.uint8)
        record = {"source_frame": 3, "time": 1.0, "entered": [{"id": 7, "label": 1, "name": "car"}]}
        publisher.on_frame(0, frame, record)  # queued while there is no broker
        time.sleep(0.3)  # a few connection attempts fail meanwhile
        assert not publisher.connected.is_set()
        broker.start()
        assert publisher.connected.wait(10)
        publisher.on_frame(0, frame, {**record, "source_frame": 4})
        messages = subscriber.wait_for(lambda got: len(by_kind(got, "enter")) == 2)
        subscriber.close()
    finally:
        publisher.close()
        broker.stop()
    # the one queued before the broker came arrives too; paho may send the newer one first
    # across the (re)connection, so the order is the seq's
    enter = sorted(by_kind(messages, "enter"), key=lambda e: e["seq"])
    assert [(e["frame"], e["id"], e["name"]) for e in enter] == [(3, 7, "car"), (4, 7, "car")]


def test_on_frame_returns_at_once_while_the_broker_is_away(tmp_path):
    port = Mosquitto(tmp_path / "never").port  # nothing listens there
    lines = []
    publisher = MqttPublisher("127.0.0.1", port, prefix=PREFIX, health_every_s=0, max_queued=10,
                              status=lines.append, reconnect_min_s=0.1, reconnect_max_s=0.2)
    try:
        frame = np.zeros((8, 8, 3), np.uint8)
        record = {"source_frame": 0, "time": 1.0, "crossings": [{"id": 1, "label": 1, "name": "a",
                                                                 "direction": "left_to_right"}], "counts": {}}
        begin = time.perf_counter()
        for _ in range(1000):
            publisher.on_frame(0, frame, record)
        per_call_ms = 1000 * (time.perf_counter() - begin) / 1000
        deadline = time.monotonic() + 5
        while not any("cannot reach the broker" in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        publisher.close()
    assert any(f"cannot reach the broker 127.0.0.1:{port} yet" in line for line in lines), lines
    assert "10 messages queued, 0 acknowledged" in lines[-1] and "992 dropped" in lines[-1] and "10 unsent" in lines[-1]
    # the queue holds 10; the closing health and "offline" are dropped too
    assert publisher.published == 10 and publisher.dropped == 990 + 2
    assert per_call_ms < 5, per_call_ms


def test_the_command_line_publishes_with_two_sources(model_path, clip, tmp_path, broker, capsys):
    from ssd_edge.cli.demo import main

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(6):
        cv2.imwrite(str(frames / f"{i:04d}.png"), moving_shapes(i))
    subscriber = Subscriber(broker.port, "cli/edge/#", client_id="sub-cli")
    code = main(["--model", model_path, "--source", str(clip), "--source", str(frames / "%04d.png"), "--headless",
                 "--output", str(tmp_path / "cli.mp4"), "--score-threshold", "0.3", "--track", "--max-frames", "8",
                 "--mqtt", f"127.0.0.1:{broker.port}", "--mqtt-topic", "cli/edge"])
    messages = subscriber.wait_for(said_offline)
    subscriber.close()
    assert code == 0
    printed = capsys.readouterr().out
    assert f"publishing events to MQTT broker 127.0.0.1:{broker.port} under cli/edge/" in printed
    assert "0 dropped" in printed
    ended = {p["source"]: p for t, p in messages if t.endswith("/health") and p["event"] == "ended"}
    assert sorted(ended) == [0, 1] and ended[1]["detail"] == "end of file"  # the 6-image sequence ends first
    closing = {p["source"]: p["frames"] for t, p in messages if t.endswith("/health") and p["event"] == "closing"}
    assert closing == {0: 8, 1: 6}
    status = [p for t, p in messages if t == "cli/edge/status"]
    assert status[0]["state"] == "online" and status[0]["sources"] == [str(clip), str(frames / "%04d.png")]
    assert len(read_log_lines(tmp_path / "cli.src1.jsonl")) == 6


def read_log_lines(path):
    return path.read_text().splitlines()
