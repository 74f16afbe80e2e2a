import dataclasses

import pytest
import torch

from ssd_edge.models import ARCHS, RawOutputs, build_model, model_from_spec
from ssd_edge.runtime.spec import ModelSpec


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_modes_and_shapes(arch):
    model = build_model(arch, ["__background__", "a", "b"])
    size = model.spec.input_size
    images = torch.rand(2, 3, *size)
    model.train()
    locs, confs = model(images)
    assert locs.shape == (2, model.spec.num_priors, 4)
    assert confs.shape == (2, model.spec.num_priors, 3)
    model.eval()
    with torch.no_grad():
        result_boxes, result_labels, result_scores, result_confs = model(images, image_sizes=[(480, 640), size])
        raw = RawOutputs(model)(images)
    assert len(result_boxes) == 2
    assert result_boxes[0].shape[1] == 4 and result_confs[0].shape[1] == 3
    assert result_labels[0].dtype == torch.int64
    assert isinstance(raw, tuple) and raw[0].shape == locs.shape
    if len(result_boxes[0]):
        assert result_boxes[0][:, 2].max() <= 640 and result_boxes[0][:, 3].max() <= 480


def test_parts_keep_the_seed_names():
    model = build_model("mobilenetv3_small_ssd", 2)
    for name in ("backbone", "extras", "classification_headers", "regression_headers", "post_processor"):
        assert hasattr(model, name)
    assert len(model.classification_headers) == len(model.regression_headers) == 6


def test_any_number_of_classes_and_input_size():
    model = build_model("mobilenetv3_ssd", 7, imgsz=(256, 384)).eval()
    assert model.spec.default_boxes.feature_maps[0] == (16, 24)
    with torch.no_grad():
        locs, confs = model.raw(torch.rand(1, 3, 256, 384))
    assert confs.shape == (1, model.spec.num_priors, 7)


def test_spec_round_trip_rebuilds_the_same_model():
    model = build_model("mobilenetv3_ssd", 4, imgsz=288, postprocess={"score_threshold": 0.2})
    spec = ModelSpec.from_json(model.spec.to_json())
    rebuilt = model_from_spec(spec)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.spec == model.spec
    assert rebuilt.post_processor.config.score_threshold == 0.2


@pytest.mark.parametrize("shape", [(1, 1, 320, 320), (1, 4, 320, 320), (3, 320, 320), (1, 3, 300, 320)])
def test_bad_image_tensors_name_the_shape(shape):
    model = build_model("mobilenetv3_small_ssd", 2)
    with pytest.raises(ValueError, match=r"\(.*\)"):
        model(torch.rand(*shape))


def test_unknown_arch_option_and_too_small_input():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model("resnet", 2)
    with pytest.raises(ValueError, match="no option"):
        build_model("vgg16_ssd", 2, reduced_tail=True)
    with pytest.raises(ValueError, match="too small for vgg16_ssd"):
        build_model("vgg16_ssd", 2, imgsz=64)
    with pytest.raises(ValueError, match="at least one class"):
        build_model("mobilenetv3_ssd", 1)


def custom_spec(arch="mobilenetv3_small_ssd", imgsz=160):
    """A spec whose every field is off its default: variances, names, thresholds, mean/std."""
    spec = build_model(arch, ["bg", "cat", "dog"], imgsz, mean=(0.4, 0.45, 0.5), std=(0.2, 0.25, 0.3),
                       postprocess={"score_threshold": 0.3, "top_k": 50}).spec
    return spec.replace(variances=(0.15, 0.25), input_name="pixels", output_names=("deltas", "logits"))


def test_model_from_spec_keeps_every_field_of_the_spec():
    spec = ModelSpec.from_json(custom_spec().to_json())
    model = model_from_spec(spec)
    assert model.spec == spec
    assert model.spec.variances == (0.15, 0.25)
    assert (model.spec.input_name, model.spec.output_names) == ("pixels", ("deltas", "logits"))
    assert model.post_processor.config.variances == (0.15, 0.25)
    assert model.post_processor.config.top_k == 50
    assert model.mean.flatten().tolist() == pytest.approx([0.4, 0.45, 0.5])


def test_model_from_spec_completes_the_arch_options_and_refuses_foreign_default_boxes():
    spec = custom_spec()
    assert model_from_spec(spec.replace(arch_options={})).spec.arch_options == spec.arch_options
    wrong = spec.replace(default_boxes=dataclasses.replace(spec.default_boxes, scales=(0.1,) * 7))
    with pytest.raises(ValueError, match="default boxes do not match"):
        model_from_spec(wrong)
    with pytest.raises(ValueError, match="no option"):
        model_from_spec(spec.replace(arch_options={"depth": 3}))


def test_model_from_spec_at_another_size_lays_what_build_model_lays():
    for arch, imgsz in (("mobilenetv3_ssd", (256, 384)), ("vgg16_ssd", (300, 360))):
        spec = build_model(arch, 2).spec
        resized = model_from_spec(spec, input_size=imgsz).spec
        assert resized.default_boxes == build_model(arch, 2, imgsz).spec.default_boxes
        assert resized == spec.replace(input_size=resized.input_size, default_boxes=resized.default_boxes)
    with pytest.raises(ValueError, match="too small for vgg16_ssd"):
        model_from_spec(build_model("vgg16_ssd", 2).spec, input_size=64)
