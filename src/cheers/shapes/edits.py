"""Editing pairs of the Shapes world: source scene → instruction → target scene.

Three kinds, each naming an object unambiguously:

- ``recolor``: ``make the circle blue`` (the only circle changes colour, nothing moves);
- ``remove``: ``remove the square`` (the only square disappears);
- ``add``: ``add a red triangle`` (a new object at a free spot).

:meth:`EditPair.judge` checks detector output on an edited image against the target scene.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cheers.errors import CheersError
from cheers.shapes.captions import noun_phrase
from cheers.shapes.detector import Detection
from cheers.shapes.render import (
    DEFAULT_CANVAS,
    HELD_OUT,
    MAX_OBJECTS,
    SHAPES,
    Scene,
    allowed_kinds,
    random_object,
    sample_scene,
)

EDIT_KINDS: tuple[str, ...] = ("recolor", "remove", "add")


@dataclass(frozen=True)
class EditPair:
    """An edit: ``instruction`` turns ``source`` into ``target``.

    ``shape`` is the object edited; ``color`` the new colour (``recolor``) or the added object's
    colour (``add``), ``None`` for ``remove``.
    """

    kind: str
    instruction: str
    source: Scene
    target: Scene
    shape: str
    color: str | None = None

    def judge(self, detections: Sequence[Detection], tol: float | None = None) -> bool:
        """Whether detections on the edited image match the target scene.

        Every target object must be matched by its own detection of the same shape and colour
        whose centre lies within ``tol`` pixels (default ``S / 10``) of the object's centroid,
        and nothing else may be detected: the edit is done and the rest is left alone.
        """
        return matches_scene(detections, self.target, tol)

    def __iter__(self) -> Iterator[Any]:
        """Unpack as ``(source, instruction, target, judge)``."""
        return iter((self.source, self.instruction, self.target, self.judge))


def matches_scene(detections: Sequence[Detection], scene: Scene, tol: float | None = None) -> bool:
    """Whether ``detections`` are exactly ``scene``'s objects (classes, centres within ``tol``).

    Matching is greedy by distance, which is exact here because objects are at least
    ``S / 6`` apart while ``tol`` defaults to ``S / 10``.
    """
    tol = scene.canvas / 10 if tol is None else tol
    if len(detections) != len(scene.objects):
        return False
    free = list(range(len(detections)))
    for obj in scene.objects:
        ox, oy = obj.centroid
        best, best_d = None, tol
        for i in free:
            d = detections[i]
            if d.shape != obj.shape or d.color != obj.color:
                continue
            dist = float(np.hypot(d.cx - ox, d.cy - oy))
            if dist <= best_d:
                best, best_d = i, dist
        if best is None:
            return False
        free.remove(best)
    return True


def _singletons(scene: Scene) -> list[str]:
    return [s for s in SHAPES if scene.count(shape=s) == 1]


def sample_edit(
    rng: np.random.Generator,
    canvas: int = DEFAULT_CANVAS,
    kind: str | None = None,
    forbid: Iterable[tuple[str, str]] = HELD_OUT,
    max_tries: int = 100,
) -> EditPair:
    """A random edit of ``kind`` (default uniform over :data:`EDIT_KINDS`).

    Neither scene holds a forbidden ``(color, shape)`` object. Sources have at least two objects
    for ``remove`` (so the target is not empty) and at most three for ``add``.

    Raises:
        CheersError: on an unknown kind, or when no edit was found in ``max_tries`` scenes.
    """
    forbid = frozenset(forbid)
    if kind is None:
        kind = EDIT_KINDS[int(rng.integers(len(EDIT_KINDS)))]
    if kind not in EDIT_KINDS:
        raise CheersError(f"unknown edit kind {kind!r}; expected one of {EDIT_KINDS}")
    kinds = allowed_kinds(forbid=forbid)
    for _ in range(max_tries):
        if kind == "add":
            n = int(rng.integers(1, MAX_OBJECTS))
            source = sample_scene(rng, canvas, n, forbid=forbid)
            shape, color = kinds[int(rng.integers(len(kinds)))]
            new = random_object(rng, shape, color, canvas, source.objects)
            if new is None:
                continue
            target = Scene((*source.objects, new), canvas)
            return EditPair(kind, f"add {noun_phrase(shape, color)}", source, target, shape, color)
        n = int(rng.integers(2 if kind == "remove" else 1, MAX_OBJECTS + 1))
        source = sample_scene(rng, canvas, n, forbid=forbid)
        candidates = _singletons(source)
        if not candidates:
            continue
        shape = candidates[int(rng.integers(len(candidates)))]
        obj = source.find(shape=shape)[0]
        if kind == "remove":
            target = Scene(tuple(o for o in source.objects if o is not obj), canvas)
            return EditPair(kind, f"remove the {shape}", source, target, shape)
        colors = [c for s, c in kinds if s == shape and c != obj.color]
        color = colors[int(rng.integers(len(colors)))]
        recolored = dataclasses.replace(obj, color=color)
        target = Scene(tuple(recolored if o is obj else o for o in source.objects), canvas)
        return EditPair(kind, f"make the {shape} {color}", source, target, shape, color)
    raise CheersError(f"no {kind} edit found in {max_tries} scenes on a {canvas}-pixel canvas")
