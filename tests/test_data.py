"""Dataset layouts, cleaning, `ssd-dataset check` and augmentation."""

import json
import re
import shutil

import cv2
import numpy as np
import pytest

from ssd_edge.cli.dataset import main as dataset_main
from ssd_edge.data.check import check_dataset
from ssd_edge.data.sources import DatasetError, load_splits
from ssd_edge.data.synth import CATEGORY_IDS, CLASSES, SynthConfig, make_image
from ssd_edge.data.transforms import TrainAugment, hflip, iou_crop


def test_synthetic_data_is_as_hard_as_stated():
    rng = np.random.default_rng(0)
    sizes, kinds, colours = [], set(), set()
    for _ in range(60):
        image, objects = make_image(rng, SynthConfig())
        assert image.dtype == np.uint8 and image.ndim == 3
        assert image.std() > 10  # textured, not flat
        for kind, (x1, y1, x2, y2) in objects:
            kinds.add(kind)
            sizes.append(max(x2 - x1, y2 - y1) / min(image.shape[:2]))
            colours.add(tuple(image[int((y1 + y2) / 2), int((x1 + x2) / 2)] // 64))
    assert kinds == {0, 1, 2}
    assert min(sizes) < 0.1 and max(sizes) > 0.5
    assert len(colours) > 10


def test_coco_layout_maps_category_ids_to_contiguous_labels(tiny_coco):
    splits = load_splits(tiny_coco)
    assert set(splits) == {"train", "val"}
    train = splits["train"]
    assert train.class_names == ("__background__",) + CLASSES
    assert train.category_ids == CATEGORY_IDS
    assert set(np.concatenate([r.labels for r in train.records])) <= {1, 2, 3}
    document = json.loads((tiny_coco / "annotations" / "instances_train.json").read_text())
    assert sum(len(r.labels) for r in train.records) == len(document["annotations"])


def test_boxes_are_clipped_and_degenerate_ones_dropped(tiny_coco, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    path = data / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    image = document["images"][0]
    document["annotations"].append({"id": 9001, "image_id": image["id"], "category_id": 1,
                                    "bbox": [image["width"] - 10, 5, 50, 20], "iscrowd": 0})
    document["annotations"].append({"id": 9002, "image_id": image["id"], "category_id": 1,
                                    "bbox": [5, 5, 0, 20], "iscrowd": 0})
    path.write_text(json.dumps(document))
    train = load_splits(data)["train"]
    assert (train.clipped_boxes, train.dropped_boxes) == (1, 1)
    record = next(r for r in train.records if r.image_id == image["id"])
    assert record.boxes[:, 2].max() <= image["width"]


def write_flat(root, tiny_coco):
    (root / "images").mkdir(parents=True)
    for jpg in (tiny_coco / "train").iterdir():
        shutil.copy(jpg, root / "images" / jpg.name)
    shutil.copy(tiny_coco / "annotations" / "instances_train.json", root / "annotations.json")


def test_flat_layout(tiny_coco, tmp_path):
    write_flat(tmp_path, tiny_coco)
    splits = load_splits(tmp_path)
    assert list(splits) == ["train"] and splits["train"].layout == "flat"
    assert len(splits["train"].records) == 10


def write_voc(root, tiny_coco, with_labels_txt):
    """The synthetic data as jetson-inference's camera-capture tool writes Pascal VOC."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    for split in ("train", "val"):
        document = json.loads((tiny_coco / "annotations" / f"instances_{split}.json").read_text())
        names = {c["id"]: c["name"] for c in document["categories"]}
        stems = []
        for image in document["images"]:
            stem = f"{split}_{image['id']}"
            stems.append(stem)
            shutil.copy(tiny_coco / split / image["file_name"], root / "JPEGImages" / f"{stem}.jpg")
            objects = "".join(
                f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{a['bbox'][0] + 1}</xmin><ymin>{a['bbox'][1] + 1}</ymin>"
                f"<xmax>{a['bbox'][0] + a['bbox'][2]}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]}</ymax>"
                "</bndbox></object>"
                for a in document["annotations"] if a["image_id"] == image["id"]
            )
            (root / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><filename>{stem}.jpg</filename><size><width>{image['width']}</width>"
                f"<height>{image['height']}</height><depth>3</depth></size>{objects}</annotation>"
            )
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    if with_labels_txt:
        (root / "labels.txt").write_text("triangle\ncircle\nsquare\n")


@pytest.mark.parametrize("with_labels_txt", [True, False])
def test_voc_layout(tiny_coco, tmp_path, with_labels_txt):
    write_voc(tmp_path, tiny_coco, with_labels_txt)
    splits = load_splits(tmp_path)
    assert set(splits) == {"train", "val"} and splits["train"].layout == "voc"
    expected = ("triangle", "circle", "square") if with_labels_txt else ("circle", "square", "triangle")
    assert splits["train"].class_names[1:] == expected
    coco = load_splits(tiny_coco)["train"]
    voc = splits["train"]
    assert voc.num_objects == coco.num_objects
    np.testing.assert_allclose(voc.records[0].boxes, coco.records[0].boxes, atol=0.01)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: d.pop("categories"), "'categories' is missing or not a list"),
        (lambda d: d["annotations"][3].pop("bbox"), r"annotations\[3\] has no valid 'bbox'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"annotation 1 has a bbox that is not \[x, y, w, h\]"),
        (lambda d: d["images"][1].update(id="seven"), r"images\[1\] has no valid 'id'"),
    ],
)
def test_malformed_coco_names_the_file_and_the_entry(tiny_coco, tmp_path, damage, message):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    path = data / "annotations" / "instances_val.json"
    document = json.loads(path.read_text())
    damage(document)
    path.write_text(json.dumps(document))
    with pytest.raises(DatasetError, match=f"instances_val.json: {message}"):
        load_splits(data)


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset layout"):
        load_splits(tmp_path)
    with pytest.raises(DatasetError, match="no such dataset directory"):
        load_splits(tmp_path / "nope")


def test_check_finds_planted_faults_and_changes_nothing(tiny_coco, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    path = data / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    images = document["images"]
    (data / "train" / images[0]["file_name"]).unlink()
    (data / "train" / images[1]["file_name"]).write_bytes(b"garbage")
    anns = document["annotations"]
    width_of = {image["id"]: image["width"] for image in images}
    anns[0]["bbox"] = [width_of[anns[0]["image_id"]] - 5, 1, 30, 10]  # outside the image
    anns[1]["bbox"] = [10, 10, 0, 5]  # zero area
    anns[2]["category_id"] = 42
    anns[3]["id"] = anns[4]["id"]
    document["annotations"] = [a for a in anns if a["image_id"] != images[5]["id"]]
    path.write_text(json.dumps(document))
    snapshot = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}

    report = check_dataset(data, progress=False)
    kinds = {kind: len(places) for kind, places in report.problems.items()}
    assert kinds["missing images"] == 1 and kinds["unreadable images"] == 1
    assert kinds["boxes outside the image"] == 1 and kinds["boxes of zero area"] == 1
    assert kinds["unknown category ids"] == 1 and kinds["duplicate annotation ids"] == 1
    assert kinds["images without annotations"] >= 1
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == snapshot

    with pytest.raises(SystemExit) as exit_info:
        dataset_main(["check", str(data)])
    assert exit_info.value.code == 1
    assert "missing images: 1" in capsys.readouterr().out


def test_check_clean_dataset_and_synth_cli(tmp_path, capsys):
    dataset_main(["synth", str(tmp_path / "d"), "--train", "3", "--val", "2", "--seed", "1"])
    assert "train: 3 images" in capsys.readouterr().out
    assert len(list((tmp_path / "d" / "train").glob("*.jpg"))) == 3
    assert check_dataset(tmp_path / "d", progress=False).ok


def test_augmentation_keeps_boxes_valid():
    rng = np.random.default_rng(0)
    augment = TrainAugment((160, 160))
    for i in range(40):
        image, objects = make_image(rng, SynthConfig(min_side=120, max_side=200))
        boxes = np.array([b for _, b in objects], np.float32)
        labels = np.array([k + 1 for k, _ in objects])
        chw, boxes01, kept = augment(image, boxes, labels, np.random.default_rng(i))
        assert chw.shape == (3, 160, 160) and chw.dtype == np.float32
        assert 0.0 <= chw.min() and chw.max() <= 1.0
        assert len(boxes01) == len(kept)
        if len(boxes01):
            assert boxes01.min() >= 0 and boxes01.max() <= 1.0
            assert np.all(boxes01[:, 2:] > boxes01[:, :2])


def test_flip_and_crop_by_hand():
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :5] = 255
    boxes = np.array([[0, 0, 5, 10]], np.float32)
    flipped, fboxes, _ = hflip((image, boxes, np.array([1])))
    assert flipped[:, 15:].min() == 255 and fboxes.tolist() == [[15, 0, 20, 10]]
    crop, cboxes, clabels = iou_crop((image, boxes, np.array([1])), np.random.default_rng(3))
    if crop.shape != image.shape:
        assert np.all(cboxes[:, 2:] <= [crop.shape[1], crop.shape[0]])


def test_dataset_reader_skips_missing_and_corrupt_images_with_a_warning(tmp_path):
    from ssd_edge.data.sources import ImageRecord

    def record(name):
        return ImageRecord(1, tmp_path / name, 5, 6, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))

    picture = np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3)
    cv2.imwrite(str(tmp_path / "good.png"), picture)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    np.testing.assert_array_equal(record("good.png").read_image(), picture)
    with pytest.warns(UserWarning, match=r"gone\.jpg: missing image, skipped"):
        assert record("gone.jpg").read_image() is None
    with pytest.warns(UserWarning, match=r"bad\.jpg: unreadable or corrupt image, skipped"):
        assert record("bad.jpg").read_image() is None


# ---------------------------------------------------------------- data training cannot use


def damaged_copy(tiny_coco, tmp_path, damage, split="train"):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    path = data / "annotations" / f"instances_{split}.json"
    document = json.loads(path.read_text())
    damage(document)
    path.write_text(json.dumps(document))  # json writes NaN / Infinity as JavaScript does, and reads them back
    return data, document


@pytest.mark.parametrize("value", [0, -3, 0.4, float("nan"), float("inf")])
@pytest.mark.parametrize("side", ["width", "height"])
def test_an_image_size_that_is_not_a_pixel_count_names_the_file_and_image(tiny_coco, tmp_path, side, value):
    data, document = damaged_copy(tiny_coco, tmp_path, lambda d: d["images"][2].update({side: value}))
    image = document["images"][2]
    pattern = rf"instances_train.json: image {image['id']} \({image['file_name']}\) has {side} "
    with pytest.raises(DatasetError, match=pattern):
        load_splits(data)
    with pytest.raises(DatasetError, match=pattern):
        check_dataset(data, progress=False)


def test_voc_image_size_of_zero_names_the_xml(tiny_coco, tmp_path):
    write_voc(tmp_path, tiny_coco, with_labels_txt=False)
    xml = tmp_path / "Annotations" / "train_1.xml"
    xml.write_text(re.sub(r"<width>\d+</width>", "<width>0</width>", xml.read_text()))
    with pytest.raises(DatasetError, match=r"train_1.xml: <size> gives width 0"):
        load_splits(tmp_path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_boxes_are_left_out_counted_and_reported(tiny_coco, tmp_path, bad):
    def damage(document):
        document["annotations"][0]["bbox"][2] = bad
        document["annotations"][1]["bbox"][0] = bad

    data, document = damaged_copy(tiny_coco, tmp_path, damage)
    train = load_splits(data)["train"]
    assert train.num_objects == len(document["annotations"]) - 2  # left out, not kept as NaN or clipped
    assert all(np.isfinite(r.boxes).all() for r in train.records)
    assert "2 boxes with NaN or infinite values left out" in train.summary()
    report = check_dataset(data, progress=False)
    places = report.problems["boxes with NaN or infinite values"]
    assert [p.split(" (")[0] for p in places] == ["instances_train.json annotation 1",
                                                   "instances_train.json annotation 2"]
    assert "boxes outside the image" not in report.problems


def test_voc_objects_without_a_name_are_left_out_and_reported(tiny_coco, tmp_path):
    write_voc(tmp_path, tiny_coco, with_labels_txt=False)
    xml = tmp_path / "Annotations" / "train_1.xml"
    xml.write_text(re.sub(r"<name>[^<]*</name>", "<name>  </name>", xml.read_text(), count=1))
    splits = load_splits(tmp_path)
    assert splits["train"].class_names[1:] == ("circle", "square", "triangle")  # no class named ''
    assert splits["train"].left_out == {"VOC objects without <name>": ["train_1.xml object 1"]}
    assert splits["train"].num_objects == load_splits(tiny_coco)["train"].num_objects - 1
    report = check_dataset(tmp_path, progress=False)
    assert report.problems["VOC objects without <name>"] == ["train_1.xml object 1"]


def test_voc_object_with_no_name_element_at_all(tiny_coco, tmp_path):
    write_voc(tmp_path, tiny_coco, with_labels_txt=True)
    xml = tmp_path / "Annotations" / "train_2.xml"
    xml.write_text(re.sub(r"<name>[^<]*</name>", "", xml.read_text(), count=1))
    splits = load_splits(tmp_path)
    assert splits["train"].left_out == {"VOC objects without <name>": ["train_2.xml object 1"]}


def test_check_reports_a_split_with_no_readable_image_and_an_empty_one(tiny_coco, tmp_path, capsys):
    data, _ = damaged_copy(tiny_coco, tmp_path, lambda d: d.update(images=[], annotations=[]), split="val")
    for image in (data / "train").iterdir():
        image.write_bytes(b"garbage")
    report = check_dataset(data, progress=False)
    assert report.problems["splits with no readable image"] == [
        "train (instances_train.json: none of its 10 images can be read)",
        "val (instances_val.json: it lists no images)",
    ]
    with pytest.raises(SystemExit) as exit_info:
        dataset_main(["check", str(data)])
    assert exit_info.value.code == 1
    assert "splits with no readable image: 2" in capsys.readouterr().out


@pytest.mark.parametrize("given, suggested", [("annotations/instances_train.json", True), ("train/000001.jpg", False)])
def test_a_file_given_as_the_dataset_path_is_called_a_file(tiny_coco, given, suggested):
    path = tiny_coco / given
    message = f"{path}: is a file; the dataset path is the folder that holds the whole dataset"
    if suggested:
        message += f", here probably {tiny_coco} (COCO: "
    with pytest.raises(DatasetError, match=re.escape(message)):
        load_splits(path)
