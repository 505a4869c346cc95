"""Editing pairs, verified through the detector."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from shapes_truth import SPEC_HELD_OUT

from cheers.shapes import (
    EDIT_KINDS,
    EditPair,
    Scene,
    ShapeObject,
    detect,
    is_valid_scene,
    render,
    sample_edit,
)

PATTERNS = {
    "recolor": re.compile(r"make the (circle|square|triangle) (\w+)"),
    "remove": re.compile(r"remove the (circle|square|triangle)"),
    "add": re.compile(r"add an? (\w+) (circle|square|triangle)"),
}


@pytest.mark.parametrize("canvas", [32, 64])
@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edits_are_verified_by_the_detector(kind: str, canvas: int) -> None:
    rng = np.random.default_rng(EDIT_KINDS.index(kind) * 100 + canvas)
    for _ in range(40):
        edit = sample_edit(rng, canvas, kind)
        source, instruction, target, judge = edit
        assert edit.kind == kind
        assert is_valid_scene(source) and is_valid_scene(target)
        m = PATTERNS[kind].fullmatch(instruction)
        assert m, instruction
        src_dets, tgt_dets = detect(render(source)), detect(render(target))
        assert judge(tgt_dets), (instruction, target, tgt_dets)
        assert not judge(src_dets)
        for scene in (source, target):
            assert all((o.color, o.shape) not in SPEC_HELD_OUT for o in scene.objects)
        if kind == "recolor":
            shape, color = m.groups()
            (before,) = [d for d in src_dets if d.shape == shape]  # the only one of its shape
            (after,) = [d for d in tgt_dets if d.shape == shape]
            assert after.color == color != before.color
            assert abs(after.cx - before.cx) < 0.5 and abs(after.cy - before.cy) < 0.5
            assert len(src_dets) == len(tgt_dets)
        elif kind == "remove":
            (shape,) = m.groups()
            assert sum(d.shape == shape for d in src_dets) == 1
            assert sum(d.shape == shape for d in tgt_dets) == 0
            assert len(tgt_dets) == len(src_dets) - 1 >= 1
        else:
            color, shape = m.groups()
            n_before = sum((d.shape, d.color) == (shape, color) for d in src_dets)
            assert sum((d.shape, d.color) == (shape, color) for d in tgt_dets) == n_before + 1
            assert len(tgt_dets) == len(src_dets) + 1


def test_judge_rejects_wrong_edits() -> None:
    circle = ShapeObject("circle", "red", 16, 16, 14)
    square = ShapeObject("square", "green", 46, 46, 14)
    source = Scene((circle, square), 64)
    target = Scene((dataclasses.replace(circle, color="blue"), square), 64)
    edit = EditPair("recolor", "make the circle blue", source, target, "circle", "blue")
    assert edit.judge(detect(render(target)))
    wrong_colour = Scene((dataclasses.replace(circle, color="yellow"), square), 64)
    assert not edit.judge(detect(render(wrong_colour)))
    moved = Scene((dataclasses.replace(circle, color="blue", cx=30), square), 64)
    assert not edit.judge(detect(render(moved)))
    extra = Scene((*target.objects, ShapeObject("triangle", "red", 46, 16, 14)), 64)
    assert not edit.judge(detect(render(extra)))
    lost_square = Scene((target.objects[0],), 64)
    assert not edit.judge(detect(render(lost_square)))


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        sample_edit(np.random.default_rng(0), kind="rotate")
