"""A model whose ssd-edge metadata disagrees with its network is refused when it is opened,
with one line naming the file, by every tool (never a traceback, ghost classes or a
multi-terabyte allocation sized from nonsense)."""

import json
import zlib

import cv2
import numpy as np
import pytest

from ssd_edge.cli.predict import main as predict_main
from ssd_edge.runtime import Detector
from ssd_edge.runtime.image_io import ImageError, read_image
from ssd_edge.runtime.spec import METADATA_KEY, SpecError

onnx = pytest.importorskip("onnx")


def with_metadata(source, target, change):
    """A copy of the ONNX model `source` whose stored ModelSpec went through `change(dict)`."""
    proto = onnx.load(str(source))
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            data = json.loads(prop.value)
            change(data)
            prop.value = json.dumps(data)
    onnx.save(proto, str(target))
    return target


def absurd_feature_maps(data):
    data["default_boxes"]["feature_maps"] = [[100000, 100000]] * len(data["default_boxes"]["feature_maps"])


def larger_first_map(data):
    maps = data["default_boxes"]["feature_maps"]
    maps[0] = [maps[0][0] + 1, maps[0][1]]


CASES = {
    "fewer class names than scores": (lambda d: d.update(class_names=d["class_names"][:-1]), "class scores per box"),
    "more class names than scores": (lambda d: d.update(class_names=d["class_names"] + ["ghost"]),
                                     "class scores per box"),
    "a short variances": (lambda d: d.update(variances=[0.1]), "variances"),
    "absurd feature maps": (absurd_feature_maps, "larger than the 160x160 input"),
    "feature maps the network does not have": (larger_first_map, "default boxes"),
    "a huge input size": (lambda d: d.update(input_size=[100000, 100000]), "input shape"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_metadata_that_disagrees_with_the_network_is_refused_naming_the_file(model_path, tmp_path, case):
    change, message = CASES[case]
    bad = with_metadata(model_path, tmp_path / "disagreeing.onnx", change)
    with pytest.raises(SpecError, match=message) as raised:
        Detector(bad)
    assert "disagreeing.onnx" in str(raised.value)


def test_ssd_predict_says_so_in_one_line(model_path, tmp_path, capsys):
    bad = with_metadata(model_path, tmp_path / "disagreeing.onnx", CASES["fewer class names than scores"][0])
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SystemExit) as exited:
        predict_main(["--model", str(bad), str(image), "--output", str(tmp_path / "out")])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("ssd-predict: error: ") and "disagreeing.onnx" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header is rewritten to claim width x height (CRC fixed)."""
    ok, data = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = bytearray(data.tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    return bytes(data)


def test_a_png_claiming_40000_by_40000_is_an_error_naming_the_file(model_path, tmp_path, capsys):
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_claiming(40000, 40000))
    with pytest.raises(ImageError, match="huge.png"):
        read_image(huge)
    with pytest.raises(SystemExit) as exited:
        predict_main(["--model", model_path, str(huge), "--output", str(tmp_path / "out")])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "huge.png" in error and "Traceback" not in error


def test_a_latin1_file_name_is_read_and_predicted(model_path, tmp_path):
    name = b"caf\xe9.png".decode("utf-8", "surrogateescape")
    path = tmp_path / name
    path.write_bytes(cv2.imencode(".png", np.full((40, 50, 3), 90, np.uint8))[1].tobytes())
    assert read_image(path).shape == (40, 50, 3)
    assert predict_main(["--model", model_path, str(tmp_path), "--output", str(tmp_path / "out")]) == 0
    assert len(list((tmp_path / "out").glob("*.png"))) == 1


def test_an_int8_model_is_known_by_its_metadata_not_its_name(model_path, tmp_path):
    """Reports call a model 'ONNX int8' when its metadata holds the quantization record
    ssd-export writes (QUANTIZATION_KEY, beside the ModelSpec's key), whatever its file name."""
    from pathlib import Path

    from ssd_edge.runtime.model_file import QUANTIZATION_KEY, format_label

    model_path = Path(model_path)
    proto = onnx.load(str(model_path))
    prop = proto.metadata_props.add()
    prop.key, prop.value = QUANTIZATION_KEY, json.dumps({"flavour": "cpu", "format": "QDQ"})
    onnx.save(proto, str(tmp_path / "renamed.onnx"))
    (tmp_path / "plain.int8.onnx").write_bytes(model_path.read_bytes())
    assert format_label(tmp_path / "renamed.onnx") == "ONNX int8"
    assert format_label(tmp_path / "plain.int8.onnx") == "ONNX"
    assert format_label(model_path) == "ONNX"
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(SpecError, match="broken.onnx: not a readable ONNX model"):
        format_label(tmp_path / "broken.onnx")
