"""Finding and reading detection datasets: the COCO layout, a flat COCO-JSON layout and
Pascal VOC. Every layout becomes a COCO document (pycocotools reads and evaluates it) and a
list of clean `ImageRecord`s for training.

COCO:  annotations/instances_<split>*.json with images in <split>*/ (train2017, val2017...)
flat:  images/ + annotations.json (one split: train)
VOC:   Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt, optional labels.txt
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ssd_edge.common.errors import SSDEdgeError


class DatasetError(SSDEdgeError, ValueError):
    """A dataset that cannot be read; the message names the file and the problem."""


@dataclass
class ImageRecord:
    """One training image: boxes (N, 4) xyxy in pixels, clipped; labels (N,) in 1..C-1."""

    image_id: int
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray

    def read_image(self) -> np.ndarray | None:
        """BGR uint8 (H, W, 3) through the runtime's one reader, or None (with a warning that
        names the file) when the file is missing or cannot be decoded: training and
        evaluation skip such an image and count it."""
        from ssd_edge.runtime import image_io

        try:
            return image_io.read_image(self.path)
        except image_io.ImageError:
            problem = "missing" if not self.path.exists() else "unreadable or corrupt"
            warnings.warn(f"{image_io.shown_path(self.path)}: {problem} image, skipped", stacklevel=2)
            return None


@dataclass
class Split:
    name: str
    layout: str
    annotation_file: Path
    image_dir: Path
    document: dict[str, Any]
    class_names: tuple[str, ...]  # background first
    category_ids: tuple[int, ...]  # COCO category id of each label 1..C-1
    records: list[ImageRecord] = field(default_factory=list)
    dropped_boxes: int = 0
    clipped_boxes: int = 0
    # objects left out of training, by reason ("boxes with NaN or infinite values",
    # "VOC objects without <name>"): each a place such as "instances_train.json annotation 17"
    left_out: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_objects(self) -> int:
        return sum(len(r.labels) for r in self.records)

    def coco(self):
        """A pycocotools COCO object over this split's document (quietly)."""
        from pycocotools.coco import COCO

        coco = COCO()
        coco.dataset = self.document
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    def summary(self) -> str:
        notes = []
        if self.dropped_boxes or self.clipped_boxes:
            notes.append(f"{self.clipped_boxes} boxes clipped to the image, {self.dropped_boxes} degenerate dropped")
        notes += [f"{len(places)} {reason} left out" for reason, places in self.left_out.items()]
        extra = f" ({'; '.join(notes)})" if notes else ""
        return f"{self.name}: {len(self.records)} images, {self.num_objects} objects{extra}"


# ---------------------------------------------------------------- COCO documents


def _fail(path: Path, problem: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}")


def read_coco_json(path: Path) -> dict[str, Any]:
    """Read and structurally validate a COCO annotation file."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise _fail(path, "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not valid JSON ({exc})") from None
    validate_coco_document(document, path)
    return document


def validate_coco_document(document: Any, path: Path) -> None:
    if not isinstance(document, dict):
        raise _fail(path, "the top level must be a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(document.get(key), list):
            raise _fail(path, f"'{key}' is missing or not a list")
    required = {
        "images": (("id", int), ("file_name", str), ("width", (int, float)), ("height", (int, float))),
        "annotations": (("id", int), ("image_id", int), ("category_id", int), ("bbox", list)),
        "categories": (("id", int), ("name", str)),
    }
    for section, fields in required.items():
        for index, entry in enumerate(document[section]):
            if not isinstance(entry, dict):
                raise _fail(path, f"{section}[{index}] is not an object")
            for name, kind in fields:
                if not isinstance(entry.get(name), kind) or isinstance(entry.get(name), bool):
                    raise _fail(path, f"{section}[{index}] has no valid '{name}'")
            if section == "annotations" and (
                len(entry["bbox"]) != 4 or not all(isinstance(v, (int, float)) for v in entry["bbox"])
            ):
                raise _fail(path, f"annotation {entry['id']} has a bbox that is not [x, y, w, h]")
            if section == "images" and (problem := size_problem(entry["width"], entry["height"])):
                raise _fail(path, f"image {entry['id']} ({entry['file_name']}) has {problem}")
    if not document["categories"]:
        raise _fail(path, "no categories")


def size_problem(width: float, height: float) -> str | None:
    """What is wrong with an annotated image size (None when both sides are finite and at
    least one pixel): boxes are scaled by it, so 0 or NaN cannot be trained on."""
    for name, value in (("width", width), ("height", height)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 1):
            return f"{name} {value!r}; the image size must be a positive number of pixels"
    return None


def classes_of(document: dict[str, Any]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Contiguous labels: categories sorted by id become 1..K; label 0 is the background."""
    categories = sorted(document["categories"], key=lambda c: c["id"])
    return ("__background__",) + tuple(c["name"] for c in categories), tuple(c["id"] for c in categories)


def records_of(split: Split) -> None:
    """Fill split.records from split.document: boxes clipped to the image, degenerate ones
    and crowd regions dropped, category ids mapped to contiguous labels."""
    label_of = {cid: i + 1 for i, cid in enumerate(split.category_ids)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in split.document["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    records, dropped, clipped = [], 0, 0
    not_finite = []
    for image in split.document["images"]:
        width, height = int(image["width"]), int(image["height"])
        boxes, labels = [], []
        for ann in by_image.get(image["id"], []):
            if ann.get("iscrowd", 0) or ann["category_id"] not in label_of:
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            if not all(math.isfinite(v) for v in (x, y, w, h)):  # left out, not clipped into a box
                not_finite.append(f"{split.annotation_file.name} annotation {ann['id']} (bbox {ann['bbox']})")
                continue
            box = np.array([x, y, x + w, y + h], np.float32)
            inside = np.clip(box, 0, [width, height, width, height])
            if not np.array_equal(inside, box):
                clipped += 1
            if inside[2] - inside[0] < 1e-3 or inside[3] - inside[1] < 1e-3:
                dropped += 1
                continue
            boxes.append(inside)
            labels.append(label_of[ann["category_id"]])
        records.append(
            ImageRecord(
                image_id=image["id"],
                path=split.image_dir / image["file_name"],
                width=width,
                height=height,
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(labels, np.int64),
            )
        )
    split.records, split.dropped_boxes, split.clipped_boxes = records, dropped, clipped
    if not_finite:
        split.left_out["boxes with NaN or infinite values"] = not_finite


# ---------------------------------------------------------------- layouts


def _coco_splits(root: Path) -> dict[str, Split]:
    splits = {}
    for path in sorted((root / "annotations").glob("instances_*.json")):
        folder_name = path.stem[len("instances_") :]
        match = re.match(r"(train|val)", folder_name)
        if not match or match.group(1) in splits:
            continue
        image_dir = root / folder_name
        if not image_dir.is_dir():
            raise _fail(path, f"its image folder {image_dir} does not exist")
        splits[match.group(1)] = _split(match.group(1), "coco", path, image_dir, read_coco_json(path))
    return splits


def _flat_splits(root: Path) -> dict[str, Split]:
    path = root / "annotations.json"
    return {"train": _split("train", "flat", path, root / "images", read_coco_json(path))}


def _split(name: str, layout: str, path: Path, image_dir: Path, document: dict[str, Any],
           left_out: dict[str, list[str]] | None = None) -> Split:
    class_names, category_ids = classes_of(document)
    split = Split(name, layout, path, image_dir, document, class_names, category_ids, left_out=dict(left_out or {}))
    records_of(split)
    return split


def _voc_split_file(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        path = root / "ImageSets" / "Main" / f"{name}.txt"
        if path.is_file():
            return path
    return None


def _voc_document(
    root: Path, ids: list[str], class_names: list[str] | None
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The COCO document of the listed VOC images, the class names, and the objects left out
    because they have no <name> (a class cannot be guessed; each "<file>.xml object <n>")."""
    images, annotations, names_seen = [], [], []
    parsed, unnamed = [], []
    for image_index, stem in enumerate(ids):
        xml_path = root / "Annotations" / f"{stem}.xml"
        try:
            tree = ET.parse(xml_path)
        except FileNotFoundError:
            raise _fail(xml_path, "no such annotation file") from None
        except ET.ParseError as exc:
            raise _fail(xml_path, f"not valid XML ({exc})") from None
        node = tree.getroot()
        try:
            width = int(float(node.findtext("size/width")))
            height = int(float(node.findtext("size/height")))
        except (TypeError, ValueError):
            raise _fail(xml_path, "no valid <size><width>/<height>") from None
        if problem := size_problem(width, height):
            raise _fail(xml_path, f"<size> gives {problem}")
        file_name = node.findtext("filename") or f"{stem}.jpg"
        if not (root / "JPEGImages" / file_name).exists() and (root / "JPEGImages" / f"{stem}.jpg").exists():
            file_name = f"{stem}.jpg"
        images.append({"id": image_index + 1, "file_name": file_name, "width": width, "height": height})
        for object_index, obj in enumerate(node.findall("object"), 1):
            name = (obj.findtext("name") or "").strip()
            if not name:
                unnamed.append(f"{xml_path.name} object {object_index}")
                continue
            try:
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (TypeError, ValueError):
                raise _fail(xml_path, f"object '{name}' has no valid <bndbox>") from None
            difficult = obj.findtext("difficult") == "1"
            parsed.append((image_index + 1, name, (x1 - 1, y1 - 1, x2, y2), difficult, xml_path))
            if name not in names_seen:
                names_seen.append(name)
    names = class_names if class_names is not None else sorted(names_seen)
    for image_id, name, (x1, y1, x2, y2), difficult, xml_path in parsed:
        if name not in names:
            raise _fail(xml_path, f"class '{name}' is not in labels.txt")
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": names.index(name) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(difficult),
            }
        )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}, names, unnamed


def _voc_splits(root: Path) -> dict[str, Split]:
    labels_file = root / "labels.txt"
    class_names = None
    if labels_file.is_file():
        class_names = [line.strip() for line in labels_file.read_text().splitlines() if line.strip()]
        class_names = [n for n in class_names if n.lower() not in ("background", "__background__")]
    splits = {}
    for split, candidates in (("train", ("train", "trainval")), ("val", ("val", "test"))):
        listing = _voc_split_file(root, candidates)
        if listing is None:
            continue
        ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        document, class_names, unnamed = _voc_document(root, ids, class_names)
        left_out = {"VOC objects without <name>": unnamed} if unnamed else None
        splits[split] = _split(split, "voc", listing, root / "JPEGImages", document, left_out)
    if not splits:
        listing = root / "ImageSets" / "Main"
        raise _fail(listing, "no train.txt / trainval.txt / val.txt / test.txt split lists")
    return splits


LAYOUTS = ("COCO: annotations/instances_<split>.json + <split>/; flat: images/ + annotations.json; "
           "VOC: Annotations/, JPEGImages/, ImageSets/Main/")


def _root_hint(file: Path) -> str:
    """For a file given where a dataset folder belongs: the folder it probably belongs to."""
    if file.parent.name in ("annotations", "Annotations"):
        return f", here probably {file.parent.parent} ({LAYOUTS})"
    if file.name == "annotations.json":
        return f", here probably {file.parent} ({LAYOUTS})"
    return f" ({LAYOUTS})"


def detect_layout(root: str | Path) -> str:
    root = Path(root)
    if root.is_file():
        raise DatasetError(f"{root}: is a file; the dataset path is the folder that holds the whole dataset"
                           f"{_root_hint(root)}")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset directory")
    if list((root / "annotations").glob("instances_*.json")):
        return "coco"
    if (root / "annotations.json").is_file() and (root / "images").is_dir():
        return "flat"
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return "voc"
    raise DatasetError(f"{root}: not a dataset layout this toolkit reads ({LAYOUTS})")


def load_splits(root: str | Path) -> dict[str, Split]:
    """All splits found under `root` ('train', and 'val' when present)."""
    root = Path(root)
    layout = detect_layout(root)
    splits = {"coco": _coco_splits, "flat": _flat_splits, "voc": _voc_splits}[layout](root)
    if "train" not in splits and "val" not in splits:
        raise DatasetError(f"{root}: found a {layout} layout but no train or val split")
    if "train" in splits and "val" in splits and splits["train"].class_names != splits["val"].class_names:
        raise DatasetError(
            f"{splits['val'].annotation_file}: its categories {splits['val'].class_names[1:]} differ from "
            f"the training split's {splits['train'].class_names[1:]}"
        )
    return splits


def describe(root: str | Path, splits: dict[str, Split]) -> str:
    first = next(iter(splits.values()))
    parts = "; ".join(s.summary() for s in splits.values())
    return (f"{root}: {first.layout} layout, {len(first.class_names) - 1} classes "
            f"({', '.join(first.class_names[1:])}); {parts}")
