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
from ssd_edge.runtime.detector import BACKENDS

EPILOG = """sources:
  0, 1, ...         a camera by index (V4L2 on Linux)
  /dev/video0       a V4L2 device
  csi://0           a Jetson CSI camera (GStreamer nvarguscamerasrc; needs JetPack's OpenCV)
  rtsp://host/path  a network stream (also http(s)://, rtmp://, udp://)
  video.mp4         a video file (ends the demo at its end, or --loop)
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssd-demo", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="an .onnx, int8 .onnx or .engine model")
    p.add_argument("--source", default="0",
                   help="camera index, /dev/videoN, csi://N, rtsp://..., or a video file (default 0)")
    p.add_argument("--output", metavar="VIDEO",
                   help="record the annotated video here (.mp4, .avi, ...) and its log beside it (.jsonl)")
    p.add_argument("--log", metavar="JSONL", help="the per-frame log (default: the output with .jsonl)")
    p.add_argument("--headless", action="store_true",
                   help="no window; record the video and the log (default ssd-demo-<time>.mp4)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N processed frames")
    p.add_argument("--score-threshold", type=float, default=SHOW_SCORE_THRESHOLD,
                   help=f"minimum class score of the detections drawn and logged (default {SHOW_SCORE_THRESHOLD}; "
                        "the model's own is for mAP); with --track the model runs at the tracker's low score "
                        "and tracks are drawn and logged by the tracker's rules")
    p.add_argument("--iou-threshold", type=float, help="NMS IoU threshold (default: the model's)")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="Detector backend (default auto)")
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
    p.add_argument("--count-line", type=_count_line, metavar="X1,Y1,X2,Y2",
                   help="count tracks crossing this line (pixels), per class and direction; implies --track")
    p.add_argument("--web", type=_web_address, metavar="[HOST:]PORT",
                   help="serve the live video, detections and frame rates to browsers at http://HOST:PORT/ "
                        "(HOST 127.0.0.1 unless given; PORT 0: any free port); any address beyond loopback "
                        "needs an access token")
    p.add_argument("--web-token", type=_web_token, metavar="TOKEN",
                   help="the token every web request must carry (?token=...); default: $SSD_DEMO_WEB_TOKEN, else "
                        "one generated and printed at start when --web is beyond loopback")
    p.add_argument("--web-viewers", type=int, default=4, metavar="N",
                   help="at most N browsers at once (each watching every source; default 4); more get 503")
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
    """--count-line's value as ((x1, y1), (x2, y2)); argparse reports a malformed one."""
    from ssd_edge.runtime.tracking.counting import parse_line

    try:
        return parse_line(text)
    except (ValueError, ImportError) as error:  # a TrackingError, or MissingDependency without SciPy
        raise argparse.ArgumentTypeError(str(error)) from None


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
    from ssd_edge.runtime.demo.capture import RetryPolicy
    from ssd_edge.runtime.demo.loop import DemoSettings, run_demo

    def work():
        settings = DemoSettings(
            model=args.model, source=args.source, backend=args.backend, score_threshold=args.score_threshold,
            iou_threshold=args.iou_threshold, width=args.width, height=args.height, fps=args.fps,
            headless=args.headless, output=args.output, log=args.log, max_frames=args.max_frames, loop=args.loop,
            retry=RetryPolicy(attempts=args.retries, first_delay_s=args.retry_delay),
            track=args.track, count_line=args.count_line,
        )
        observers = [_open_web_viewer(args)] if args.web is not None else []
        with _StopOnSignal() as stop:
            return run_demo(settings, status=_status, stop=stop.event, observers=observers)

    summary = run_command("ssd-demo", work)
    _status(summary.describe())
    return 1 if summary.capture.source_lost else 0


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
