"""One-word questions: well-definedness, gold answers checked by the detector, scoring."""

from __future__ import annotations

import numpy as np
import pytest
from shapes_truth import WORDS, relation

from cheers.shapes import (
    COLORS,
    QUESTION_TYPES,
    QuestionSpec,
    Scene,
    ShapeObject,
    detect,
    render,
    sample_question,
    sample_scene,
    score_answer,
    score_questions,
)
from cheers.shapes.detector import Detection


def _answer_from_detections(q: QuestionSpec, dets: list[Detection]) -> str:
    """The one-word answer, worked out from detector output alone."""
    if q.qtype == "color":
        (d,) = [d for d in dets if d.shape == q.shape]
        return d.color
    if q.qtype == "shape":
        (d,) = [d for d in dets if d.color == q.color]
        return d.shape
    if q.qtype == "count":
        return WORDS[sum(d.shape == q.shape for d in dets)]
    (a,) = [d for d in dets if d.shape == q.shape]
    (b,) = [d for d in dets if d.shape == q.shape2]
    return "yes" if relation((a.cx, a.cy), (b.cx, b.cy)) == q.relation else "no"


@pytest.mark.parametrize("canvas", [32, 64, 128])
@pytest.mark.parametrize("qtype", QUESTION_TYPES)
def test_gold_answers_agree_with_the_detector(qtype: str, canvas: int) -> None:
    rng = np.random.default_rng(QUESTION_TYPES.index(qtype) + canvas)
    asked = 0
    for i in range(200):
        scene = sample_scene(rng, canvas)
        q = sample_question(rng, scene, qtype, multiple_choice=i % 2 == 1)
        if q is None:
            continue
        asked += 1
        assert q.qtype == qtype
        assert q.word == _answer_from_detections(q, detect(render(scene))), (q, scene)
        if q.multiple_choice:
            assert q.options[ord(q.answer) - ord("A")] == q.word
        else:
            assert q.answer == q.word
        if asked == 40:
            break
    assert asked == 40


def test_question_texts() -> None:
    scene = Scene(
        (ShapeObject("circle", "red", 12, 32, 12), ShapeObject("square", "blue", 50, 32, 12)), 64
    )
    rng = np.random.default_rng(0)
    texts = {sample_question(rng, scene, t).question for t in QUESTION_TYPES for _ in range(30)}
    assert {"What color is the circle?", "What color is the square?"} <= texts
    assert {"What shape is the red object?", "What shape is the blue object?"} <= texts
    assert "How many triangles are there?" in texts
    assert "Is the circle to the left of the square?" in texts
    assert "Is the square to the right of the circle?" in texts
    assert texts <= {
        "What color is the circle?",
        "What color is the square?",
        "What shape is the red object?",
        "What shape is the blue object?",
        "How many circles are there?",
        "How many squares are there?",
        "How many triangles are there?",
    } | {
        f"Is the {a} {r} the {b}?"
        for a, b in (("circle", "square"), ("square", "circle"))
        for r in ("to the left of", "to the right of", "above", "below")
    }


def test_only_well_defined_questions_are_asked() -> None:
    twins = Scene(
        (
            ShapeObject("circle", "red", 12, 12, 12),
            ShapeObject("circle", "red", 40, 12, 12),
            ShapeObject("square", "blue", 12, 40, 12),
            ShapeObject("square", "blue", 40, 40, 12),
        ),
        64,
    )
    rng = np.random.default_rng(0)
    assert sample_question(rng, twins, "color") is None  # no shape appears once
    assert sample_question(rng, twins, "shape") is None  # no colour appears once
    assert sample_question(rng, twins, "position") is None
    assert sample_question(rng, twins, "count") is not None
    # A diagonal pair has no clear dominant axis, so no position question.
    diagonal = Scene(
        (ShapeObject("circle", "red", 15, 15, 12), ShapeObject("square", "blue", 40, 41, 12)), 64
    )
    assert sample_question(rng, diagonal, "position") is None
    with pytest.raises(ValueError):
        sample_question(rng, twins, "size")


def test_count_answers_cover_zero_to_four() -> None:
    rng = np.random.default_rng(1)
    words = set()
    for _ in range(400):
        q = sample_question(rng, sample_scene(rng, 64), "count")
        words.add(q.answer)
    assert words == set(WORDS)


def test_position_answers_are_balanced() -> None:
    rng = np.random.default_rng(2)
    answers = []
    while len(answers) < 300:
        q = sample_question(rng, sample_scene(rng, 64), "position")
        if q is not None:
            answers.append(q.answer)
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_multiple_choice_layout() -> None:
    rng = np.random.default_rng(3)
    for qtype, n_options in (("color", 4), ("shape", 3), ("count", 4), ("position", 2)):
        q = None
        while q is None:
            q = sample_question(rng, sample_scene(rng, 64), qtype, multiple_choice=True)
        lines = q.text.split("\n")
        assert lines[0] == q.question and lines[0].endswith("?")
        assert len(lines) == 1 + n_options
        assert [ln[:3] for ln in lines[1:]] == [f"{c}. " for c in "ABCD"[:n_options]]
        assert [ln[3:] for ln in lines[1:]] == list(q.options)
        assert len(set(q.options)) == n_options and q.word in q.options
        assert q.answer in "ABCD"[:n_options] and len(q.answer) == 1
        if qtype == "color":
            assert set(q.options) <= set(COLORS)


def test_multiple_choice_letters_are_spread() -> None:
    rng = np.random.default_rng(4)
    letters = [
        sample_question(rng, sample_scene(rng, 64), "count", multiple_choice=True).answer
        for _ in range(200)
    ]
    assert set(letters) == set("ABCD")


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        ("red", "red", True),
        ("Red.", "red", True),
        ("  RED!\n", "red", True),
        ("'yes'", "yes", True),
        ("b", "B", True),
        ("B)", "B", True),
        ("reddish", "red", False),
        ("A. red", "A", False),
        ("dark red", "red", False),
        ("", "red", False),
    ],
)
def test_score_answer(pred: str, gold: str, ok: bool) -> None:
    assert score_answer(pred, gold) is ok


def test_score_questions_per_kind_and_overall() -> None:
    scene = sample_scene(np.random.default_rng(0), 64)
    rng = np.random.default_rng(0)
    q_open = sample_question(rng, scene, "count")
    q_mc = sample_question(rng, scene, "count", multiple_choice=True)
    scores = score_questions([(q_open, q_open.answer), (q_open, "nine"), (q_mc, q_mc.answer)])
    assert scores == {"count": 0.5, "count_mc": 1.0, "overall": pytest.approx(2 / 3)}


def test_question_spec_round_trip() -> None:
    rng = np.random.default_rng(0)
    q = sample_question(rng, sample_scene(rng, 64), "count", multiple_choice=True)
    assert QuestionSpec.from_dict(q.to_dict()) == q
