"""Rendering and scene sampling of the Shapes world."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from shapes_truth import SPEC_HELD_OUT, SPEC_PALETTE

from cheers.shapes import (
    COLORS,
    HELD_OUT,
    PALETTE,
    SHAPES,
    Scene,
    ShapeObject,
    is_valid_scene,
    render,
    render_array,
    sample_scene,
)
from cheers.shapes.render import place_objects

CANVASES = (32, 64, 128)


def test_palette_and_held_out_match_spec() -> None:
    assert PALETTE == SPEC_PALETTE
    assert set(COLORS) == set(SPEC_PALETTE)
    assert set(SHAPES) == {"circle", "square", "triangle"}
    assert set(HELD_OUT) == SPEC_HELD_OUT


@pytest.mark.parametrize("canvas", CANVASES)
def test_render_is_rgb_white_canvas_with_exact_colours(canvas: int) -> None:
    size = canvas // 4
    objs = [
        ShapeObject(
            shape, color, 2 + size / 2 + i * (size + 2), 2 + size / 2 + j * (size + 2), size
        )
        for (i, shape), (j, color) in itertools.product(enumerate(SHAPES), enumerate(COLORS[:3]))
    ]
    img = render(Scene(tuple(objs), canvas))
    assert img.mode == "RGB" and img.size == (canvas, canvas)
    arr = np.asarray(img)
    assert (arr[:2] == 255).all() and (arr[:, -1] == 255).all()
    for o in objs:
        # A point well inside every shape (the triangle's centroid) has the exact palette colour.
        x, y = o.cx, o.cy + (o.size / 6 if o.shape == "triangle" else 0)
        assert tuple(arr[int(y), int(x)]) == SPEC_PALETTE[o.color]


def test_pixel_aligned_square_is_exact() -> None:
    obj = ShapeObject("square", "blue", 10 + 7 / 2, 20 + 7 / 2, 7)
    arr = render_array(Scene((obj,), 64))
    ink = (arr != 255).any(axis=2)
    assert ink.sum() == 49
    assert ink[20:27, 10:17].all()
    assert (arr[20:27, 10:17] == SPEC_PALETTE["blue"]).all()


def test_shapes_have_expected_areas() -> None:
    """Coverage-weighted ink area equals the geometric area (circle πr², triangle s²/2)."""
    s = 40
    for shape, area in (
        ("square", s * s),
        ("circle", math.pi * s * s / 4),
        ("triangle", s * s / 2),
    ):
        arr = render_array(Scene((ShapeObject(shape, "red", 50, 50, s),), 100), antialias=False)
        ink = (arr != 255).any(axis=2).sum()
        assert abs(ink - area) / area < 0.03, (shape, ink, area)


def test_triangle_points_up() -> None:
    arr = render_array(Scene((ShapeObject("triangle", "green", 32, 32, 30),), 64))
    ink = (arr != 255).any(axis=2)
    widths = ink.sum(axis=1)
    rows = np.nonzero(widths)[0]
    assert widths[rows[0]] < 4 and widths[rows[-1]] >= 28  # narrow apex at the top, base below


def _bbox(o: ShapeObject) -> tuple[float, float, float, float]:
    return o.cx - o.size / 2, o.cy - o.size / 2, o.cx + o.size / 2, o.cy + o.size / 2


@pytest.mark.parametrize("canvas", CANVASES)
def test_sample_scene_obeys_the_rules(canvas: int) -> None:
    counts = set()
    for seed in range(150):
        scene = sample_scene(np.random.default_rng(seed), canvas)
        objs = scene.objects
        counts.add(len(objs))
        assert 1 <= len(objs) <= 4
        for o in objs:
            assert canvas / 6 <= o.size <= canvas / 3
            x0, y0, x1, y1 = _bbox(o)
            assert x0 >= 2 and y0 >= 2 and x1 <= canvas - 2 and y1 <= canvas - 2
            assert (o.color, o.shape) not in SPEC_HELD_OUT
        for a, b in itertools.combinations(objs, 2):
            ax0, ay0, ax1, ay1 = _bbox(a)
            bx0, by0, bx1, by1 = _bbox(b)
            gap = max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)
            assert gap >= 2, (seed, a, b)
        # In pixels: the 2-px border is blank and every ink pixel lies in an object's box.
        ink = (render_array(scene) != 255).any(axis=2)
        assert not ink[:2].any() and not ink[-2:].any()
        assert not ink[:, :2].any() and not ink[:, -2:].any()
        boxes = np.zeros_like(ink)
        for o in objs:
            x0, y0, x1, y1 = (int(v) for v in _bbox(o))
            boxes[y0:y1, x0:x1] = True
        assert not (ink & ~boxes).any()
    assert counts == {1, 2, 3, 4}


def test_sample_scene_is_deterministic_and_seed_dependent() -> None:
    a = sample_scene(np.random.default_rng(7))
    b = sample_scene(np.random.default_rng(7))
    c = sample_scene(np.random.default_rng(8))
    assert a == b and a != c
    assert is_valid_scene(a)


def test_sample_scene_respects_shapes_colors_and_n_objects() -> None:
    rng = np.random.default_rng(0)
    scene = sample_scene(rng, 64, n_objects=4, shapes=["circle"], colors=["red", "blue"])
    assert len(scene.objects) == 4
    assert {o.shape for o in scene.objects} == {"circle"}
    assert {o.color for o in scene.objects} <= {"red", "blue"}
    # Held-out pairs appear once the forbid set is emptied.
    scene = sample_scene(rng, 64, 2, shapes=["triangle"], colors=["purple"], forbid=())
    assert all((o.color, o.shape) == ("purple", "triangle") for o in scene.objects)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shapes": ["triangle"], "colors": ["purple"]},  # only a held-out pair is left
        {"n_objects": 0},
        {"n_objects": 5},
        {"canvas": 8},
        {"shapes": ["hexagon"]},
        {"colors": ["pink"]},
    ],
)
def test_sample_scene_rejects_impossible_requests(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        sample_scene(np.random.default_rng(0), **kwargs)


def test_place_objects_gives_up_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="could not place"):
        place_objects(np.random.default_rng(0), [("circle", "red")], 64, lambda s: False, 5)


def test_is_valid_scene_catches_violations() -> None:
    ok = ShapeObject("circle", "red", 20, 20, 12)
    assert is_valid_scene(Scene((ok,), 64))
    assert not is_valid_scene(Scene((ok, ShapeObject("square", "blue", 33, 20, 12)), 64))
    assert not is_valid_scene(Scene((ShapeObject("circle", "red", 6, 20, 12),), 64))  # border
    assert not is_valid_scene(Scene((ShapeObject("circle", "red", 20, 20, 30),), 64))  # too big
    assert not is_valid_scene(Scene((), 64))


def test_shape_object_validates_fields() -> None:
    with pytest.raises(ValueError):
        ShapeObject("hexagon", "red", 1, 1, 1)
    with pytest.raises(ValueError):
        ShapeObject("circle", "pink", 1, 1, 1)
    with pytest.raises(ValueError):
        ShapeObject("circle", "red", 1, 1, 0)


def test_scene_dict_round_trip() -> None:
    scene = sample_scene(np.random.default_rng(3))
    assert Scene.from_dict(scene.to_dict()) == scene
