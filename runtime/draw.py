"""Detections drawn on an image: boxes, class names and scores, and a status line (the live
demo's frame rates). Colours are fixed per class so a class looks the same in every frame.
Tracks (`draw_tracks`) are coloured per track ID instead, with their ID, a short trail and,
when the demo counts, the counting line and its counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import cv2
import numpy as np

from ssd_edge.runtime.detections import Detections

if TYPE_CHECKING:  # the tracker needs SciPy, which drawing detections does not
    from ssd_edge.runtime.tracking import Tracks


def class_colour(label: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour for a class index."""
    hue = (int(label) * 47) % 180
    pixel = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(pixel, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_detections(image_bgr: np.ndarray, detections: Detections, *, status: str | None = None) -> np.ndarray:
    """A copy of image_bgr (H, W, 3) uint8 with every detection's box (xyxy pixels) and
    "name score" label drawn (the names the detections carry: `Detections.names`), and
    `status` (e.g. frame rates) in the top-left corner."""
    canvas = np.ascontiguousarray(image_bgr).copy()
    scale = _scale(canvas)
    labels = [_draw_box(canvas, box, class_colour(label), f"{name} {score:.2f}", scale)
              for box, label, name, score in zip(detections.boxes, detections.labels.tolist(), detections.names,
                                                 detections.scores.tolist())]
    _draw_labels(canvas, labels, status, scale)
    return canvas


def _scale(image: np.ndarray) -> float:
    """Text and line size for an image of this size (1.0 at 600 pixels on the short side)."""
    return max(0.5, min(image.shape[:2]) / 600.0)


Label = tuple[int, int, tuple[int, int, int], str]  # (x1, y1, colour, text): drawn after the status band


def _draw_box(canvas: np.ndarray, box_xyxy: np.ndarray, colour: tuple[int, int, int], text: str,
              scale: float) -> Label:
    """One box (xyxy pixels); returns its label, for _draw_labels."""
    x1, y1, x2, y2 = (int(round(v)) for v in np.nan_to_num(box_xyxy))
    cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, max(1, int(round(2 * scale))))
    return x1, y1, colour, text


Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 pixels


def _draw_labels(canvas: np.ndarray, labels: Sequence[Label], status: str | None, scale: float) -> list[Rect]:
    """The status band, then every label in order (the detections' order: best first), each
    where it covers neither the band nor a label drawn before it: a label that would is moved
    down, below what it would cover. Returns the labels' rectangles."""
    placed: list[Rect] = []
    if status:
        band_w, band_h = draw_status(canvas, status)
        placed.append((0, 0, band_w, band_h))
    drawn = []
    for x1, y1, colour, text in labels:
        drawn.append(_draw_label(canvas, x1, y1, colour, text, scale, placed))
        placed.append(drawn[-1])
    return drawn


def _draw_label(canvas: np.ndarray, x1: int, y1: int, colour: tuple[int, int, int], text: str, scale: float,
                taken: Sequence[Rect] = ()) -> Rect:
    """`text` on a filled band above (x1, y1) (inside the box at the image's top edge), moved
    down when it would overlap a rectangle in `taken` (the status band, labels already
    drawn); returns the band's rectangle."""
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, 1)
    width, height = text_w + 2, text_h + baseline + 2
    top = _free_top(x1, y1 - height if y1 - height >= 0 else y1, width, height, taken)
    cv2.rectangle(canvas, (x1, top), (x1 + width, top + height), colour, cv2.FILLED)
    cv2.putText(canvas, text, (x1 + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 1,
                cv2.LINE_AA)
    return x1, top, x1 + width, top + height


def _free_top(x1: int, top: int, width: int, height: int, taken: Sequence[Rect]) -> int:
    """The first top at or below `top` where a width x height rectangle at x1 overlaps none of
    `taken` (each overlap moves it just below the rectangle it overlaps)."""
    moved = True
    while moved:
        moved = False
        for tx1, ty1, tx2, ty2 in taken:
            if x1 <= tx2 and tx1 <= x1 + width and top <= ty2 and ty1 <= top + height:
                top, moved = ty2 + 1, True
    return top


def draw_tracks(
    image_bgr: np.ndarray,
    tracks: "Tracks",
    trails: Mapping[int, np.ndarray] | None = None,
    *,
    status: str | None = None,
    line: tuple[tuple[float, float], tuple[float, float]] | None = None,
    counts: Mapping[str, Mapping[str, int]] | None = None,
) -> np.ndarray:
    """A copy of image_bgr (H, W, 3) uint8 with every track's box (xyxy pixels) and
    "#id name score" label in the track's own colour, its trail ({track id: (P, 2) centres,
    oldest first}) as a line, the counting line ((x1, y1), (x2, y2)) and `counts`
    ({class name: {direction: n}}, "left_to_right" or "top_to_bottom" and back) in the bottom-left corner, and
    `status` in the top-left corner. Names are the tracks' own (`Tracks.names`)."""
    canvas = np.ascontiguousarray(image_bgr).copy()
    scale = _scale(canvas)
    thickness = max(1, int(round(2 * scale)))
    trails = trails or {}
    labels = []
    for track_id, box, name, score in zip(tracks.ids.tolist(), tracks.boxes, tracks.names, tracks.scores.tolist()):
        colour = class_colour(track_id)  # per ID: two objects of one class look apart
        points = trails.get(track_id)
        if points is not None and len(points) >= 2:
            cv2.polylines(canvas, [np.round(points).astype(np.int32).reshape(-1, 1, 2)], False, colour, thickness,
                          cv2.LINE_AA)
        labels.append(_draw_box(canvas, box, colour, f"#{track_id} {name} {score:.2f}", scale))
    if line is not None:
        _draw_count_line(canvas, line, counts or {}, scale)
    _draw_labels(canvas, labels, status, scale)
    return canvas


def _short(direction: str) -> str:
    """'left_to_right' -> 'L>R', 'top_to_bottom' -> 'T>B' (the counting line's overlay)."""
    start, _, end = direction.partition("_to_")
    return f"{start[:1].upper()}>{end[:1].upper()}" if end else direction


def _draw_count_line(canvas: np.ndarray, line: tuple[tuple[float, float], tuple[float, float]],
                     counts: Mapping[str, Mapping[str, int]], scale: float) -> None:
    """The counting line in white with an arrow head at its end, and one "name: L>R n  R>L m"
    (T>B / B>T across a horizontal line) line per class on a dark band in the bottom-left corner."""
    start, end = (tuple(int(round(v)) for v in point) for point in line)
    cv2.arrowedLine(canvas, start, end, (255, 255, 255), max(1, int(round(2 * scale))), cv2.LINE_AA, tipLength=0.03)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale
    bottom = canvas.shape[0]
    for name, directions in reversed(list(counts.items())):
        text = f"{name}: " + "  ".join(f"{_short(direction)} {count}" for direction, count in directions.items())
        (width, height), baseline = cv2.getTextSize(text, font, size, 1)
        top = bottom - height - baseline - 6
        cv2.rectangle(canvas, (0, top), (width + 8, bottom), (0, 0, 0), cv2.FILLED)
        cv2.putText(canvas, text, (4, bottom - baseline - 3), font, size, (255, 255, 255), 1, cv2.LINE_AA)
        bottom = top


def draw_status(image: np.ndarray, text: str) -> tuple[int, int]:
    """Write `text` in green on a dark band into the top-left corner of image (in place);
    returns the band's bottom-right corner (x, y)."""
    scale = max(0.4, min(image.shape[:2]) / 800.0)
    font, size = cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale
    (width, height), baseline = cv2.getTextSize(text, font, size, 1)
    cv2.rectangle(image, (0, 0), (width + 12, height + baseline + 10), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (6, height + 5), font, size, (0, 255, 0), 1, cv2.LINE_AA)
    return width + 12, height + baseline + 10
