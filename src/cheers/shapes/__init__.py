"""The Shapes world: a procedural image world to train and benchmark a tiny Cheers on CPU.

Scenes of filled circles, squares and triangles in six colours (:mod:`.render`), a fixed
detector that judges images (:mod:`.detector`), GenEval-style generation prompts
(:mod:`.captions`), one-word questions (:mod:`.questions`), editing pairs (:mod:`.edits`) and
training splits in the released JSONL format plus fixed evaluation sets (:mod:`.dataset`).
The specification is ``SHAPES.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

from cheers.shapes.captions import (
    CATEGORIES,
    NUMBER_WORDS,
    RELATIONS,
    PromptSpec,
    dominant_relation,
    judge,
    make_prompt,
    sample_prompt,
    score_generation,
)
from cheers.shapes.detector import Detection, detect, ideal_detections
from cheers.shapes.edits import EDIT_KINDS, EditPair, matches_scene, sample_edit
from cheers.shapes.questions import (
    QUESTION_TYPES,
    QuestionSpec,
    sample_question,
    score_answer,
    score_questions,
)
from cheers.shapes.render import (
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

# Loaded on first use, so that ``python -m cheers.shapes.dataset`` does not find its own module
# already imported by the package.
_DATASET_NAMES = frozenset(
    {
        "DEFAULT_MIX",
        "IMAGE_GEN",
        "IMAGE_PROMPT",
        "QuestionRecord",
        "Sample",
        "benchmark_edits",
        "benchmark_prompts",
        "benchmark_questions",
        "heldout_prompts",
        "heldout_questions",
        "iter_split",
        "write_split",
    }
)


def __getattr__(name: str) -> Any:
    if name in _DATASET_NAMES:
        return getattr(importlib.import_module("cheers.shapes.dataset"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CATEGORIES",
    "COLORS",
    "DEFAULT_MIX",
    "EDIT_KINDS",
    "HELD_OUT",
    "IMAGE_GEN",
    "IMAGE_PROMPT",
    "NUMBER_WORDS",
    "PALETTE",
    "QUESTION_TYPES",
    "RELATIONS",
    "SHAPES",
    "Detection",
    "EditPair",
    "PromptSpec",
    "QuestionRecord",
    "QuestionSpec",
    "Sample",
    "Scene",
    "ShapeObject",
    "benchmark_edits",
    "benchmark_prompts",
    "benchmark_questions",
    "detect",
    "dominant_relation",
    "heldout_prompts",
    "heldout_questions",
    "ideal_detections",
    "is_valid_scene",
    "iter_split",
    "judge",
    "make_prompt",
    "matches_scene",
    "render",
    "render_array",
    "sample_edit",
    "sample_prompt",
    "sample_question",
    "sample_scene",
    "score_answer",
    "score_generation",
    "score_questions",
    "write_split",
]
