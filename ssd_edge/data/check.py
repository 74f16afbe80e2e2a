"""`ssd-dataset check`: audit a dataset without changing it."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ssd_edge.common.progress import progress_bar
from ssd_edge.data.sources import Split, load_splits
from ssd_edge.runtime.image_io import ImageError, read_image, shown_path


@dataclass
class Report:
    root: Path
    problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, where: str) -> None:
        self.problems[kind].append(where)

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self, examples: int = 5) -> str:
        lines = [f"{self.root}: " + ", ".join(f"{v} {k}" for k, v in self.counts.items())]
        if self.ok:
            lines.append("no problems found")
        for kind, places in self.problems.items():
            shown = "; ".join(places[:examples]) + (f"; ... ({len(places) - examples} more)"
                                                    if len(places) > examples else "")
            lines.append(f"{kind}: {len(places)} ({shown})")
        return "\n".join(lines)


def _check_ids(report: Report, split: Split) -> None:
    document = split.document
    for section in ("images", "annotations", "categories"):
        counts = Counter(entry["id"] for entry in document[section])
        for value, times in counts.items():
            if times > 1:
                report.add(f"duplicate {section[:-1]} ids", f"{split.name}: id {value} x{times}")


def _check_annotations(report: Report, split: Split) -> set[int]:
    images = {image["id"]: image for image in split.document["images"]}
    categories = {c["id"] for c in split.document["categories"]}
    annotated = set()
    for ann in split.document["annotations"]:
        where = f"{split.annotation_file.name} annotation {ann['id']}"
        image = images.get(ann["image_id"])
        if image is None:
            report.add("annotations of unknown images", f"{where} (image_id {ann['image_id']})")
            continue
        annotated.add(ann["image_id"])
        if ann["category_id"] not in categories:
            report.add("unknown category ids", f"{where} (category_id {ann['category_id']})")
        x, y, w, h = ann["bbox"]
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            continue  # reported from split.left_out (training leaves it out)
        if w <= 0 or h <= 0:
            report.add("boxes of zero area", f"{where} (bbox {ann['bbox']})")
        elif x < 0 or y < 0 or x + w > image["width"] + 0.5 or y + h > image["height"] + 0.5:
            report.add("boxes outside the image",
                       f"{where} (bbox {ann['bbox']}, image {image['width']}x{image['height']})")
    return annotated


def _check_pixels(report: Report, path: Path, image: dict) -> bool:
    """Decode the image at `path`; report it if unreadable or not of its annotated size.
    Returns whether it could be read."""
    try:
        pixels = read_image(path)
    except ImageError:
        report.add("unreadable images", shown_path(path))
        return False
    if pixels.shape[:2] != (int(image["height"]), int(image["width"])):
        report.add("images of another size than annotated",
                   f"{shown_path(path)} ({pixels.shape[1]}x{pixels.shape[0]}, "
                   f"annotated {image['width']}x{image['height']})")
    return True


def _check_images(report: Report, split: Split, annotated: set[int], progress: bool) -> None:
    readable = 0
    for image in progress_bar(split.document["images"], desc=f"check {split.name}", unit="img", disable=not progress,
                              leave=False):
        path = split.image_dir / image["file_name"]
        if not path.is_file():
            report.add("missing images", shown_path(path))
            continue
        readable += _check_pixels(report, path, image)
        if image["id"] not in annotated:
            report.add("images without annotations", shown_path(path))
    if not readable:  # training would stop with "no readable training images"
        listed = len(split.document["images"])
        report.add("splits with no readable image", f"{split.name} ({split.annotation_file.name}: "
                   + (f"none of its {listed} images can be read)" if listed else "it lists no images)"))


def check_dataset(root: str | Path, progress: bool = True) -> Report:
    """Every problem found under `root`; raises DatasetError when it cannot be read at all."""
    report = Report(Path(root))
    splits = load_splits(root)
    for split in splits.values():
        _check_ids(report, split)
        annotated = _check_annotations(report, split)
        _check_images(report, split, annotated, progress)
        for reason, places in split.left_out.items():  # what training leaves out, and why
            for place in places:
                report.add(reason, place)
        report.counts[f"{split.name} images"] = len(split.document["images"])
        report.counts[f"{split.name} annotations"] = len(split.document["annotations"])
    return report
