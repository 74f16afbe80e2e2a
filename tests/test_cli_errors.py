"""Every command ends on a bad argument with one line and exit 2, through the one handler
(`ssd_edge.cli.run_command`); a programming error keeps its traceback."""

import pytest

from ssd_edge.cli import run_command
from ssd_edge.cli.demo import main as demo_main
from ssd_edge.cli.predict import main as predict_main
from ssd_edge.cli.train import main as train_main
from ssd_edge.common.errors import UsageError


@pytest.mark.parametrize("main, argv, message", [
    (train_main, ["--datapath", "data", "--lr", "-1"], "ssd-train: error: --lr must be positive, got -1.0"),
    (train_main, ["--datapath", "data", "--epochs", "0"], "ssd-train: error: --epochs (0) and --batch-size"),
    (demo_main, ["--model", "m.onnx", "--source", "foo://bar", "--headless"],
     "ssd-demo: error: source 'foo://bar': unknown scheme 'foo://'"),
    (demo_main, ["--model", "m.onnx", "--source", "0", "--max-frames", "0"],
     "ssd-demo: error: max_frames must be at least 1, got 0"),
    (predict_main, ["--model", "m.onnx", "a.jpg", "--output", "out", "--batch", "0"],
     "ssd-predict: error: batch must be at least 1, got 0"),
])
def test_bad_settings_end_in_one_line(tmp_path, monkeypatch, capsys, main, argv, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # nothing written


def test_project_errors_exit_with_their_code_and_bugs_keep_their_traceback(capsys):
    class Refused(UsageError):
        exit_code = 1

    def refuse():
        raise Refused("the value 7 is refused")

    with pytest.raises(SystemExit) as exit_info:
        run_command("ssd-x", refuse)
    assert exit_info.value.code == 1 and capsys.readouterr().err == "ssd-x: error: the value 7 is refused\n"
    with pytest.raises(KeyError):
        run_command("ssd-x", lambda: {}["missing"])
