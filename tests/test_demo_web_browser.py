"""ssd-demo --web in a real browser: Debian's headless Chromium, driven by Selenium through
the system chromedriver (nothing downloaded), loads the page of a running `ssd-demo --web`
(the test model over a generated clip, on a free loopback port) and sees the video element
receive changing frames and the detections list update; a screenshot is kept in the test's
tmp dir (SSD_EDGE_WEB_SCREENSHOT=path also saves one there, as README's).

Without Chromium or Selenium the test skips with the reason, except in CI (CI=true), where
.ci/run installs them and their absence is a failure."""

import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from ssd_edge.runtime.demo.web.address import WebAddress
from ssd_edge.runtime.demo.web.server import WebViewer
from tests.helpers.demo import moving_shapes, write_video
from tests.helpers.web import DemoProcess

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PAGE_SIZE = (1280, 760)
# a hash of the video element's pixels as the browser shows them (a canvas copy of the img)
PIXELS_HASH = """
const img = document.querySelector('#grid img');
if (!img || !img.complete || img.naturalWidth === 0) return null;
const canvas = document.createElement('canvas');
canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
const ctx = canvas.getContext('2d'); ctx.drawImage(img, 0, 0);
const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
let h = 0; for (let i = 0; i < data.length; i += 5) h = (h * 31 + data[i]) >>> 0;
return h;
"""


def require_browser():
    """Selenium's webdriver module, or a skip (a failure in CI) naming what is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    try:
        from selenium import webdriver
    except ImportError:
        webdriver = None
        missing.append("the selenium package (setup.cfg's dev extra)")
    if missing:
        reason = f"the browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: .ci/run installs them")
        pytest.skip(reason)
    return webdriver


@pytest.fixture
def browser(tmp_path):
    webdriver = require_browser()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run",
                     "--disable-dev-shm-usage", f"--window-size={PAGE_SIZE[0]},{PAGE_SIZE[1]}",
                     f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def poll(driver, script, accept, timeout, what):
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if accept(value):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: last seen {value!r}")


@pytest.mark.slow
def test_the_page_shows_live_video_and_detections(browser, model_path, tmp_path):
    """Two sources (clips of two sizes) in one demo: a tile each, each showing its clip."""
    clips = [write_video(tmp_path / "wide.mp4", 40, size=(480, 320)),
             write_video(tmp_path / "small.mp4", 40, size=(320, 240))]
    demo = DemoProcess(["--model", model_path, "--source", str(clips[0]), "--source", str(clips[1]), "--loop",
                        "--headless", "--output", str(tmp_path / "out.mp4"), "--score-threshold", "0.3",
                        "--count-line", "240,0,240,320", "--web", "127.0.0.1:0"])
    try:
        url = demo.wait_for(r"web viewer .*: (http://127\.0\.0\.1:\d+/)\s*$", timeout=60)[1]
        demo.wait_for(r"recording to", timeout=60)
        browser.get(url)
        poll(browser, "return [...document.querySelectorAll('#grid img')].map((i) => i.naturalWidth)",
             lambda widths: widths == [480, 320], 30, "the video elements show no frames of their clips' widths")
        first = poll(browser, PIXELS_HASH, lambda h: h is not None, 10, "no pixels in the video element")
        poll(browser, PIXELS_HASH, lambda h: h is not None and h != first, 15,
             "the video element's frame never changes")
        updates = int(browser.find_element("id", "updates").text)
        frames = browser.find_element("id", "detections").get_attribute("data-frames")
        assert re.fullmatch(r"source 0 frame \d+; source 1 frame \d+", frames), frames
        poll(browser, "return document.getElementById('detections').dataset.frames",
             lambda now: now != frames, 10, "the detections list never updates")
        poll(browser, "return Number(document.getElementById('updates').textContent)",
             lambda now: now > updates, 10, "the page's update counter stays still")
        assert browser.find_element("id", "status").text == "live"
        assert browser.find_elements("css selector", "#detections li")
        time.sleep(2.0)  # some plot history for the picture
        screenshot = tmp_path / "web_viewer.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        if os.environ.get("SSD_EDGE_WEB_SCREENSHOT"):
            shutil.copyfile(screenshot, Path(os.environ["SSD_EDGE_WEB_SCREENSHOT"]))
        begin = time.monotonic()
        code = demo.stop()  # with the page still connected
        assert code == 0, "".join(demo.output)
        assert time.monotonic() - begin < 10
        assert "stopped: interrupted" in "".join(demo.output)
    finally:
        demo.stop()


def test_the_page_makes_a_grid_of_the_sources(browser, tmp_path):
    """Four sources handed to the viewer as the loop hands them (source numbers 0-3): the
    page makes a tile for each, and each tile's video shows its own source's frames."""
    viewer = WebViewer(WebAddress("127.0.0.1", 0), None)
    stop = threading.Event()

    def loop():
        frame = 0
        while not stop.is_set():
            frame += 1
            for source in range(4):
                record = {"frame": frame, "latency_ms": 20.0 + 5 * source, "inference_fps": 30.0 - source,
                          "inference_ms": 8.0, "detections": [{"box": [5.0, 20.0, 45.0, 60.0], "label": 1,
                                                               "name": "square", "score": 0.9}]}
                viewer.on_frame(source, moving_shapes(frame + 10 * source, (320 - 40 * source, 240)), record)
            time.sleep(0.04)

    feeder = threading.Thread(target=loop, daemon=True)
    feeder.start()
    try:
        browser.get(viewer.url)
        widths = poll(browser, "return [...document.querySelectorAll('#grid img')].map((i) => i.naturalWidth)",
                      lambda seen: seen == [320, 280, 240, 200], 30, "the grid's tiles do not show their sources")
        assert len(widths) == 4
        assert browser.find_element("id", "video-3").get_attribute("alt") == "source 3"
        time.sleep(1.0)
        assert browser.save_screenshot(str(tmp_path / "web_viewer_grid.png"))
    finally:
        stop.set()
        feeder.join()
        viewer.close()
