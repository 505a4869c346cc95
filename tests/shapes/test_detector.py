"""The deterministic judge: classes, counts, centres, thresholds and connectivity."""

from __future__ import annotations

import itertools
import math
from collections import deque

import numpy as np
import pytest
from shapes_truth import SPEC_PALETTE, true_centre

from cheers.shapes import COLORS, SHAPES, Scene, ShapeObject, detect, render, sample_scene
from cheers.shapes.detector import label_components, shape_from_fill

CANVASES = (32, 64, 128)


@pytest.mark.parametrize("canvas", CANVASES)
def test_every_shape_colour_and_size_is_detected(canvas: int) -> None:
    """Exhaustive over whole-pixel sizes S/6..S/3: one detection, right classes, centre ≤ 1.5 px."""
    sizes = range(math.ceil(canvas / 6), math.floor(canvas / 3) + 1)
    for shape, color, size in itertools.product(SHAPES, COLORS, sizes):
        x0 = 3 + size % 5  # vary the whole-pixel position too
        obj = ShapeObject(shape, color, x0 + size / 2, 2 + size / 2, size)
        dets = detect(render(Scene((obj,), canvas)))
        assert len(dets) == 1, (shape, color, size)
        d = dets[0]
        assert (d.shape, d.color) == (shape, color), (size, d)
        cx, cy = true_centre(obj)
        assert abs(d.cx - cx) <= 1.5 and abs(d.cy - cy) <= 1.5, (shape, size, d)


@pytest.mark.parametrize("canvas", CANVASES)
def test_random_scenes_counts_classes_and_centres(canvas: int) -> None:
    for seed in range(120):
        scene = sample_scene(np.random.default_rng(seed), canvas, forbid=())
        dets = detect(render(scene))
        assert len(dets) == len(scene.objects)
        for obj in scene.objects:
            cx, cy = true_centre(obj)
            near = [d for d in dets if abs(d.cx - cx) <= 1.5 and abs(d.cy - cy) <= 1.5]
            assert len(near) == 1, (seed, obj, dets)
            assert (near[0].shape, near[0].color) == (obj.shape, obj.color)


def test_blank_image_has_no_detections() -> None:
    assert detect(np.full((64, 64, 3), 255, np.uint8)) == []


def _mask_image(mask: np.ndarray, color: str = "red", canvas: int = 64) -> np.ndarray:
    img = np.full((canvas, canvas, 3), 255, np.uint8)
    h, w = mask.shape
    img[10 : 10 + h, 10 : 10 + w][mask] = SPEC_PALETTE[color]
    return img


def _box_with_fill(n_on: int, side: int = 20) -> np.ndarray:
    """A side×side box whose four corners and first row/column are on, with n_on pixels in all."""
    mask = np.zeros((side, side), bool)
    mask[0, :] = mask[:, 0] = mask[-1, :] = mask[:, -1] = True  # keeps the bbox and connectivity
    inner = [(r, c) for r in range(1, side - 1) for c in range(1, side - 1)]
    for r, c in inner[: n_on - int(mask.sum())]:
        mask[r, c] = True
    assert mask.sum() == n_on
    return mask


@pytest.mark.parametrize(
    ("n_on", "shape"),
    [(400, "square"), (360, "square"), (359, "circle"), (260, "circle"), (259, "triangle")],
)
def test_fill_ratio_thresholds_on_hand_made_masks(n_on: int, shape: str) -> None:
    """Fill 0.9 is a square, just under is a circle; 0.65 is a circle, just under a triangle."""
    dets = detect(_mask_image(_box_with_fill(n_on)))
    assert len(dets) == 1
    assert dets[0].shape == shape
    assert dets[0].fill == pytest.approx(n_on / 400)


def test_shape_from_fill_boundaries() -> None:
    assert shape_from_fill(1.0) == "square"
    assert shape_from_fill(0.9) == "square"
    assert shape_from_fill(0.8999) == "circle"
    assert shape_from_fill(0.65) == "circle"
    assert shape_from_fill(0.6499) == "triangle"
    assert shape_from_fill(0.5) == "triangle"


def test_small_components_are_ignored() -> None:
    """At S=64 the floor is (64/12)² ≈ 28.4 px: a 5×5 blob is noise, a 6×5 blob an object."""
    img = _mask_image(np.ones((5, 5), bool))
    assert detect(img) == []
    img = _mask_image(np.ones((5, 6), bool))
    assert len(detect(img)) == 1
    # The floor scales with the canvas: at S=128 it is ≈ 113.8 px.
    assert detect(_mask_image(np.ones((10, 11), bool), canvas=128)) == []
    assert len(detect(_mask_image(np.ones((10, 12), bool), canvas=128))) == 1


def test_foreground_needs_distance_over_60() -> None:
    img = np.full((64, 64, 3), 255, np.uint8)
    img[10:20, 10:20] = (255, 195, 255)  # distance exactly 60: background
    assert detect(img) == []
    img[10:20, 10:20] = (255, 194, 255)  # distance 61: foreground
    assert len(detect(img)) == 1


def test_diagonal_neighbours_are_connected() -> None:
    img = np.full((64, 64, 3), 255, np.uint8)
    img[10:20, 10:20] = SPEC_PALETTE["red"]
    img[20:30, 20:30] = SPEC_PALETTE["red"]  # touches the first square at one corner only
    assert len(detect(img)) == 1
    img[20:30, 20:30] = 255
    img[21:31, 21:31] = SPEC_PALETTE["red"]  # one blank pixel apart diagonally
    assert len(detect(img)) == 2


def test_colour_is_the_nearest_palette_entry_to_the_median() -> None:
    mask = np.ones((10, 10), bool)
    img = _mask_image(mask, "yellow")
    # A 40 % blue minority leaves the median yellow (the mean would be nearest to orange).
    img[10:14, 10:20] = SPEC_PALETTE["blue"]
    assert detect(img)[0].color == "yellow"
    img[10:20, 10:20] = (150, 70, 200)  # off-palette: nearest is purple
    assert detect(img)[0].color == "purple"
    img[10:20, 10:20] = (240, 140, 40)  # nearest is orange, not yellow
    assert detect(img)[0].color == "orange"


def test_centroid_is_the_mask_centroid() -> None:
    img = np.full((64, 64, 3), 255, np.uint8)
    img[10:20, 30:40] = SPEC_PALETTE["blue"]
    d = detect(img)[0]
    assert (d.cx, d.cy) == (35.0, 15.0) and d.area == 100


def test_accepts_float_arrays_and_pil() -> None:
    scene = Scene((ShapeObject("circle", "yellow", 20, 30, 16),), 64)
    img = render(scene)
    as_float = np.asarray(img, dtype=np.float32) / 255
    assert detect(as_float) == detect(img)


def _bfs_components(mask: np.ndarray) -> int:
    seen = np.zeros_like(mask)
    n = 0
    h, w = mask.shape
    for r, c in zip(*np.nonzero(mask), strict=True):
        if seen[r, c]:
            continue
        n += 1
        seen[r, c] = True
        todo = deque([(r, c)])
        while todo:
            y, x = todo.popleft()
            for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not seen[yy, xx]:
                    seen[yy, xx] = True
                    todo.append((yy, xx))
    return n


def test_labels_agree_with_a_plain_bfs_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for density in (0.2, 0.4, 0.55):
        mask = rng.random((40, 50)) < density
        labels = label_components(mask)
        assert ((labels >= 0) == mask).all()
        assert len(np.unique(labels[mask])) == _bfs_components(mask)
        # Neighbouring on-pixels share a label.
        a, b = labels[:-1, :-1], labels[1:, 1:]
        both = mask[:-1, :-1] & mask[1:, 1:]
        assert (a[both] == b[both]).all()
