"""Generation prompts of the Shapes world, by GenEval category, and their judges.

A prompt is a :class:`PromptSpec`: its category, its text and the structured fields the judge
needs, so evaluation never parses text. :func:`sample_prompt` draws a prompt together with a
scene that satisfies it (the training target); :func:`judge` decides from detector output
whether an image satisfies a prompt (spec: ``SHAPES.md``, "Captions").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cheers.errors import CheersError
from cheers.shapes.detector import Detection
from cheers.shapes.render import (
    COLORS,
    DEFAULT_CANVAS,
    HELD_OUT,
    SHAPES,
    Scene,
    allowed_kinds,
    place_objects,
)

CATEGORIES: tuple[str, ...] = (
    "single_object",
    "two_object",
    "counting",
    "colors",
    "position",
    "color_attr",
)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
NUMBER_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")

_RELATION_PHRASES = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
}


def article(word: str) -> str:
    """``"an"`` before a vowel sound (``orange``), else ``"a"``."""
    return "an" if word[:1] in "aeiou" else "a"


def noun_phrase(shape: str, color: str | None = None) -> str:
    """``"a circle"``, ``"a red circle"``, ``"an orange square"``."""
    words = f"{color} {shape}" if color else shape
    return f"{article(words)} {words}"


def plural(shape: str) -> str:
    """Plural of a shape name (all three take ``s``)."""
    return f"{shape}s"


def count_phrase(count: int, shape: str) -> str:
    """``"one circle"``, ``"three triangles"``."""
    return f"{NUMBER_WORDS[count]} {shape if count == 1 else plural(shape)}"


def relation_phrase(relation: str) -> str:
    """``"to the left of"``, ``"to the right of"``, ``"above"`` or ``"below"``."""
    return _RELATION_PHRASES[relation]


def dominant_relation(a: tuple[float, float], b: tuple[float, float]) -> str | None:
    """Where centre ``a`` lies relative to centre ``b`` along the dominant axis.

    Image ``y`` grows downwards, so ``"above"`` means a smaller ``y``. ``None`` when the two
    axes tie exactly (no relation holds).
    """
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) > abs(dy):
        return "left of" if dx < 0 else "right of"
    if abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return None


def relation_clearness(a: tuple[float, float], b: tuple[float, float]) -> float:
    """How far the dominant axis wins: ``| |dx| - |dy| |`` in pixels."""
    return abs(abs(a[0] - b[0]) - abs(a[1] - b[1]))


def clear_margin(canvas: int) -> float:
    """Dominant-axis lead (pixels) that a generated position relation keeps: ``S / 16``.

    Detector centroids of rendered shapes are within 0.2 px of the true ones, so relations with
    this lead read the same on the image as in the scene.
    """
    return canvas / 16


@dataclass(frozen=True)
class PromptSpec:
    """A generation prompt and what the judge needs to check it.

    Fields by category: ``single_object`` shape; ``two_object`` shape, shape2; ``counting``
    shape, count; ``colors`` shape, color; ``position`` shape, relation, shape2 (the first
    object lies ``relation`` the second); ``color_attr`` shape, color, shape2, color2.
    """

    category: str
    text: str
    shape: str
    color: str | None = None
    count: int | None = None
    shape2: str | None = None
    color2: str | None = None
    relation: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """The ``(color, shape)`` compositions the prompt names."""
        out = []
        if self.color is not None:
            out.append((self.color, self.shape))
        if self.color2 is not None and self.shape2 is not None:
            out.append((self.color2, self.shape2))
        return out

    def mentions(self, pairs: Iterable[tuple[str, str]] = HELD_OUT) -> bool:
        """Whether the prompt names any of ``pairs`` (default the held-out compositions)."""
        wanted = set(pairs)
        return any(p in wanted for p in self.pairs())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the set fields."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PromptSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


def make_prompt(
    category: str,
    shape: str,
    color: str | None = None,
    count: int | None = None,
    shape2: str | None = None,
    color2: str | None = None,
    relation: str | None = None,
) -> PromptSpec:
    """Build a :class:`PromptSpec` and its text from the structured fields.

    Raises:
        CheersError: on an unknown category, shape, colour or relation, or a missing field.
    """

    def need(value: Any, name: str, allowed: Sequence[Any]) -> None:
        if value not in allowed:
            raise CheersError(f"{category} prompt needs {name} in {tuple(allowed)}, got {value!r}")

    need(shape, "shape", SHAPES)
    if category == "single_object":
        text = noun_phrase(shape)
    elif category == "two_object":
        need(shape2, "shape2", SHAPES)
        text = f"{noun_phrase(shape)} and {noun_phrase(shape2)}"
    elif category == "counting":
        need(count, "count", range(1, len(NUMBER_WORDS)))
        text = count_phrase(count, shape)
    elif category == "colors":
        need(color, "color", COLORS)
        text = noun_phrase(shape, color)
    elif category == "position":
        need(shape2, "shape2", SHAPES)
        need(relation, "relation", RELATIONS)
        text = f"{noun_phrase(shape)} {relation_phrase(relation)} {noun_phrase(shape2)}"
    elif category == "color_attr":
        need(color, "color", COLORS)
        need(shape2, "shape2", SHAPES)
        need(color2, "color2", COLORS)
        text = f"{noun_phrase(shape, color)} and {noun_phrase(shape2, color2)}"
    else:
        raise CheersError(f"unknown prompt category {category!r}; expected one of {CATEGORIES}")
    return PromptSpec(category, text, shape, color, count, shape2, color2, relation)


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _two_distinct(rng: np.random.Generator, items: Sequence[Any]) -> tuple[Any, Any]:
    i, j = rng.choice(len(items), size=2, replace=False)
    return items[int(i)], items[int(j)]


def sample_prompt(
    rng: np.random.Generator,
    category: str | None = None,
    canvas: int = DEFAULT_CANVAS,
    forbid: Iterable[tuple[str, str]] = HELD_OUT,
    include: tuple[str, str] | None = None,
) -> tuple[PromptSpec, Scene]:
    """A random prompt of ``category`` (default uniform) and a scene that satisfies it.

    The scene holds exactly the objects the prompt names: ``counting`` draws ``count`` objects
    of the shape, ``position`` keeps a dominant-axis lead of :func:`clear_margin`; colours
    the prompt leaves open are drawn at random. No object is a forbidden ``(color, shape)``.
    Two-object prompts use two different shapes (and, for ``color_attr``, two colours).

    ``include`` (a ``(color, shape)`` pair, for ``colors`` and ``color_attr``) forces the first
    named object to be that composition even when it is forbidden: this builds the held-out
    evaluation prompts.

    Raises:
        CheersError: on an unknown category, or ``include`` with another category.
    """
    forbid = frozenset(forbid)
    if category is None:
        category = _pick(rng, CATEGORIES)
    if include is not None and category not in ("colors", "color_attr"):
        raise CheersError(f"include= needs a colour category (colors, color_attr), got {category}")
    kinds = allowed_kinds(forbid=forbid)

    def any_color(shape: str) -> str:
        return _pick(rng, [c for s, c in kinds if s == shape])

    if category == "single_object":
        shape = _pick(rng, SHAPES)
        spec = make_prompt(category, shape)
        return spec, place_objects(rng, [(shape, any_color(shape))], canvas)
    if category == "two_object":
        a, b = _two_distinct(rng, SHAPES)
        spec = make_prompt(category, a, shape2=b)
        return spec, place_objects(rng, [(a, any_color(a)), (b, any_color(b))], canvas)
    if category == "counting":
        shape = _pick(rng, SHAPES)
        count = int(rng.integers(1, len(NUMBER_WORDS)))
        spec = make_prompt(category, shape, count=count)
        return spec, place_objects(rng, [(shape, any_color(shape)) for _ in range(count)], canvas)
    if category == "colors":
        color, shape = include if include is not None else _pick(rng, [(c, s) for s, c in kinds])
        spec = make_prompt(category, shape, color=color)
        return spec, place_objects(rng, [(shape, color)], canvas)
    if category == "position":
        a, b = _two_distinct(rng, SHAPES)
        relation = _pick(rng, RELATIONS)
        spec = make_prompt(category, a, shape2=b, relation=relation)
        margin = clear_margin(canvas)

        def holds(scene: Scene) -> bool:
            pa, pb = scene.objects[0].centroid, scene.objects[1].centroid
            return dominant_relation(pa, pb) == relation and relation_clearness(pa, pb) >= margin

        scene = place_objects(rng, [(a, any_color(a)), (b, any_color(b))], canvas, holds)
        return spec, scene
    if category == "color_attr":
        if include is not None:
            color, shape = include
            rest = [(s, c) for s, c in kinds if s != shape and c != color]
            shape2, color2 = _pick(rng, rest)
        else:
            while True:
                (shape, color), (shape2, color2) = _two_distinct(rng, kinds)
                if shape != shape2 and color != color2:
                    break
        spec = make_prompt(category, shape, color=color, shape2=shape2, color2=color2)
        return spec, place_objects(rng, [(shape, color), (shape2, color2)], canvas)
    raise CheersError(f"unknown prompt category {category!r}; expected one of {CATEGORIES}")


def _has(dets: Sequence[Detection], shape: str | None, color: str | None = None) -> bool:
    return any(d.shape == shape and (color is None or d.color == color) for d in dets)


def judge(spec: PromptSpec, detections: Sequence[Detection]) -> bool:
    """Whether ``detections`` (detector output on a generated image) satisfy ``spec``.

    single_object: at least one such shape. two_object: at least one of each. counting: exactly
    ``count`` of that shape (other shapes are not counted, as in GenEval). colors: a shape of
    that colour. position: some object of ``shape`` lies ``relation`` some object of ``shape2``
    along the dominant axis of their centre difference. color_attr: both coloured shapes.
    """
    c = spec.category
    if c == "single_object":
        return _has(detections, spec.shape)
    if c == "two_object":
        return _has(detections, spec.shape) and _has(detections, spec.shape2)
    if c == "counting":
        return sum(d.shape == spec.shape for d in detections) == spec.count
    if c == "colors":
        return _has(detections, spec.shape, spec.color)
    if c == "position":
        firsts = [d for d in detections if d.shape == spec.shape]
        seconds = [d for d in detections if d.shape == spec.shape2]
        return any(
            a is not b and dominant_relation((a.cx, a.cy), (b.cx, b.cy)) == spec.relation
            for a in firsts
            for b in seconds
        )
    if c == "color_attr":
        return _has(detections, spec.shape, spec.color) and _has(
            detections, spec.shape2, spec.color2
        )
    raise CheersError(f"unknown prompt category {c!r}; expected one of {CATEGORIES}")


def score_generation(results: Iterable[tuple[PromptSpec, bool]]) -> dict[str, float]:
    """GenEval-style scores: accuracy per category present, and ``overall`` = their mean."""
    hits: dict[str, list[bool]] = {}
    for spec, ok in results:
        hits.setdefault(spec.category, []).append(bool(ok))
    scores = {c: float(np.mean(hits[c])) for c in CATEGORIES if c in hits}
    scores["overall"] = float(np.mean(list(scores.values()))) if scores else 0.0
    return scores
