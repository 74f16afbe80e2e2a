"""ssd-demo: live detection from a camera, a Jetson CSI camera, a stream or a video file,
shown in a window (q or Esc quits) or, with --headless, recorded to a video and a
per-frame JSON-lines log. --track follows objects across frames (IDs and trails drawn,
IDs logged); --count-line counts the tracks crossing a line, per class and direction.
--web serves the live video and detections to a browser (127.0.0.1 unless told otherwise;
any other address needs the access token printed at start)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from ssd_edge.cli import SHOW_SCORE_THRESHOLD, run_command
from ssd_edge.cli.backend_args import add_backend_arguments, backend_options
from ssd_edge.cli.tracker_args import add_tracker_arguments, tracker_config_from_args

EPILOG = """sources:
  0, 1, ...         a camera by index (V4L2 on Linux)
  /dev/video0       a V4L2 device
  csi://0           a Jetson CSI camera (GStreamer nvarguscamerasrc; needs JetPack's OpenCV)
  rtsp://host/path  a network stream (also http(s)://, rtmp://, udp://)
  video.mp4         a video file (ends the demo at its end, or --loop)
  frames/%06d.jpg   an image sequence (numbered files; ends at the last)

several sources (--source repeated, numbered 0, 1, ... in the order given) go through the
model as one batch per tick; each has its own tracking, counting line, video and log
(--output out.mp4 writes out.src0.mp4, out.src1.mp4, ...); a source that ends or drops
out leaves the batch while the others go on. A --count-line applies to every source,
--count-line N:X1,Y1,X2,Y2 to source N only (it replaces the common one there).

--mqtt HOST[:PORT] publishes events as JSON (QoS 1) under --mqtt-topic (default
ssd-edge/<host name>): <prefix>/source/<N>/crossing, .../enter, .../leave (with --track or
--count-line), .../health (frame rate and state, every --mqtt-health-every seconds and when
a source drops out or reconnects) and <prefix>/status (online/offline, retained).
"""


def _positive_minutes(text: str) -> float:
    try:
        minutes = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not 0 < minutes < float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 minutes, got {text}")
    return minutes


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-demo", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an .onnx, int8 .onnx or .engine model")
    p.add_argument("--source", action="append", metavar="SOURCE",
                   help="camera index, /dev/videoN, csi://N, rtsp://..., a video file or an image sequence "
                        "(default 0); repeat it for several sources in one batch")
    p.add_argument("--output", metavar="VIDEO",
                   help="record the annotated video here (.mp4, .avi, ...) and its log beside it (.jsonl)")
    p.add_argument("--log", metavar="JSONL", help="the per-frame log (default: the output with .jsonl)")
    p.add_argument("--headless", action="store_true",
                   help="no window; record the video and the log (default ssd-demo-<time>.mp4)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    p.add_argument("--segment-minutes", type=_positive_minutes, metavar="N",
                   help="start a new video file every N minutes (each finalised and playable, named "
                        "<stem>.<start time><suffix> so the names sort by time; for recordings that run for days)")
    p.add_argument("--score-threshold", type=float, default=SHOW_SCORE_THRESHOLD,
                   help=f"minimum class score of the detections drawn and logged (default {SHOW_SCORE_THRESHOLD}; "
                        "the model's own is for mAP); with --track the model runs at the tracker's low score "
                        "and tracks are drawn and logged by the tracker's rules")
    p.add_argument("--iou-threshold", type=float, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--agnostic-nms", action="store_true", default=None,
                   help="NMS across the classes: a box suppresses overlapping boxes of every class (default: "
                        "the model's, per class)")
    add_backend_arguments(p)
    p.add_argument("--width", type=int, help="ask the camera for this width (with --height)")
    p.add_argument("--height", type=int, help="ask the camera for this height (with --width)")
    p.add_argument("--fps", type=float, help="ask the camera for this frame rate")
    p.add_argument("--loop", action="store_true", help="start a video file again at its end")
    p.add_argument("--retries", type=int, default=5,
                   help="reconnection attempts when a live source drops out (default 5)")
    p.add_argument("--retry-delay", type=float, default=0.5, metavar="S",
                   help="first wait before reconnecting, doubled each attempt up to 8 s (default 0.5)")
    p.add_argument("--track", action="store_true",
                   help="track objects across frames: draw their IDs and trails, log them as \"tracks\"")
    p.add_argument("--count-line", type=_count_line, action="append", metavar="[N:]X1,Y1,X2,Y2",
                   help="count tracks crossing this line (pixels), per class and direction; implies --track. "
                        "With several sources it applies to each; N:X1,Y1,X2,Y2 to source N only (repeatable)")
    p.add_argument("--mqtt", type=_mqtt_address, metavar="HOST[:PORT]",
                   help="publish line crossings, objects entering/leaving and source health to this MQTT broker "
                        "(port 1883 unless given; needs the demo-mqtt extra: paho-mqtt)")
    p.add_argument("--mqtt-topic", metavar="PREFIX",
                   help="topic prefix of the events (default ssd-edge/<host name>)")
    p.add_argument("--mqtt-health-every", type=float, default=5.0, metavar="S",
                   help="seconds between health messages (frame rate, state, dropped events; default 5)")
    p.add_argument("--mqtt-queue", type=int, default=1000, metavar="N",
                   help="events kept while the broker is away (default 1000); newer ones are dropped and counted")
    p.add_argument("--web", type=_web_address, metavar="[HOST:]PORT",
                   help="serve the live video, detections and frame rates to browsers at http://HOST:PORT/ "
                        "(HOST 127.0.0.1 unless given; PORT 0: any free port); any address beyond loopback "
                        "needs an access token")
    p.add_argument("--web-token", type=_web_token, metavar="TOKEN",
                   help="the token every web request must carry (?token=...); default: $SSD_DEMO_WEB_TOKEN, else "
                        "one generated and printed at start when --web is beyond loopback")
    p.add_argument("--web-viewers", type=int, default=4, metavar="N",
                   help="at most N browsers at once (each watching every source; default 4); more get 503")
    add_tracker_arguments(p)
    return p


def _web_address(text: str):
    """--web's value as a WebAddress; argparse reports a malformed one."""
    from ssd_edge.runtime.demo.web.address import parse_web_address

    try:
        return parse_web_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _web_token(text: str) -> str:
    from ssd_edge.runtime.demo.web.address import check_token

    try:
        return check_token(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count_line(text: str):
    """--count-line's value as (source number or None, ((x1, y1), (x2, y2))); argparse
    reports a malformed one."""
    from ssd_edge.runtime.tracking.counting import parse_line

    index, colon, rest = text.partition(":")
    source = None
    if colon:
        if not index.strip().isdigit():
            raise argparse.ArgumentTypeError(f"a counting line is '[N:]x1,y1,x2,y2' (N: a source number), got {text!r}")
        source, text = int(index), rest
    try:
        return source, parse_line(text)
    except (ValueError, ImportError) as error:  # a TrackingError, or MissingDependency without SciPy
        raise argparse.ArgumentTypeError(str(error)) from None


def _mqtt_address(text: str):
    """--mqtt's value as (host, port); argparse reports a malformed one."""
    from ssd_edge.runtime.demo.events import parse_broker

    try:
        return parse_broker(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _count_lines(parser: argparse.ArgumentParser, given: list | None) -> tuple[object, dict[int, object]]:
    """(the common counting line or None, {source number: its own line})."""
    common, own = None, {}
    for source, line in given or []:
        if source is None:
            if common is not None:
                parser.error("argument --count-line: give one line for every source (N:X1,Y1,X2,Y2 for source N)")
            common = line
        elif source in own:
            parser.error(f"argument --count-line: two lines for source {source}")
        else:
            own[source] = line
    return common, own


class _StopOnSignal:
    """While active, Ctrl-C (SIGINT) and SIGTERM end the demo between two frames, so the
    video and the log finalise with the same frames; a second signal interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # Python handles signals there only
            self._previous = {signum: signal.signal(signum, self) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def __call__(self, signum: int, frame: object) -> None:
        if self.event.is_set():
            raise KeyboardInterrupt
        # the loop ends with this reason: which signal, as a service manager's log needs it
        self.event.reason = "interrupted (Ctrl-C)" if signum == signal.SIGINT else \
            f"interrupted ({signal.Signals(signum).name})"
        self.event.set()
        print("ssd-demo: stopping after this frame (again to stop at once)", file=sys.stderr, flush=True)


def _status(line: str) -> None:
    print(f"ssd-demo: {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run ssd-demo; 0 when it ended normally, 1 when a live source was lost for good (the
    outputs are finalised either way; a service manager may restart the demo)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.web is None and args.web_token is not None:
        parser.error("--web-token needs --web")
    count_line, count_lines = _count_lines(parser, args.count_line)
    if args.mqtt is None and args.mqtt_topic is not None:
        parser.error("--mqtt-topic needs --mqtt")
    from ssd_edge.runtime.demo.capture import RetryPolicy
    from ssd_edge.runtime.demo.loop import DemoOptions, run_demo

    sources = args.source or ["0"]

    def work():
        settings = DemoOptions(
            model=args.model, source=sources[0] if len(sources) == 1 else sources,
            backend=args.backend, backend_options=backend_options(args),
            score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold, agnostic_nms=args.agnostic_nms, width=args.width, height=args.height,
            fps=args.fps,
            headless=args.headless, output=args.output, log=args.log, max_frames=args.max_frames, loop=args.loop,
            segment_minutes=args.segment_minutes,
            retry=RetryPolicy(attempts=args.retries, first_delay_s=args.retry_delay),
            track=args.track, count_line=count_line, count_lines=count_lines,
            tracker=tracker_config_from_args(args),
        )
        observers = []
        try:
            if args.web is not None:
                observers.append(_open_web_viewer(args))
            if args.mqtt is not None:
                observers.append(_open_mqtt(args, settings))
        except BaseException:
            for observer in observers:  # run_demo closes them once it has them
                observer.close()
            raise
        with _StopOnSignal() as stop:
            return run_demo(settings, status=_status, stop=stop.event, observers=observers)

    try:
        summary = run_command("ssd-demo", work)
    except SystemExit as exc:
        if argv is None:  # the command itself, not a caller in this process
            _exit_past_abandoned_threads(exc.code if isinstance(exc.code, int) else 1)
        raise
    _status(summary.describe())
    code = 1 if summary.capture.source_lost else 0
    if argv is None:
        _exit_past_abandoned_threads(code)
    return code


# Helper threads that may still be inside OpenCV when the demo ends: an open or a read given
# up on after its timeout (a stream that never answers). Python's exit would race them and
# abort the process (std::terminate: 'terminate called without an active exception').
ABANDONED_THREADS = ("open-source", "timed-read")


def _exit_past_abandoned_threads(code: int) -> None:
    """With such a thread still alive, end the process now with `code`, the outputs being
    finalised and stdout/stderr flushed, instead of letting the interpreter's exit race it."""
    if any(thread.is_alive() and thread.name in ABANDONED_THREADS for thread in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _open_mqtt(args, settings):
    """The --mqtt publisher, connecting in the background (run_demo closes it)."""
    from ssd_edge.runtime.demo.events import MqttPublisher, default_prefix

    host, port = args.mqtt
    publisher = MqttPublisher(host, port, prefix=args.mqtt_topic or default_prefix(), sources=settings.sources,
                              health_every_s=args.mqtt_health_every, max_queued=args.mqtt_queue, status=_status)
    _status(publisher.describe())
    return publisher


def _open_web_viewer(args):
    """The --web viewer, listening (run_demo closes it); its URL, token included, printed."""
    from ssd_edge.runtime.demo.web.address import TOKEN_ENV, access_token
    from ssd_edge.runtime.demo.web.server import WebViewer, WebViewerConfig

    token = access_token(args.web, args.web_token or os.environ.get(TOKEN_ENV) or None)
    viewer = WebViewer(args.web, token, WebViewerConfig(max_viewers=args.web_viewers))
    _status(viewer.describe(generated=token is not None and not (args.web_token or os.environ.get(TOKEN_ENV))))
    return viewer


if __name__ == "__main__":
    sys.exit(main())
