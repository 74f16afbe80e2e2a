"""Models and images for the export tests: random SSDs with realistic activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssd_edge.models import build_model
from ssd_edge.models.calibration import calibrate_batchnorm
from ssd_edge.runtime.image_io import list_images, read_image
from ssd_edge.runtime.preprocess import preprocess

CLASSES = ("__background__", "circle", "square", "triangle")


def dataset_images(root: Path) -> list[np.ndarray]:
    """Every image of a (synthetic) dataset, BGR uint8, in path order."""
    return [read_image(p) for p in list_images(root, recursive=True)]


def calibrated_model(arch: str, images: list[np.ndarray], **kwargs) -> torch.nn.Module:
    """A fresh `arch` SSD whose BatchNorm statistics come from `images`, in eval mode."""
    torch.manual_seed(0)
    model = build_model(arch, CLASSES, **kwargs)
    return calibrate_batchnorm(model, torch.from_numpy(preprocess(images, model.spec.input_size)))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def run_engine(engine, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """locs and confs of a deserialized TensorRT `engine` for the batch `x`, through torch CUDA
    tensors (no pycuda needed); skips the test where torch has no CUDA."""
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here: the engine was built but cannot be run from the tests")
    context = engine.create_execution_context()
    context.set_input_shape("images", x.shape)
    tensors = {"images": torch.from_numpy(x).cuda()}
    for name in ("locs", "confs"):
        tensors[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
    for name, tensor in tensors.items():
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.Stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return tensors["locs"].cpu().numpy(), tensors["confs"].cpu().numpy()

def torchvision_ssdlite_state_dict(images: list[np.ndarray]) -> dict:
    """A state dict laid out as torchvision's SSDLite320 COCO weights file (the file its
    weights API downloads), with random weights and BatchNorm statistics of `images`."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    from ssd_edge.models.torchvision_import import coco_category_names, detector_state_dict, load_torchvision_detector

    torch.manual_seed(0)
    torchvision_model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
    torchvision_keys = torchvision_model.state_dict()
    ours = load_torchvision_detector(build_model("mobilenetv3_ssd", coco_category_names()), torchvision_keys)
    calibrate_batchnorm(ours, torch.from_numpy(preprocess(images, ours.spec.input_size)))
    renamed = detector_state_dict(ours, {key: key for key in torchvision_keys})  # our key -> torchvision's
    weights = ours.state_dict()
    state_dict = {torchvision_key: weights[key] for key, torchvision_key in renamed.items()}
    torchvision_model.load_state_dict(state_dict)  # strict: exactly torchvision's layout
    return state_dict
