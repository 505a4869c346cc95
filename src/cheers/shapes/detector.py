"""The deterministic judge of the Shapes world (spec: ``SHAPES.md``, "Detector").

Pixels whose largest channel distance from white exceeds 60 are foreground; their 8-connected
components smaller than ``(S/12)²`` pixels are ignored; each remaining component gets the palette
colour nearest to its median RGB, a shape from the fill ratio of its bounding box (≥ 0.9 square,
0.65–0.9 circle, < 0.65 triangle) and its centroid as centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cheers.errors import ImageError
from cheers.shapes.render import COLORS, PALETTE, Scene

FOREGROUND_DISTANCE = 60
SQUARE_FILL = 0.9
CIRCLE_FILL = 0.65

_PALETTE_RGB = np.array([PALETTE[c] for c in COLORS], dtype=np.float64)


@dataclass(frozen=True)
class Detection:
    """One detected object: its classes, centroid ``(cx, cy)`` in canvas pixels, pixel ``area``.

    ``fill`` is the fraction of the component's bounding box it covers (what decided ``shape``).
    """

    shape: str
    color: str
    cx: float
    cy: float
    area: int
    fill: float | None = None


def shape_from_fill(fill: float) -> str:
    """The shape a bounding-box fill ratio stands for: square, circle or triangle."""
    if fill >= SQUARE_FILL:
        return "square"
    if fill >= CIRCLE_FILL:
        return "circle"
    return "triangle"


def nearest_color(rgb: np.ndarray | tuple[float, float, float]) -> str:
    """Name of the palette colour nearest (Euclidean, RGB) to ``rgb``."""
    d = ((_PALETTE_RGB - np.asarray(rgb, dtype=np.float64)) ** 2).sum(axis=1)
    return COLORS[int(np.argmin(d))]


def to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB array from a PIL image or an array.

    Float arrays are taken to be in ``[0, 1]``.

    Raises:
        ImageError: when the input is neither a PIL image nor an ``(H, W, 3)`` array.
    """
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) RGB array, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.rint(np.clip(arr, 0.0, 1.0) * 255)
    return arr.astype(np.uint8)


def foreground_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels whose largest channel distance from white exceeds :data:`FOREGROUND_DISTANCE`."""
    return (255 - rgb.astype(np.int16)).max(axis=2) > FOREGROUND_DISTANCE


def label_components(mask: np.ndarray) -> np.ndarray:
    """8-connected component labels of a boolean mask: ``-1`` off the mask.

    A component's label is the raster index (``row * W + col``) of its first pixel. Labels are
    found by repeatedly taking the minimum over each pixel's neighbourhood, with pointer jumping
    (a label is itself a pixel of the component, so looking up that pixel's label is a valid
    shortcut) to converge in few sweeps.
    """
    h, w = mask.shape
    none = h * w
    labels = np.where(mask, np.arange(h * w).reshape(h, w), none)
    padded = np.full((h + 2, w + 2), none, dtype=labels.dtype)
    lookup = np.append(labels.ravel(), none)
    while True:
        padded[1:-1, 1:-1] = labels
        new = labels.copy()
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                np.minimum(new, padded[dy : dy + h, dx : dx + w], out=new)
        new[~mask] = none
        lookup[:-1] = new.ravel()
        for _ in range(4):
            lookup[:-1] = lookup[lookup[:-1]]
        new = lookup[:-1].reshape(h, w)
        if np.array_equal(new, labels):
            break
        labels = new.copy()
    return np.where(mask, labels, -1)


def detect(image: Image.Image | np.ndarray) -> list[Detection]:
    """Run the judge on an image; detections come in raster order of their first pixel.

    The canvas side ``S`` is the image's shorter side; components smaller than ``(S/12)²``
    pixels are dropped. Centroids are in canvas coordinates (pixel ``(i, j)``'s centre is
    ``(j + 0.5, i + 0.5)``).
    """
    rgb = to_array(image)
    h, w = rgb.shape[:2]
    min_area = (min(h, w) / 12) ** 2
    mask = foreground_mask(rgb)
    if not mask.any():
        return []
    labels = label_components(mask)
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_labels = flat[order]
    starts = np.searchsorted(sorted_labels, 0)
    _, first, counts = np.unique(sorted_labels[starts:], return_index=True, return_counts=True)
    pixels = rgb.reshape(-1, 3)
    out: list[Detection] = []
    for start, n in zip(first, counts, strict=True):
        if n < min_area:
            continue
        idx = order[starts + start : starts + start + n]
        rows, cols = np.divmod(idx, w)
        bh = int(rows.max() - rows.min()) + 1
        bw = int(cols.max() - cols.min()) + 1
        fill = float(n) / (bh * bw)
        median = np.median(pixels[idx].astype(np.float64), axis=0)
        out.append(
            Detection(
                shape=shape_from_fill(fill),
                color=nearest_color(median),
                cx=float(cols.mean()) + 0.5,
                cy=float(rows.mean()) + 0.5,
                area=int(n),
                fill=fill,
            )
        )
    return out


def ideal_detections(scene: Scene) -> list[Detection]:
    """What a perfect detector would report for ``scene``: true classes, centroids and areas.

    Lets judges run on a scene without rendering it (e.g. to check a generated training pair).
    """
    fills = {"circle": math.pi / 4, "square": 1.0, "triangle": 0.5}
    out = []
    for o in scene.objects:
        cx, cy = o.centroid
        area = round(fills[o.shape] * o.size * o.size)
        out.append(Detection(o.shape, o.color, cx, cy, area, fills[o.shape]))
    return out
