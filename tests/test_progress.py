"""Progress without tqdm (a runtime-only install): a line on stderr at each tenth."""

from ssd_edge.common.progress import LineProgress


def test_line_progress_prints_each_tenth_once(capsys):
    bar = LineProgress(total=20, desc="eval val", unit="img")
    for _ in range(20):
        bar.update(1)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "eval val: 2/20 img" and lines[-1] == "eval val: 20/20 img" and len(lines) == 10


def test_line_progress_iterates_and_can_be_disabled(capsys):
    assert list(LineProgress(range(3), desc="synth", unit="img")) == [0, 1, 2]
    assert capsys.readouterr().err.splitlines()[-1] == "synth: 3/3 img"
    assert list(LineProgress(range(3), desc="quiet", disable=True)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
