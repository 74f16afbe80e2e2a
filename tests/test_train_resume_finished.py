"""--resume of a run that already finished: 'nothing to do', and no 'saved ...' line, as
nothing is written (issue 27)."""

from ssd_edge.cli.train import main
from ssd_edge.training.train import TrainConfig, train

RUN = dict(arch="mobilenetv3_small_ssd", imgsz=160, epochs=1, batch_size=5, workers=0, progress=False)


def test_resuming_a_finished_run_says_nothing_was_saved(tiny_coco, tmp_path, capsys):
    save = tmp_path / "run" / "ssd.pt"
    train(TrainConfig(datapath=str(tiny_coco), save=str(save), **RUN))
    assert "saved " in capsys.readouterr().out
    before = {p.name: p.read_bytes() for p in save.parent.iterdir() if p.is_file()}
    main(["--resume", str(save)])
    out = capsys.readouterr().out
    assert f"nothing to do: {save} already finished 1 of 1 epochs" in out
    assert "saved " not in out
    assert {p.name: p.read_bytes() for p in save.parent.iterdir() if p.is_file()} == before
