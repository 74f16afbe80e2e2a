"""--weights (issue 22 item 9): a checkpoint of another architecture is refused by name, not
loaded in part where layer names happen to match; what is not loaded is named with why."""

import pytest
import torch

from ssd_edge.checkpoint import load_checkpoint, save_checkpoint
from ssd_edge.common.errors import SSDEdgeError
from ssd_edge.models import build_model
from ssd_edge.training.train import TrainConfig, train


def config(data, save, **changes):
    values = dict(datapath=str(data), arch="mobilenetv3_small_ssd", imgsz=160, epochs=1, batch_size=4,
                  lr=0.001, workers=0, save=str(save), progress=False)
    values.update(changes)
    return TrainConfig(**values)


def test_weights_of_another_architecture_are_refused_by_name(tiny_coco, tmp_path):
    small = tmp_path / "small.pt"
    save_checkpoint(small, build_model("mobilenetv3_small_ssd", ("background", "circle", "square", "triangle"), 160))
    save = tmp_path / "large.pt"
    with pytest.raises(SSDEdgeError) as error:
        train(config(tiny_coco, save, arch="mobilenetv3_ssd", weights=str(small)))
    message = str(error.value)
    assert message.startswith(f"{small}: holds a mobilenetv3_small_ssd model, and this run trains --arch "
                              "mobilenetv3_ssd"), message
    assert "--arch mobilenetv3_small_ssd" in message and not save.exists()


def test_the_command_says_it_in_one_line(tiny_coco, tmp_path, capsys):
    from ssd_edge.cli.train import main

    small = tmp_path / "small.pt"
    save_checkpoint(small, build_model("mobilenetv3_small_ssd", ("background", "a"), 160))
    with pytest.raises(SystemExit) as exit_info:
        main(["--datapath", str(tiny_coco), "--arch", "vgg16_ssd", "--weights", str(small), "--save",
              str(tmp_path / "v.pt"), "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds a mobilenetv3_small_ssd model" in err and "Traceback" not in err


def test_weights_for_another_class_list_name_the_heads_left_out_and_why(tiny_coco, tmp_path, capsys):
    source = build_model("mobilenetv3_small_ssd", ("background", "cat", "dog"), 160)
    path = tmp_path / "pets.pt"
    save_checkpoint(path, source)
    save = tmp_path / "ssd.pt"
    train(config(tiny_coco, save, weights=str(path), lr=1e-9, warmup_epochs=0))
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("weights:"))
    assert line.startswith(f"weights: 396/408 tensors from {path}; not loaded, so they keep their initialisation: "
                           "classification heads (12 tensors): the weights are for another class list (2: cat, dog; "
                           "this run has 3: circle, square, triangle)"), line
    trained = load_checkpoint(save)["model"]
    own = source.state_dict()
    assert torch.allclose(trained["regression_headers.0.1.weight"], own["regression_headers.0.1.weight"], atol=1e-5)


def test_weights_of_the_same_run_load_whole(tiny_coco, tmp_path, capsys):
    path = tmp_path / "same.pt"
    save_checkpoint(path, build_model("mobilenetv3_small_ssd", ("background", "circle", "square", "triangle"), 160))
    train(config(tiny_coco, tmp_path / "ssd.pt", weights=str(path)))
    assert f"weights: 408/408 tensors from {path}\n" in capsys.readouterr().out
