"""Generation prompts by GenEval category and their judges."""

from __future__ import annotations

import numpy as np
import pytest
from shapes_truth import SPEC_HELD_OUT

from cheers.shapes import (
    CATEGORIES,
    PromptSpec,
    Scene,
    ShapeObject,
    detect,
    judge,
    make_prompt,
    render,
    sample_prompt,
    score_generation,
)


def _judge_scene(spec: PromptSpec, *objs: ShapeObject, canvas: int = 64) -> bool:
    return judge(spec, detect(render(Scene(objs, canvas))))


def test_category_names_match_spec() -> None:
    assert CATEGORIES == (
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    )


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"category": "single_object", "shape": "circle"}, "a circle"),
        (
            {"category": "two_object", "shape": "circle", "shape2": "square"},
            "a circle and a square",
        ),
        ({"category": "counting", "shape": "triangle", "count": 3}, "three triangles"),
        ({"category": "counting", "shape": "circle", "count": 1}, "one circle"),
        ({"category": "colors", "shape": "square", "color": "blue"}, "a blue square"),
        ({"category": "colors", "shape": "square", "color": "orange"}, "an orange square"),
        (
            {"category": "position", "shape": "circle", "shape2": "square", "relation": "left of"},
            "a circle to the left of a square",
        ),
        (
            {"category": "position", "shape": "circle", "shape2": "square", "relation": "below"},
            "a circle below a square",
        ),
        (
            {
                "category": "color_attr",
                "shape": "circle",
                "color": "red",
                "shape2": "triangle",
                "color2": "green",
            },
            "a red circle and a green triangle",
        ),
    ],
)
def test_prompt_texts(kwargs: dict, text: str) -> None:
    assert make_prompt(**kwargs).text == text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"category": "bogus", "shape": "circle"},
        {"category": "counting", "shape": "circle", "count": 5},
        {"category": "colors", "shape": "circle"},
        {"category": "position", "shape": "circle", "shape2": "square", "relation": "near"},
    ],
)
def test_make_prompt_rejects_bad_fields(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_prompt(**kwargs)


@pytest.mark.parametrize("canvas", [32, 64])
@pytest.mark.parametrize("category", CATEGORIES)
def test_sampled_scene_satisfies_its_prompt(category: str, canvas: int) -> None:
    rng = np.random.default_rng(CATEGORIES.index(category) * 1000 + canvas)
    for _ in range(40):
        spec, scene = sample_prompt(rng, category, canvas)
        assert spec.category == category
        assert judge(spec, detect(render(scene))), (spec, scene)
        for o in scene.objects:
            assert (o.color, o.shape) not in SPEC_HELD_OUT
            assert o.shape in spec.text  # the scene holds only what the caption names
        assert not any(f"{c} {s}" in spec.text for c, s in SPEC_HELD_OUT)


def test_prompt_objects_match_the_scene() -> None:
    rng = np.random.default_rng(5)
    for _ in range(60):
        spec, scene = sample_prompt(rng, "counting")
        assert len(scene.objects) == spec.count
        spec, scene = sample_prompt(rng, "color_attr")
        got = sorted((o.shape, o.color) for o in scene.objects)
        assert got == sorted([(spec.shape, spec.color), (spec.shape2, spec.color2)])


def test_single_object_judge() -> None:
    spec = make_prompt("single_object", "circle")
    assert _judge_scene(spec, ShapeObject("circle", "red", 20, 20, 14))
    assert not _judge_scene(spec, ShapeObject("square", "red", 20, 20, 14))


def test_two_object_judge() -> None:
    spec = make_prompt("two_object", "circle", shape2="square")
    circle = ShapeObject("circle", "red", 20, 20, 14)
    square = ShapeObject("square", "blue", 45, 45, 14)
    assert _judge_scene(spec, circle, square)
    assert not _judge_scene(spec, circle, ShapeObject("triangle", "blue", 45, 45, 14))


def _row(shape: str, n: int, color: str = "green") -> list[ShapeObject]:
    return [ShapeObject(shape, color, 10 + 15 * i, 12, 12) for i in range(n)]


def test_counting_judge_needs_exactly_that_many() -> None:
    spec = make_prompt("counting", "triangle", count=3)
    assert _judge_scene(spec, *_row("triangle", 3))
    assert not _judge_scene(spec, *_row("triangle", 2))
    assert not _judge_scene(spec, *_row("triangle", 4))
    # Other shapes are not counted (as in GenEval).
    assert _judge_scene(spec, *_row("triangle", 3), ShapeObject("circle", "red", 30, 45, 14))


def test_colors_judge_binds_colour_to_shape() -> None:
    spec = make_prompt("colors", "square", color="blue")
    assert _judge_scene(spec, ShapeObject("square", "blue", 20, 20, 14))
    assert not _judge_scene(
        spec, ShapeObject("square", "red", 20, 20, 14), ShapeObject("circle", "blue", 45, 45, 14)
    )


@pytest.mark.parametrize(
    ("relation", "circle_at", "ok"),
    [
        ("left of", (15, 32), True),
        ("left of", (50, 32), False),
        ("right of", (50, 32), True),
        ("above", (32, 12), True),
        ("above", (32, 52), False),
        ("below", (32, 52), True),
        # Mostly above, slightly left: the dominant axis is vertical.
        ("left of", (26, 12), False),
        ("above", (26, 12), True),
    ],
)
def test_position_judge_uses_the_dominant_axis(
    relation: str, circle_at: tuple[int, int], ok: bool
) -> None:
    spec = make_prompt("position", "circle", shape2="square", relation=relation)
    square = ShapeObject("square", "blue", 32, 32, 12)
    circle = ShapeObject("circle", "red", circle_at[0], circle_at[1], 12)
    assert _judge_scene(spec, circle, square) is ok


def test_color_attr_judge_needs_both_bindings() -> None:
    spec = make_prompt("color_attr", "circle", color="red", shape2="triangle", color2="green")
    red_circle = ShapeObject("circle", "red", 20, 20, 14)
    green_triangle = ShapeObject("triangle", "green", 45, 45, 14)
    assert _judge_scene(spec, red_circle, green_triangle)
    swapped = (
        ShapeObject("circle", "green", 20, 20, 14),
        ShapeObject("triangle", "red", 45, 45, 14),
    )
    assert not _judge_scene(spec, *swapped)
    assert not _judge_scene(spec, red_circle)


def test_prompt_spec_round_trip_and_held_out_flag() -> None:
    spec = make_prompt("color_attr", "triangle", color="purple", shape2="circle", color2="red")
    assert PromptSpec.from_dict(spec.to_dict()) == spec
    assert spec.mentions()
    assert not make_prompt("colors", "triangle", color="red").mentions()


def test_include_builds_held_out_prompts() -> None:
    rng = np.random.default_rng(0)
    spec, scene = sample_prompt(rng, "colors", include=("orange", "square"))
    assert spec.text == "an orange square"
    assert judge(spec, detect(render(scene)))
    with pytest.raises(ValueError):
        sample_prompt(rng, "counting", include=("orange", "square"))


def test_score_generation_is_the_mean_over_categories() -> None:
    a = make_prompt("single_object", "circle")
    b = make_prompt("colors", "circle", color="red")
    scores = score_generation([(a, True), (a, True), (a, False), (a, True), (b, False)])
    assert scores["single_object"] == 0.75
    assert scores["colors"] == 0.0
    assert scores["overall"] == pytest.approx(0.375)
