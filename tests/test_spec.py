import json

import pytest

from ssd_edge.runtime.spec import FORMAT_VERSION, DefaultBoxConfig, ModelSpec, SpecError


def make_spec(**changes):
    values = dict(
        arch="mobilenetv3_ssd",
        input_size=(320, 320),
        class_names=("__background__", "circle", "square"),
        default_boxes=DefaultBoxConfig(
            feature_maps=((20, 20), (10, 10)),
            scales=(0.2, 0.5, 1.0),
            aspect_ratios=((2.0, 3.0), (2.0,)),
        ),
        arch_options={"reduced_tail": True},
    )
    values.update(changes)
    return ModelSpec(**values)


def test_json_round_trip_is_exact():
    spec = make_spec(score_threshold=0.3, mean=(0.1, 0.2, 0.3))
    text = spec.to_json()
    assert ModelSpec.from_json(text) == spec
    assert json.loads(text)["format_version"] == FORMAT_VERSION


def test_counts():
    spec = make_spec()
    assert spec.num_classes == 3
    assert spec.default_boxes.boxes_per_location == (6, 4)
    assert spec.num_priors == 20 * 20 * 6 + 10 * 10 * 4


def test_other_format_version_is_refused():
    data = make_spec().to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(SpecError, match="format_version"):
        ModelSpec.from_dict(data)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("class_names"), "malformed"),
        (lambda d: d.update(bogus=1), "unknown ModelSpec fields"),
        (lambda d: d["default_boxes"].update(scales=[0.2, 0.5]), "scales"),
        (lambda d: d.update(class_names=["__background__"]), "at least one class"),
    ],
)
def test_malformed_specs_name_the_problem(mutate, message):
    data = make_spec().to_dict()
    mutate(data)
    with pytest.raises(SpecError, match=message):
        ModelSpec.from_dict(data)


def test_not_json():
    with pytest.raises(SpecError, match="not valid JSON"):
        ModelSpec.from_json("{nope")


def test_too_small_feature_map():
    with pytest.raises(SpecError, match="too small"):
        DefaultBoxConfig(feature_maps=((0, 1),), scales=(0.2, 1.0), aspect_ratios=((2.0,),))
