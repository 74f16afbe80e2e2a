"""A real Mosquitto broker on a free loopback port for the tests, and a paho subscriber.

Mosquitto is Debian's `mosquitto` (.ci/run installs it). Without it the MQTT tests skip,
except under CI (CI=true), where they fail: the part they test would go untested."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto")


def mosquitto_binary() -> str:
    """The mosquitto executable; pytest.fail under CI, pytest.skip elsewhere when missing."""
    found = shutil.which("mosquitto") or next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)
    if found is None:
        message = "mosquitto is not installed (apt-get install mosquitto; .ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Mosquitto:
    """A broker listening on 127.0.0.1:port with anonymous access and persistence in
    `folder` (so that a restart keeps what it had queued for persistent subscribers)."""

    def __init__(self, folder: Path) -> None:
        self.binary = mosquitto_binary()
        self.port = free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nuser {getpass.getuser()}\n"
            f"persistence true\npersistence_location {folder}/\nautosave_interval 0\n"
            "max_queued_messages 100000\n"
        )
        self.process: subprocess.Popen | None = None
        self.log = folder / "mosquitto.log"

    def start(self, timeout_s: float = 10.0) -> "Mosquitto":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"mosquitto exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"mosquitto did not listen on {self.port} in {timeout_s} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its persistence file
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Subscriber:
    """A paho client subscribed (QoS 1, persistent session) to `topic`, reconnecting by
    itself; `messages` holds (topic, payload as JSON) in arrival order."""

    def __init__(self, port: int, topic: str, client_id: str = "test-subscriber") -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.connects = 0
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.on_connect = lambda client, userdata, flags, rc, props: self._connected(topic)
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber did not subscribe"

    def _connected(self, topic: str) -> None:
        self.connects += 1
        self.client.subscribe(topic, qos=1)

    def _message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    def wait_for(self, condition, timeout_s: float = 15.0) -> list[tuple[str, dict]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                got = list(self.messages)
            if condition(got):
                return got
            time.sleep(0.05)
        with self.lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
