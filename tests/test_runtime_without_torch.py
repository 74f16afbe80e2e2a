import subprocess
import sys
import textwrap

import pytest


def test_runtime_imports_and_postprocesses_without_torch():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        import numpy as np
        import ssd_edge.runtime as rt
        from ssd_edge.runtime.spec import DefaultBoxConfig
        spec = rt.ModelSpec(
            arch="mobilenetv3_ssd", input_size=(64, 64), class_names=("bg", "a", "b"),
            default_boxes=DefaultBoxConfig(feature_maps=((4, 4), (2, 2)), scales=(0.2, 0.5, 1.0),
                                           aspect_ratios=((2.0,), (2.0,))),
        )
        priors = rt.default_boxes(spec)
        rng = np.random.default_rng(0)
        locs = rng.normal(size=(1, len(priors), 4)).astype(np.float32)
        confs = rng.normal(size=(1, len(priors), 3)).astype(np.float32) * 3
        dets = rt.postprocess(locs, confs, priors, [(64, 64)], spec.postprocess)
        assert len(dets[0].boxes) > 0
        assert not any(name == "torch" or name.startswith("torch.") for name, m in sys.modules.items() if m)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_tracking_imports_and_tracks_without_torch_and_opencv():
    code = textwrap.dedent(
        """
        import sys
        for name in ("torch", "torchvision", "cv2"):
            sys.modules[name] = None  # any import of them now raises ImportError
        import numpy as np
        from ssd_edge.runtime.detections import Detections
        from ssd_edge.runtime.tracking import LineCounter, Tracker, Trails
        tracker, counter = Tracker(min_hits=1), LineCounter((0, 50), (200, 50), anchor="center")
        for step in range(10):
            box = np.array([[20, 10 * step, 40, 10 * step + 20]], np.float32)
            dets = Detections(box, np.array([1]), np.array([0.9], np.float32), np.zeros((1, 2), np.float32))
            tracks = tracker.update(dets, frame=step)
            counter.update(tracks)
        assert tracks.ids.tolist() == [1] and sum(counter.counts.values()) == 1
        assert not any(name.split(".")[0] in ("torch", "cv2") for name, m in sys.modules.items() if m)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_openvino_backend_detects_without_torch(tiny_coco, tmp_path):
    """The OpenVINO path of the torch-free runtime: a Detector on OpenVINO reads an image,
    detects and never imports torch (the ONNX file is made here, with torch, beforehand)."""
    pytest.importorskip("openvino", reason="backend 'openvino' needs `pip install 'ssd-edge[openvino]'`")
    from ssd_edge.export.to_onnx import export_onnx
    from tests.helpers.export import calibrated_model, dataset_images

    images = dataset_images(tiny_coco)
    onnx_path = export_onnx(calibrated_model("mobilenetv3_ssd", images[:4], imgsz=160), tmp_path / "m.onnx")
    image_path = sorted((tiny_coco / "val").glob("*.jpg"))[0]
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["torchvision"] = None
        from ssd_edge.runtime import Detector
        with Detector({str(onnx_path)!r}, backend="openvino", precision="f32", threads=1) as detector:
            found = detector({str(image_path)!r})
        assert not any(n == "torch" or n.startswith("torch.") for n, m in sys.modules.items() if m)
        assert "openvino" in sys.modules
        print(detector.backend, len(found.scores))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    name, count = result.stdout.strip().rsplit(" ", 1)
    assert name.startswith("openvino ") and name.endswith("(CPU, f32)") and int(count) > 0
