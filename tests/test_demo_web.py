"""ssd-demo --web over plain HTTP (urllib and raw sockets on loopback): where it listens and
the token rule, refusals that say nothing about the camera, the viewer limit, a stalled
viewer that neither slows the frames handed over nor keeps close() waiting, and the state
and pictures of a real demo loop. The browser's side is tests/test_demo_web_browser.py."""

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from ssd_edge.cli.demo import build_parser, main
from ssd_edge.common.errors import UsageError
from ssd_edge.runtime.demo.capture import FrameGrabber
from ssd_edge.runtime.demo.loop import DemoOptions, record_demo
from ssd_edge.runtime.demo.web.address import WebAddress, access_token, check_token, parse_web_address
from ssd_edge.runtime.demo.web.server import WebViewer, WebViewerConfig, WebViewerError
from tests.helpers.demo import write_video
from tests.helpers.tracking_video import ShapeDetector
from tests.helpers.web import DemoProcess

TOKEN = "test-token-0123456789abcdef"
LOOPBACK = WebAddress("127.0.0.1", 0)


@pytest.fixture
def open_viewers():
    viewers = []

    def make(address=LOOPBACK, token=None, **config):
        viewer = WebViewer(address, token, WebViewerConfig(**config))
        viewers.append(viewer)
        return viewer

    yield make
    for viewer in viewers:
        viewer.close()


def base(viewer):
    return f"http://127.0.0.1:{viewer.port}"


def get(url, headers=None, timeout=5.0):
    """(status, headers, body) of a GET, errors included."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def open_stream(viewer, path, receive_buffer=None, host="127.0.0.1"):
    """A raw connection that asked for `path` (a stream); its status line once read."""
    connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    connection.settimeout(5.0)
    connection.connect(("127.0.0.1", viewer.port))
    connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return connection


def status_of(connection):
    head = b""
    while b"\r\n" not in head:
        chunk = connection.recv(1)
        if not chunk:
            break
        head += chunk
    return int(head.split()[1])


def noise(seed, size=(480, 640)):
    """A picture that JPEG cannot shrink much (about 200 kB), so a stalled socket fills fast."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def feed(viewer, frames, source=0, first=1, size=(120, 160), pause_s=0.0):
    """Hand `frames` frames to the viewer as the loop does; the longest on_frame call."""
    longest = 0.0
    for number in range(first, first + frames):
        image = noise(number, size) if size[0] >= 480 else np.full((*size, 3), number % 256, np.uint8)
        begin = time.perf_counter()
        viewer.on_frame(source, image, {"frame": number, "latency_ms": 1.0, "inference_fps": 50.0,
                                        "detections": [{"box": [1, 2, 3, 4], "label": 1, "name": "square",
                                                        "score": 0.9}]})
        longest = max(longest, time.perf_counter() - begin)
        if pause_s:
            time.sleep(pause_s)
    return longest


def wait_until(condition, timeout=5.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout} s")


# -- where it listens, the token rule -------------------------------------------------------------

@pytest.mark.parametrize("text, host, port, loopback", [
    ("8080", "127.0.0.1", 8080, True),
    ("0", "127.0.0.1", 0, True),
    ("localhost:9000", "localhost", 9000, True),
    ("[::1]:8080", "::1", 8080, True),
    ("0.0.0.0:8080", "0.0.0.0", 8080, False),
    ("192.168.1.20:80", "192.168.1.20", 80, False),
    ("jetson-nano.local:8080", "jetson-nano.local", 8080, False),
    ("[::]:8080", "::", 8080, False),
])
def test_web_addresses(text, host, port, loopback):
    address = parse_web_address(text)
    assert (address.host, address.port, address.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text, problem", [
    ("65536", "from 0 to 65535"), ("-1", "from 0 to 65535"), ("http", "from 0 to 65535"),
    ("host:", "from 0 to 65535"), (":8080", "no host"), ("bad_host:80", "neither an IP address"),
    ("999.1.1.1:80", "neither an IP address"), ("::1:8080", "in brackets"), ("[1.2.3.4]:80", "not an IPv6"),
])
def test_bad_web_addresses_are_refused_by_the_parser(text, problem, capsys):
    with pytest.raises(UsageError, match=problem):
        parse_web_address(text)
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--model", "m.onnx", "--web", text])
    assert exit_info.value.code == 2
    assert problem in capsys.readouterr().err


def test_tokens_beyond_loopback():
    assert access_token(parse_web_address("8080"), None) is None  # loopback: none needed
    generated = {access_token(parse_web_address("0.0.0.0:8080"), None) for _ in range(2)}
    assert len(generated) == 2 and all(len(token) >= 32 for token in generated)
    assert access_token(parse_web_address("0.0.0.0:8080"), TOKEN) == TOKEN
    assert access_token(parse_web_address("8080"), TOKEN) == TOKEN  # given on loopback: required there too
    with pytest.raises(UsageError, match="at least 16"):
        check_token("short")
    with pytest.raises(UsageError, match="only letters"):
        check_token("a token with spaces in it")


def test_the_command_line_refuses_a_weak_or_lone_token(capsys):
    for argv, problem in ((["--web", "8080", "--web-token", "short"], "at least 16"),
                          (["--web-token", TOKEN], "--web-token needs --web")):
        with pytest.raises(SystemExit):
            main(["--model", "m.onnx", *argv])
        assert problem in capsys.readouterr().err


def test_binding_beyond_loopback_without_a_token_is_refused():
    with pytest.raises(UsageError, match="needs an access token"):
        WebViewer(WebAddress("0.0.0.0", 0), None)


def test_ipv6_loopback(open_viewers):
    try:
        viewer = open_viewers(WebAddress("::1", 0))
    except WebViewerError as error:
        pytest.skip(f"no IPv6 loopback here: {error}")
    feed(viewer, 1)
    assert viewer.url == f"http://[::1]:{viewer.port}/"
    assert get(viewer.url + "api/state")[0] == 200


def test_a_taken_port_is_one_clear_error(open_viewers):
    first = open_viewers()
    with pytest.raises(WebViewerError, match=f"127.0.0.1:{first.port}: cannot listen there"):
        WebViewer(WebAddress("127.0.0.1", first.port), None)


def test_several_sources_each_have_their_video_and_state(open_viewers):
    viewer = open_viewers()
    for source in (0, 1, 2):
        feed(viewer, 2 + source, source=source, size=(120, 160 + 40 * source))
    state = json.loads(get(base(viewer) + "/api/state")[2])
    assert [(s["source"], s["frames"]) for s in state["sources"]] == [(0, 2), (1, 3), (2, 4)]
    stream = open_stream(viewer, "/video/2.mjpg")
    assert status_of(stream) == 200
    feed(viewer, 1, source=2, first=10, size=(120, 240))
    stream.settimeout(5.0)
    data = b""
    while data.count(b"\xff\xd9") < 1:  # the end of one JPEG
        data += stream.recv(1 << 16)
    jpeg = data[data.index(b"\xff\xd8"):data.index(b"\xff\xd9") + 2]
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (120, 240, 3)
    stream.close()


def test_capture_events_are_shown_with_their_source(open_viewers):
    viewer = open_viewers()
    feed(viewer, 2)
    viewer.on_source(0, "dropped", "no frame for 5 s; reconnecting")
    viewer.on_source(1, "lost", "did not come back after 5 attempts")  # a source that never delivered
    sources = json.loads(get(base(viewer) + "/api/state")[2])["sources"]
    assert [(s["source"], s["frames"], s["health"]["state"]) for s in sources] == [(0, 2, "reconnecting"),
                                                                                   (1, 0, "lost")]
    assert sources[0]["health"]["detail"] == "no frame for 5 s; reconnecting"
    viewer.on_source(0, "reconnected", "after 1 attempt")
    assert json.loads(get(base(viewer) + "/api/state")[2])["sources"][0]["health"]["state"] == "live"


@pytest.mark.parametrize("given", [None, "env", "option"])
def test_ssd_demo_beyond_loopback_prints_a_url_with_its_token(model_path, tmp_path, monkeypatch, given):
    """`ssd-demo --web 0.0.0.0:0` (requests here go to 127.0.0.1 only): with no token given one
    is generated and printed in the URL; a given one (option or environment) is the one used.
    Without it the demo's viewer answers 401, with it the state."""
    clip = write_video(tmp_path / "clip.avi", 20)
    argv = ["--model", model_path, "--source", str(clip), "--loop", "--headless", "--output",
            str(tmp_path / "out.mp4"), "--web", "0.0.0.0:0"]
    if given == "option":
        argv += ["--web-token", TOKEN]
    monkeypatch.delenv("SSD_DEMO_WEB_TOKEN", raising=False)
    if given == "env":
        monkeypatch.setenv("SSD_DEMO_WEB_TOKEN", TOKEN)
    demo = DemoProcess(argv)
    try:
        found = demo.wait_for(r"web viewer on 0\.0\.0\.0:(\d+), access token (generated|required).*"
                              r": (http://127\.0\.0\.1:\d+/\?token=([A-Za-z0-9_.~-]+))\s*$", timeout=60)
        port, how, url, token = found.groups()
        assert how == ("generated" if given is None else "required")
        assert len(token) >= 32 if given is None else token == TOKEN
        demo.wait_for(r"recording to", timeout=60)
        assert get(f"http://127.0.0.1:{port}/api/state")[0] == 401
        wait_until(lambda: json.loads(get(url.replace("/?", "/api/state?"))[2])["sources"], timeout=20,
                   what="a frame in the state")
        assert demo.stop() == 0
    finally:
        demo.stop()


def test_the_event_stream_shows_a_stalled_source_ageing(open_viewers):
    """No new frame: the state is still pushed about once a second, with the record's age growing."""
    viewer = open_viewers()
    feed(viewer, 1)
    events = open_stream(viewer, "/events")
    assert status_of(events) == 200
    events.settimeout(0.2)
    pushed, deadline = b"", time.monotonic() + 2.6
    while time.monotonic() < deadline:
        try:
            pushed += events.recv(1 << 16)
        except socket.timeout:
            pass
    ages = [json.loads(line[6:])["sources"][0]["age_s"] for line in pushed.split(b"\n") if line.startswith(b"data: ")]
    assert len(ages) >= 3 and ages == sorted(ages) and ages[-1] >= 1.5, ages
    events.close()


# -- refusals -------------------------------------------------------------------------------------

PATHS = ("/", "/api/state", "/events", "/video/0.mjpg", "/snapshot/0.jpg")


def test_without_the_token_nothing_is_served(open_viewers):
    """Bound to all interfaces (requests here go to loopback only): every path needs the
    token; without it 401, with a wrong one 403, and the answer says nothing of the camera."""
    viewer = open_viewers(WebAddress("0.0.0.0", 0), TOKEN)
    feed(viewer, 3)
    for path in PATHS:
        for query, headers, expected in (("", {}, 401), ("?token=wrong-token-0123456789", {}, 403),
                                         ("", {"Authorization": "Bearer wrong-token-0123456789"}, 403),
                                         ("?token=", {}, 401)):
            status, response_headers, body = get(base(viewer) + path + query, headers)
            assert status == expected, (path, query, headers)
            assert response_headers["Content-Type"].startswith("text/plain")
            assert len(body) < 100 and b"square" not in body and b"frame" not in body and b"\xff\xd8" not in body
    status, _, body = get(f"{base(viewer)}/api/state?token={TOKEN}")
    assert status == 200 and json.loads(body)["sources"][0]["record"]["frame"] == 3
    feeder = threading.Thread(target=feed, args=(viewer, 20), kwargs={"first": 4, "pause_s": 0.05})
    feeder.start()  # a snapshot is of the next frame the loop hands over
    status, _, body = get(f"{base(viewer)}/snapshot/0.jpg", {"Authorization": f"Bearer {TOKEN}"})
    feeder.join()
    assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)


def test_loopback_refuses_other_host_names(open_viewers):
    """Without a token, a page of another site that a DNS trick points at 127.0.0.1 (its
    requests carry its own Host) gets nothing."""
    viewer = open_viewers()
    feed(viewer, 1)
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert get(f"{base(viewer)}/api/state", {"Host": f"{host}:{viewer.port}"})[0] == 200
    status, _, body = get(f"{base(viewer)}/api/state", {"Host": f"attacker.example:{viewer.port}"})
    assert status == 403 and b"frame" not in body


def test_the_page_is_self_contained(open_viewers):
    viewer = open_viewers()
    status, headers, body = get(base(viewer) + "/")
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "http://" not in page and "https://" not in page and "//cdn" not in page  # no external assets
    policy = headers["Content-Security-Policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page and "default-src 'none'" in policy
    assert get(base(viewer) + "/")[1]["Content-Security-Policy"] != policy  # a nonce per page
    assert "Python" not in headers["Server"]
    assert get(base(viewer) + "/video/7.mjpg")[0] == 404  # no such source


# -- bounded --------------------------------------------------------------------------------------

def test_more_viewers_than_allowed_get_503(open_viewers):
    viewer = open_viewers(max_viewers=2)
    feed(viewer, 2)
    videos = [open_stream(viewer, "/video/0.mjpg") for _ in range(2)]
    assert [status_of(c) for c in videos] == [200, 200]
    events = [open_stream(viewer, "/events") for _ in range(2)]
    assert [status_of(c) for c in events] == [200, 200]
    assert get(base(viewer) + "/video/0.mjpg")[0] == 503
    assert get(base(viewer) + "/events")[0] == 503
    assert get(base(viewer) + "/api/state")[0] == 200  # plain requests are not viewers
    videos.pop().close()
    wait_until(lambda: viewer.viewers()["video"] == 1, what="the closed viewer's slot freed")
    again = open_stream(viewer, "/video/0.mjpg")
    assert status_of(again) == 200
    for connection in [*videos, *events, again]:
        connection.close()


def test_connections_beyond_the_limit_get_503_at_once(open_viewers):
    """Requests never finished (a slow or hostile client) take connections up to the limit
    (viewers x (sources + 1) + 8); the next one is answered 503 at once, and the server
    serves again once they go."""
    viewer = open_viewers(max_viewers=1)
    feed(viewer, 1)
    limit = viewer.config.max_connections(1)
    assert limit == 10
    idle = []
    for _ in range(limit):
        connection = socket.create_connection(("127.0.0.1", viewer.port))
        connection.sendall(b"GET /api/state HTTP/1.1\r\n")  # the request is never finished
        idle.append(connection)
    wait_until(lambda: len(viewer._connections) == limit, what="the idle connections taken")
    assert get(base(viewer) + "/api/state")[0] == 503
    for connection in idle:
        connection.close()
    wait_until(lambda: get(base(viewer) + "/api/state")[0] == 200, what="served again")


def read_parts(connection, seconds):
    """Frame numbers can't be seen in an MJPEG part; count the parts that arrive."""
    connection.settimeout(0.2)
    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(1 << 20)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    return data.count(b"Content-Type: image/jpeg")


def test_a_stalled_viewer_loses_frames_not_the_loop(open_viewers):
    """A viewer that reads nothing (a small receive buffer, filled at once by 200 kB
    pictures): the frames keep being handed over without waiting, a live viewer keeps
    receiving them, the stalled one gets far fewer (frames dropped for it alone)."""
    viewer = open_viewers(video_fps=1000.0)
    feed(viewer, 1, size=(480, 640))
    stalled = open_stream(viewer, "/video/0.mjpg", receive_buffer=4096)
    live = open_stream(viewer, "/video/0.mjpg")
    assert status_of(live) == 200
    wait_until(lambda: viewer.viewers()["video"] == 2, what="both viewers connected")
    received = {}
    reader = threading.Thread(target=lambda: received.update(live=read_parts(live, 6.0)))
    reader.start()
    longest = feed(viewer, 60, first=2, size=(480, 640), pause_s=0.05)
    reader.join()
    stalled_parts = read_parts(stalled, 1.0)
    assert received["live"] >= 20, received
    assert stalled_parts < received["live"] / 2, (stalled_parts, received)
    assert longest < 1.0  # handed over without waiting for any socket (bench_web.py measures the cost)
    stalled.close()
    live.close()


def test_a_stalled_viewer_is_dropped_after_the_stall_timeout(open_viewers):
    viewer = open_viewers(max_viewers=1, stall_timeout_s=0.5, video_fps=1000.0)
    feed(viewer, 1, size=(480, 640))
    stalled = open_stream(viewer, "/video/0.mjpg", receive_buffer=4096)
    wait_until(lambda: viewer.viewers()["video"] == 1, what="the viewer connected")
    feeder = threading.Thread(target=feed, args=(viewer, 40), kwargs={"first": 2, "size": (480, 640),
                                                                     "pause_s": 0.05})
    feeder.start()
    wait_until(lambda: viewer.viewers()["video"] == 0, timeout=5.0, what="the stalled viewer dropped")
    feeder.join()
    assert status_of(open_stream(viewer, "/video/0.mjpg")) == 200  # its slot is free again
    stalled.close()


def test_close_returns_within_a_second_with_a_stalled_viewer(open_viewers):
    viewer = open_viewers(video_fps=1000.0)
    feed(viewer, 1, size=(480, 640))
    stalled = open_stream(viewer, "/video/0.mjpg", receive_buffer=4096)
    events = open_stream(viewer, "/events", receive_buffer=4096)
    half_sent = socket.create_connection(("127.0.0.1", viewer.port))  # a request never finished
    half_sent.sendall(b"GET /api/state HTTP/1.1\r\n")
    wait_until(lambda: viewer.viewers()["video"] == 1 and viewer.viewers()["events"] == 1, what="viewers connected")
    feed(viewer, 20, first=2, size=(480, 640), pause_s=0.02)
    threads_before = threading.active_count()
    begin = time.monotonic()
    viewer.close()
    assert time.monotonic() - begin < 1.0
    wait_until(lambda: threading.active_count() <= threads_before - 4, timeout=1.0, what="the viewer's threads ended")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", viewer.port), timeout=1.0)
    viewer.on_frame(0, noise(0), {"frame": 99})  # after close: ignored, no error
    for connection in (stalled, events, half_sent):
        connection.close()


# -- with the demo loop ---------------------------------------------------------------------------

def test_the_state_and_pictures_of_a_demo_run(open_viewers, tmp_path):
    clip = write_video(tmp_path / "shapes.avi", 30)
    settings = DemoOptions(model="unused", source=str(clip), headless=True, output=str(tmp_path / "out.mp4"),
                            count_line=((100.0, 120.0), (100.0, 0.0)))
    viewer = open_viewers()
    events = open_stream(viewer, "/events")
    assert status_of(events) == 200
    summary = record_demo(ShapeDetector(), FrameGrabber(lambda: cv2.VideoCapture(str(clip)), live=False), settings,
                          fps=20, observers=[viewer])
    assert viewer.hub.closed  # the loop closed it
    log = [json.loads(line) for line in summary.log.read_text().splitlines()]
    state = viewer.hub.state()
    (source,) = state["sources"]
    assert source["source"] == 0 and source["frames"] == 30
    assert json.loads(json.dumps(source["record"])) == log[-1]
    assert source["recent_crossings"] == [c for record in log for c in record["crossings"]][-20:]
    assert source["recent_crossings"]  # the clip's shapes cross the line
    events.settimeout(2.0)
    pushed = b""
    while True:
        chunk = events.recv(1 << 16)
        if not chunk:
            break  # closed with the demo
        pushed += chunk
    states = [json.loads(line[len(b"data: "):]) for line in pushed.split(b"\n") if line.startswith(b"data: ")]
    with_frames = [s for s in states if s["sources"]]
    assert with_frames and all(s["sources"][0]["record"] in log for s in with_frames)
    events.close()
