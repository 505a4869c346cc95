"""One-word questions about Shapes scenes (spec: ``SHAPES.md``, "Questions").

Four question types, each asked only when its answer is well defined for the scene:

- ``color``: ``What color is the <shape>?`` (exactly one such shape) → a colour name;
- ``shape``: ``What shape is the <color> object?`` (exactly one object of that colour) → a shape;
- ``count``: ``How many <shape>s are there?`` → ``zero`` … ``four``;
- ``position``: ``Is the <shape1> to the left of the <shape2>?`` (also right of / above /
  below; exactly one of each shape and a clear dominant axis) → ``yes`` / ``no``.

Each can also be asked in multiple-choice form: the question, then one lettered option a line
(``A. red``), answered with the letter.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cheers.errors import CheersError
from cheers.shapes.captions import (
    NUMBER_WORDS,
    RELATIONS,
    clear_margin,
    dominant_relation,
    plural,
    relation_clearness,
    relation_phrase,
)
from cheers.shapes.render import COLORS, SHAPES, Scene

QUESTION_TYPES: tuple[str, ...] = ("color", "shape", "count", "position")
LETTERS = "ABCD"
# Options shown in multiple-choice form (gold included): all shapes, four of the rest.
_N_OPTIONS = {"color": 4, "shape": 3, "count": 4, "position": 2}


@dataclass(frozen=True)
class QuestionSpec:
    """A question, its gold answer and the structured fields behind them.

    ``text`` is what the model sees (with the lettered options in multiple-choice form);
    ``answer`` is the gold reply (the letter in multiple-choice form); ``word`` is the one-word
    answer in both forms. ``options`` is empty for the open form.
    """

    qtype: str
    text: str
    answer: str
    word: str
    question: str
    options: tuple[str, ...] = ()
    shape: str | None = None
    color: str | None = None
    shape2: str | None = None
    relation: str | None = None

    @property
    def multiple_choice(self) -> bool:
        """Whether the question is in multiple-choice form."""
        return bool(self.options)

    @property
    def kind(self) -> str:
        """Reporting bucket: the type, with ``_mc`` for the multiple-choice form."""
        return f"{self.qtype}_mc" if self.options else self.qtype

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the set fields."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        d["options"] = list(self.options)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**data, "options": tuple(data.get("options", ()))})


def question_text(
    qtype: str,
    shape: str | None = None,
    color: str | None = None,
    shape2: str | None = None,
    relation: str | None = None,
) -> str:
    """The open-form text of a question of ``qtype`` about the given fields.

    Raises:
        CheersError: on an unknown type or a missing field.
    """
    if qtype == "color" and shape in SHAPES:
        return f"What color is the {shape}?"
    if qtype == "shape" and color in COLORS:
        return f"What shape is the {color} object?"
    if qtype == "count" and shape in SHAPES:
        return f"How many {plural(shape)} are there?"
    if qtype == "position" and shape in SHAPES and shape2 in SHAPES and relation in RELATIONS:
        return f"Is the {shape} {relation_phrase(relation)} the {shape2}?"
    raise CheersError(
        f"cannot build a {qtype!r} question from shape={shape!r}, color={color!r}, "
        f"shape2={shape2!r}, relation={relation!r}; types are {QUESTION_TYPES}"
    )


def with_options(question: str, options: Sequence[str]) -> str:
    """The multiple-choice text: the question, then ``A. option`` lines."""
    lines = [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)]
    return "\n".join([question, *lines])


def available_types(scene: Scene) -> list[str]:
    """Question types that are well defined for ``scene`` (``count`` always is)."""
    out = []
    if any(scene.count(shape=s) == 1 for s in SHAPES):
        out.append("color")
    if any(scene.count(color=c) == 1 for c in COLORS):
        out.append("shape")
    out.append("count")
    if _position_pairs(scene):
        out.append("position")
    return out


def _position_pairs(scene: Scene) -> list[tuple[str, str]]:
    """Ordered shape pairs, each shape present once, whose relation is clear."""
    single = [s for s in SHAPES if scene.count(shape=s) == 1]
    margin = clear_margin(scene.canvas)
    pairs = []
    for a in single:
        for b in single:
            if a != b:
                pa, pb = scene.find(shape=a)[0].centroid, scene.find(shape=b)[0].centroid
                if relation_clearness(pa, pb) >= margin:
                    pairs.append((a, b))
    return pairs


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def sample_question(
    rng: np.random.Generator,
    scene: Scene,
    qtype: str | None = None,
    multiple_choice: bool = False,
) -> QuestionSpec | None:
    """A random well-defined question about ``scene`` with its gold answer.

    ``qtype`` defaults to a uniform pick among :func:`available_types`; ``None`` is returned
    when the requested type is not well defined for the scene. Position questions are answered
    ``yes`` half of the time. In multiple-choice form the options are shuffled.

    Raises:
        CheersError: on an unknown ``qtype``.
    """
    if qtype is not None and qtype not in QUESTION_TYPES:
        raise CheersError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")
    types = available_types(scene)
    if qtype is None:
        qtype = _pick(rng, types)
    elif qtype not in types:
        return None
    shape = color = shape2 = relation = None
    if qtype == "color":
        shape = _pick(rng, [s for s in SHAPES if scene.count(shape=s) == 1])
        word = scene.find(shape=shape)[0].color
        pool: Sequence[str] = COLORS
    elif qtype == "shape":
        color = _pick(rng, [c for c in COLORS if scene.count(color=c) == 1])
        word = scene.find(color=color)[0].shape
        pool = SHAPES
    elif qtype == "count":
        shape = _pick(rng, SHAPES)
        word = NUMBER_WORDS[scene.count(shape=shape)]
        pool = NUMBER_WORDS
    else:
        shape, shape2 = _pick(rng, _position_pairs(scene))
        truth = dominant_relation(
            scene.find(shape=shape)[0].centroid, scene.find(shape=shape2)[0].centroid
        )
        relation = truth if rng.random() < 0.5 else _pick(rng, [r for r in RELATIONS if r != truth])
        word = "yes" if relation == truth else "no"
        pool = ("yes", "no")
    question = question_text(qtype, shape, color, shape2, relation)
    if not multiple_choice:
        return QuestionSpec(
            qtype, question, word, word, question, (), shape, color, shape2, relation
        )
    others = [o for o in pool if o != word]
    picked = [others[int(i)] for i in rng.choice(len(others), _N_OPTIONS[qtype] - 1, replace=False)]
    options = [word, *picked]
    options = [options[int(i)] for i in rng.permutation(len(options))]
    letter = LETTERS[options.index(word)]
    return QuestionSpec(
        qtype,
        with_options(question, options),
        letter,
        word,
        question,
        tuple(options),
        shape,
        color,
        shape2,
        relation,
    )


def normalize_answer(text: str) -> str:
    """Lower-case ``text`` and strip surrounding whitespace and punctuation."""
    return text.strip(string.whitespace + string.punctuation).lower()


def score_answer(pred: str, gold: str) -> bool:
    """Exact match, case-insensitive, ignoring surrounding whitespace and punctuation."""
    return normalize_answer(pred) == normalize_answer(gold)


def score_questions(results: Iterable[tuple[QuestionSpec, str]]) -> dict[str, float]:
    """Exact-match accuracy per :attr:`QuestionSpec.kind` and ``overall`` (over questions)."""
    hits: dict[str, list[bool]] = {}
    every: list[bool] = []
    for spec, pred in results:
        ok = score_answer(pred, spec.answer)
        hits.setdefault(spec.kind, []).append(ok)
        every.append(ok)
    scores = {k: float(np.mean(v)) for k, v in sorted(hits.items())}
    scores["overall"] = float(np.mean(every)) if every else 0.0
    return scores
