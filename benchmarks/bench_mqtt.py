"""ssd-demo --mqtt's publisher (runtime/demo/events.py) on loopback: events per second it
sustains and the publish latency (the demo's on_frame -> a subscriber's on_message).

    python -m benchmarks.bench_mqtt                     # Debian's mosquitto started here on a free port

A real Mosquitto on 127.0.0.1 and a paho subscriber (QoS 1) in this process. The events
are crossing events, as the demo publishes them (one per on_frame call, ~200-byte JSON).
- sustained: N events handed to on_frame as fast as it returns, a queue large enough to
  drop nothing; the rate is N / (first on_frame -> last message received);
- latency: events paced at a steady offered rate (100 and 1000 a second); latency is the
  subscriber's receive time minus the time stamped in the event by the sender, the same
  clock (one process); p50/p99 over the run.
Also: how long on_frame takes (the demo loop's cost per event).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ssd_edge.bench.machine import describe, markdown
from ssd_edge.common.atomic import write_text_atomic
from ssd_edge.runtime.demo.events import MqttPublisher

RESULTS = Path(__file__).parent / "results"
FRAME = np.zeros((4, 4, 3), np.uint8)


def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = folder / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
                      "max_inflight_messages 0\n")
    process = subprocess.Popen([binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("mosquitto did not start")


class Receiver:
    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.received: list[tuple[float, float]] = []  # (sent time, received time)
        self.lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-receiver")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *args: ready.set()
        self.client.on_message = self._message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert ready.wait(10)

    def _message(self, client, userdata, message) -> None:
        now = time.time()
        payload = json.loads(message.payload)
        if "direction" in payload:
            with self.lock:
                self.received.append((payload["time"], now))

    def wait(self, count: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return
            time.sleep(0.005)

    def reset(self) -> list[tuple[float, float]]:
        with self.lock:
            got, self.received = self.received, []
        return got

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def record(sent: float, index: int) -> dict:
    return {"source_frame": index, "time": sent, "counts": {"car": {"left_to_right": index, "right_to_left": 0}},
            "crossings": [{"id": index, "label": 1, "name": "car", "direction": "left_to_right"}]}


def sustained(publisher: MqttPublisher, receiver: Receiver, count: int) -> dict:
    receiver.reset()
    calls = []
    began = time.time()
    for i in range(count):
        t0 = time.perf_counter()
        publisher.on_frame(0, FRAME, record(time.time(), i))
        calls.append(time.perf_counter() - t0)
    handed = time.time() - began
    receiver.wait(count)
    got = receiver.reset()
    last = max(r for _, r in got) if got else began
    return {"events": count, "received": len(got), "handed_s": handed, "seconds": last - began,
            "rate": len(got) / (last - began), "on_frame_us": 1e6 * statistics.median(calls),
            "on_frame_p99_us": 1e6 * float(np.percentile(calls, 99))}


def paced(publisher: MqttPublisher, receiver: Receiver, rate: float, seconds: float) -> dict:
    receiver.reset()
    count = int(rate * seconds)
    began = time.perf_counter()
    for i in range(count):
        due = began + i / rate
        while time.perf_counter() < due:
            time.sleep(max(0.0, min(0.001, due - time.perf_counter())))
        publisher.on_frame(0, FRAME, record(time.time(), i))
    receiver.wait(count, timeout_s=30)
    got = receiver.reset()
    latency = np.array([1000 * (r - s) for s, r in got])
    return {"rate": rate, "events": count, "received": len(got), "p50_ms": float(np.percentile(latency, 50)),
            "p99_ms": float(np.percentile(latency, 99)), "max_ms": float(latency.max())}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20000, help="events of the sustained run")
    p.add_argument("--rates", type=float, nargs="+", default=[100.0, 1000.0])
    p.add_argument("--seconds", type=float, default=5.0, help="length of each paced run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS / "mqtt_loopback.md")
    args = p.parse_args(argv)
    machine = describe("paho", "onnxruntime")
    with tempfile.TemporaryDirectory() as folder:
        broker, port = start_broker(Path(folder))
        try:
            receiver = Receiver(port, "bench/#")
            publisher = MqttPublisher("127.0.0.1", port, prefix="bench", health_every_s=0,
                                      max_queued=args.events + 10)
            assert publisher.connected.wait(10)
            runs, latencies, loads = [], [], []
            for repeat in range(args.repeats):
                loads.append(os.getloadavg()[0])
                runs.append(sustained(publisher, receiver, args.events))
                print(f"sustained: {runs[-1]['rate']:.0f} events/s", flush=True)
                for rate in args.rates:
                    loads.append(os.getloadavg()[0])
                    latencies.append(paced(publisher, receiver, rate, args.seconds))
                    print(f"paced {rate:.0f}/s: p50 {latencies[-1]['p50_ms']:.2f} ms, "
                          f"p99 {latencies[-1]['p99_ms']:.2f} ms", flush=True)
            publisher.close()
            receiver.close()
            dropped = publisher.dropped
        finally:
            broker.terminate()
            broker.wait(10)
    version = subprocess.run([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"], capture_output=True,
                             text=True).stdout.splitlines()[:1]
    lines = [
        "# ssd-demo --mqtt on loopback: sustained events per second and publish latency",
        "",
        markdown(machine),
        f"- Broker: {' '.join(version)} on 127.0.0.1; publisher and subscriber (paho-mqtt, QoS 1) in one process",
        f"- Command: `python -m benchmarks.bench_mqtt {' '.join(sys.argv[1:])}`",
        f"- 1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f} (the 2 cores were shared "
        "with other jobs)",
        f"- Events dropped over the whole benchmark: {dropped} (the queue held every event)",
        "",
        "## Sustained (events handed over as fast as on_frame returns)",
        "",
        "| repeat | events | received | handed over in s | delivered in s | events/s delivered | "
        "on_frame median us | on_frame p99 us |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs):
        lines.append(f"| {i} | {r['events']} | {r['received']} | {r['handed_s']:.2f} | {r['seconds']:.2f} | "
                     f"{r['rate']:.0f} | {r['on_frame_us']:.0f} | {r['on_frame_p99_us']:.0f} |")
    lines += ["", f"Median sustained rate: **{statistics.median(r['rate'] for r in runs):.0f} events/s**.", "",
              "## Latency at a steady offered rate (on_frame -> subscriber's on_message)", "",
              "| offered events/s | events | received | p50 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for r in latencies:
        lines.append(f"| {r['rate']:.0f} | {r['events']} | {r['received']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['max_ms']:.1f} |")
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
