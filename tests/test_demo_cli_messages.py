"""ssd-demo's messages (issue 27): a counting line outside the frame is warned about once,
at the source's first frame, with the frame's size; a zero-length line is refused by the
parser as the user wrote it (issue 22 item 6)."""

import subprocess
import sys

import pytest

from ssd_edge.cli.demo import main
from tests.helpers.demo import FRAME_SIZE, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", 6)


def test_a_line_outside_the_frame_is_warned_about_once(model_path, clip, tmp_path, capsys):
    width, height = FRAME_SIZE
    main(["--model", model_path, "--source", str(clip), "--headless", "--output", str(tmp_path / "out.mp4"),
          "--count-line", f"{width + 50},0,{width + 50},{height}"])
    out = capsys.readouterr().out
    warning = (f"ssd-demo: warning: counting line ({width + 50},0)-({width + 50},{height}) lies outside the "
               f"{width}x{height} frame: nothing can cross it")
    assert out.count(warning) == 1, out
    assert "stopped: end of file." in out


def test_a_line_inside_the_frame_gets_no_warning(model_path, clip, tmp_path, capsys):
    main(["--model", model_path, "--source", str(clip), "--headless", "--output", str(tmp_path / "out.mp4"),
          "--count-line", "10,10,100,100"])
    assert "warning: counting line" not in capsys.readouterr().out


def test_a_zero_length_line_is_refused_by_the_parser(model_path, clip, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--model", model_path, "--source", str(clip), "--headless", "--output", str(tmp_path / "out.mp4"),
              "--count-line", "50,50,50,50"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --count-line: a counting line needs two different ends, got 50,50,50,50 (zero length)" in err
    assert "50.0" not in err and not (tmp_path / "out.mp4").exists()


# ssd-demo as its console script runs it (main() reading sys.argv).
AS_COMMAND = "import sys; from ssd_edge.cli.demo import main; sys.exit(main())"


@pytest.mark.slow
def test_a_stream_that_never_answers_exits_2_without_aborting(model_path, tmp_path):
    """The open given up on after the timeout is still inside OpenCV when the command ends:
    it exits 2 past it instead of racing it (SIGABRT, issue 22 item 5; 1 run in 2 aborted)."""
    from tests.test_demo_safety import silent_server

    port, close = silent_server()
    try:
        for attempt in range(3):
            done = subprocess.run([sys.executable, "-c", AS_COMMAND, "--model", model_path, "--source",
                                   f"rtsp://127.0.0.1:{port}/live", "--headless", "--output", str(tmp_path / "o.mp4")],
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 2 and "terminate called" not in done.stderr, (attempt, done.stderr)
            assert "ssd-demo: error: cannot open source" in done.stderr
            assert not (tmp_path / "o.mp4").exists()
    finally:
        close()
