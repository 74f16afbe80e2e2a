"""The capture thread: newest-frame handover for live sources, every frame for files,
reconnection with backoff, looping, stopping."""

import time

import pytest

from ssd_edge.runtime.demo.capture import FrameGrabber, RetryPolicy
from ssd_edge.runtime.demo.sources import open_capture, parse_source
from tests.helpers.demo import CameraSite, SimulatedCamera, write_video

FAST_RETRY = RetryPolicy(attempts=3, first_delay_s=0.02, factor=2.0, max_delay_s=1.0)


def drain(grabber, consume_s=0.0, limit=10_000):
    """Every frame the grabber hands over until it finishes."""
    frames = []
    while len(frames) < limit:
        frame = grabber.get(timeout=0.05)
        if frame is None:
            if grabber.finished:
                break
            continue
        frames.append(frame)
        time.sleep(consume_s)
    return frames


def test_retry_delays_grow_exponentially_up_to_the_cap():
    policy = RetryPolicy(attempts=6, first_delay_s=0.5, factor=2.0, max_delay_s=4.0)
    assert [policy.delay(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(factor=0.5)


def test_live_source_hands_over_the_newest_frame_and_skips_the_backlog():
    site = CameraSite([60], fps=500.0)
    with FrameGrabber(site.open, live=True, retry=RetryPolicy(attempts=0)) as grabber:
        frames = drain(grabber, consume_s=0.02)  # a model slower than the camera
    stats = grabber.stats
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    assert stats.frames_read == 60
    assert stats.frames_dropped > 0, "a slow consumer must skip frames, not queue them"
    assert len(frames) + stats.frames_dropped == stats.frames_read
    assert indices[-1] == 59, "the last frame read is the last handed over"
    assert stats.source_lost and "0 reconnection attempts" in stats.end_reason


def test_file_source_hands_over_every_frame_in_order(tmp_path):
    source = parse_source(str(write_video(tmp_path / "clip.avi", 25)))
    with FrameGrabber(lambda: open_capture(source)[0], live=source.live) as grabber:
        frames = drain(grabber, consume_s=0.005)
    assert [f.index for f in frames] == list(range(25))
    assert grabber.stats.frames_dropped == 0
    assert grabber.stats.end_reason == "end of file"
    assert not grabber.stats.source_lost


def test_file_loops_when_asked(tmp_path):
    source = parse_source(str(write_video(tmp_path / "clip.avi", 5)))
    with FrameGrabber(lambda: open_capture(source)[0], live=False, loop=True) as grabber:
        frames = [grabber.get(timeout=2.0) for _ in range(12)]
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(12))
    assert grabber.stats.loops >= 2


def test_dropped_live_source_reconnects_then_ends_after_the_retries():
    # delivers 8 frames, drops out, cannot be opened once, comes back for 5 frames,
    # drops out again and never comes back
    site = CameraSite([8, None, 5, None, None, None])
    events = []
    with FrameGrabber(site.open, live=True, retry=FAST_RETRY, notify=events.append) as grabber:
        frames = drain(grabber)
    stats = grabber.stats
    assert stats.frames_read == 13
    assert len(frames) + stats.frames_dropped == 13
    assert stats.reconnects == 1
    assert stats.source_lost
    assert stats.end_reason == "source lost: no frames after 3 reconnection attempts"
    assert all(camera.released.is_set() for camera in site.cameras)
    # 1 first open + 2 attempts for the first drop-out (fail, success) + 3 after the second
    assert len(site.open_times) == 6
    gaps = [b - a for a, b in zip(site.open_times[3:], site.open_times[4:])]
    assert all(gap >= 0.95 * FAST_RETRY.delay(i + 1) for i, gap in enumerate(gaps)), f"no backoff: gaps {gaps}"
    assert any("reconnection attempt 3/3" in line for line in events)
    assert any("source reopened" in line for line in events)


def test_stop_during_backoff_returns_promptly():
    site = CameraSite([3])
    grabber = FrameGrabber(site.open, live=True, retry=RetryPolicy(attempts=5, first_delay_s=30.0))
    grabber.start()
    drain(grabber, limit=3)
    time.sleep(0.1)  # now waiting 30 s before the first reconnection attempt
    began = time.monotonic()
    grabber.stop()
    assert time.monotonic() - began < 2.0
    assert grabber.finished
    assert not grabber.stats.source_lost


def test_a_camera_that_reopens_but_delivers_nothing_still_ends():
    site = CameraSite([4, 0, 0, 0, 0, 0])
    with FrameGrabber(site.open, live=True, retry=FAST_RETRY) as grabber:
        drain(grabber)
    assert grabber.stats.source_lost
    assert len(site.open_times) == 1 + FAST_RETRY.attempts


def test_simulated_camera_stops_when_released():
    camera = SimulatedCamera(100)
    assert camera.read()[0]
    camera.release()
    assert camera.read() == (False, None)
