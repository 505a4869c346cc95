"""Scenes of the Shapes world and their rendering (spec: ``SHAPES.md``, "Rendering").

Coordinates are continuous canvas coordinates: pixel ``(row i, column j)`` covers the square
``[j, j + 1] × [i, i + 1]``, so its centre is ``(j + 0.5, i + 0.5)``. An object's ``(cx, cy)`` is
the centre of its bounding box and ``size`` the side of that box. :func:`sample_scene` places
boxes on whole pixels, which keeps squares crisp and the detector's fill ratios stable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from cheers.errors import CheersError

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 190),
    "orange": (245, 130, 30),
}
COLORS: tuple[str, ...] = tuple(PALETTE)

# (colour, shape) pairs that never appear in the training split.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("purple", "triangle"), ("orange", "square")})

MIN_OBJECTS = 1
MAX_OBJECTS = 4
MARGIN = 2
DEFAULT_CANVAS = 64

# Sub-samples per pixel side used to estimate coverage for anti-aliasing.
_SUPERSAMPLE = 8


def size_range(canvas: int) -> tuple[int, int]:
    """Whole-pixel object sizes allowed on a canvas of side ``canvas``: ``[ceil(S/6), floor(S/3)]``.

    Raises:
        CheersError: when the canvas is too small to hold even one object with its margins.
    """
    lo, hi = math.ceil(canvas / 6), math.floor(canvas / 3)
    if canvas < 12 or lo > hi or hi + 2 * MARGIN > canvas:
        raise CheersError(f"canvas {canvas} is too small for the Shapes world; use 32, 64 or 128")
    return lo, hi


@dataclass(frozen=True)
class ShapeObject:
    """One filled shape: ``shape`` in :data:`SHAPES`, ``color`` a key of :data:`PALETTE`.

    ``(cx, cy)`` is the centre of the bounding box, ``size`` its side, in canvas pixels.
    """

    shape: str
    color: str
    cx: float
    cy: float
    size: float

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise CheersError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")
        if self.color not in PALETTE:
            raise CheersError(f"unknown colour {self.color!r}; expected one of {COLORS}")
        if not self.size > 0:
            raise CheersError(f"object size must be positive, got {self.size}")

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``: left, top, right, bottom edges of the bounding box."""
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)

    @property
    def centroid(self) -> tuple[float, float]:
        """Centre of mass of the filled shape, which is what the detector reports.

        A triangle's centroid lies two thirds of the way down from the apex, i.e. ``size / 6``
        below the centre of its bounding box.
        """
        if self.shape == "triangle":
            return (self.cx, self.cy + self.size / 6)
        return (self.cx, self.cy)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields."""
        return {
            "shape": self.shape,
            "color": self.color,
            "cx": self.cx,
            "cy": self.cy,
            "size": self.size,
        }


@dataclass(frozen=True)
class Scene:
    """A canvas of side ``canvas`` pixels holding ``objects`` on a white background."""

    objects: tuple[ShapeObject, ...]
    canvas: int = DEFAULT_CANVAS

    def __post_init__(self) -> None:
        # Accept any sequence but store a tuple, so scenes stay hashable and immutable.
        object.__setattr__(self, "objects", tuple(self.objects))
        if self.canvas < 1:
            raise CheersError(f"canvas side must be positive, got {self.canvas}")

    def count(self, shape: str | None = None, color: str | None = None) -> int:
        """Number of objects matching ``shape`` and ``color`` (``None`` matches anything)."""
        return len(self.find(shape, color))

    def find(self, shape: str | None = None, color: str | None = None) -> list[ShapeObject]:
        """Objects matching ``shape`` and ``color`` (``None`` matches anything), in order."""
        return [
            o
            for o in self.objects
            if (shape is None or o.shape == shape) and (color is None or o.color == color)
        ]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"canvas": S, "objects": [...]}``."""
        return {"canvas": self.canvas, "objects": [o.to_dict() for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        """Inverse of :meth:`to_dict`."""
        return cls(tuple(ShapeObject(**o) for o in data["objects"]), int(data["canvas"]))


def _coverage(obj: ShapeObject, canvas: int) -> tuple[slice, slice, np.ndarray] | None:
    """Fraction of each pixel covered by ``obj`` inside its bounding-box window."""
    x0, y0, x1, y1 = obj.bbox
    c0, c1 = max(0, math.floor(x0)), min(canvas, math.ceil(x1))
    r0, r1 = max(0, math.floor(y0)), min(canvas, math.ceil(y1))
    if c0 >= c1 or r0 >= r1:
        return None
    k = _SUPERSAMPLE
    offsets = (np.arange(k) + 0.5) / k
    xs = (np.arange(c0, c1)[:, None] + offsets[None, :]).ravel()[None, :]
    ys = (np.arange(r0, r1)[:, None] + offsets[None, :]).ravel()[:, None]
    half = obj.size / 2
    if obj.shape == "circle":
        inside = (xs - obj.cx) ** 2 + (ys - obj.cy) ** 2 <= half * half
    elif obj.shape == "square":
        inside = (np.abs(xs - obj.cx) <= half) & (np.abs(ys - obj.cy) <= half)
    else:
        # Apex at (cx, y0), base on y1: the half-width grows by 1/2 per unit of depth.
        inside = (ys <= y1) & (ys >= y0) & (np.abs(xs - obj.cx) <= (ys - y0) / 2)
    cov = inside.reshape(r1 - r0, k, c1 - c0, k).mean(axis=(1, 3))
    return slice(r0, r1), slice(c0, c1), cov


def render_array(scene: Scene, antialias: bool = True) -> np.ndarray:
    """Render ``scene`` to an ``(S, S, 3)`` uint8 array (see :func:`render`)."""
    s = scene.canvas
    out = np.full((s, s, 3), 255.0)
    for obj in scene.objects:
        win = _coverage(obj, s)
        if win is None:
            continue
        rows, cols, cov = win
        # Squaring the coverage keeps the edges soft while the detector's mask (distance from
        # white > 60, i.e. alpha > ~0.3) stays the set of pixels at least about half covered:
        # with plain linear blending a 7-px circle at S=32 fills 92 % of its box and reads as
        # a square.
        alpha = cov * cov if antialias else (cov >= 0.5).astype(np.float64)
        color = np.asarray(PALETTE[obj.color], dtype=np.float64)
        patch = out[rows, cols]
        out[rows, cols] = patch * (1 - alpha[..., None]) + color * alpha[..., None]
    return np.rint(out).astype(np.uint8)


def render(scene: Scene, antialias: bool = True) -> Image.Image:
    """Draw ``scene`` as an RGB image: filled shapes in palette colours on white.

    With ``antialias`` each pixel's colour is blended with white by the square of the fraction of
    the pixel the shape covers (estimated on an 8×8 sub-grid); without it a pixel takes the
    shape's colour when at least half of it is covered. The detector classifies every shape,
    colour and size correctly when boxes sit on whole pixels, as :func:`sample_scene` places
    them; boxes at fractional positions can push small shapes over a fill-ratio threshold.
    """
    return Image.fromarray(render_array(scene, antialias), mode="RGB")


def separated(a: ShapeObject, b: ShapeObject, margin: float = MARGIN) -> bool:
    """Whether the bounding boxes of ``a`` and ``b`` are at least ``margin`` pixels apart."""
    ax0, ay0, ax1, ay1 = a.bbox
    bx0, by0, bx1, by1 = b.bbox
    return ax1 + margin <= bx0 or bx1 + margin <= ax0 or ay1 + margin <= by0 or by1 + margin <= ay0


def inside_canvas(obj: ShapeObject, canvas: int, margin: float = MARGIN) -> bool:
    """Whether ``obj``'s bounding box keeps ``margin`` pixels from every border."""
    x0, y0, x1, y1 = obj.bbox
    return x0 >= margin and y0 >= margin and x1 <= canvas - margin and y1 <= canvas - margin


def is_valid_scene(scene: Scene) -> bool:
    """Whether ``scene`` obeys the world's rules: 1–4 objects, sizes, margins, no overlap."""
    lo, hi = size_range(scene.canvas)
    objs = scene.objects
    if not MIN_OBJECTS <= len(objs) <= MAX_OBJECTS:
        return False
    if any(not (lo <= o.size <= hi and inside_canvas(o, scene.canvas)) for o in objs):
        return False
    return all(separated(a, b) for i, a in enumerate(objs) for b in objs[i + 1 :])


def random_object(
    rng: np.random.Generator, shape: str, color: str, canvas: int, others: Iterable[ShapeObject]
) -> ShapeObject | None:
    """A ``shape``/``color`` object at a random free whole-pixel spot, or ``None`` if none found.

    The spot keeps the margins from the border and from every object in ``others``.
    """
    lo, hi = size_range(canvas)
    others = tuple(others)
    for _ in range(64):
        size = int(rng.integers(lo, hi + 1))
        x0 = int(rng.integers(MARGIN, canvas - MARGIN - size + 1))
        y0 = int(rng.integers(MARGIN, canvas - MARGIN - size + 1))
        obj = ShapeObject(shape, color, x0 + size / 2, y0 + size / 2, size)
        if all(separated(obj, o) for o in others):
            return obj
    return None


def place_objects(
    rng: np.random.Generator,
    kinds: Sequence[tuple[str, str]],
    canvas: int = DEFAULT_CANVAS,
    condition: Callable[[Scene], bool] | None = None,
    max_tries: int = 200,
) -> Scene:
    """A scene with one object per ``(shape, color)`` in ``kinds``, placed at random.

    Placement is rejection sampling: each attempt draws sizes and positions until every object
    fits; the scene is returned when ``condition`` (if given) accepts it.

    Raises:
        CheersError: when ``kinds`` breaks the 1–4 object rule, or no valid placement was found in
            ``max_tries`` attempts (e.g. an unsatisfiable ``condition``).
    """
    if not MIN_OBJECTS <= len(kinds) <= MAX_OBJECTS:
        raise CheersError(f"a scene holds {MIN_OBJECTS} to {MAX_OBJECTS} objects, got {len(kinds)}")
    size_range(canvas)
    for _ in range(max_tries):
        placed: list[ShapeObject] = []
        for shape, color in kinds:
            obj = random_object(rng, shape, color, canvas, placed)
            if obj is None:
                break
            placed.append(obj)
        else:
            scene = Scene(tuple(placed), canvas)
            if condition is None or condition(scene):
                return scene
    raise CheersError(
        f"could not place {list(kinds)} on a {canvas}-pixel canvas in {max_tries} tries; "
        "relax the condition or use a larger canvas"
    )


def allowed_kinds(
    shapes: Iterable[str] | None = None,
    colors: Iterable[str] | None = None,
    forbid: Iterable[tuple[str, str]] = HELD_OUT,
) -> list[tuple[str, str]]:
    """Each ``(shape, color)`` of ``shapes`` × ``colors`` whose ``(color, shape)`` is allowed.

    Raises:
        CheersError: on an unknown shape or colour.
    """
    shapes = SHAPES if shapes is None else tuple(shapes)
    colors = COLORS if colors is None else tuple(colors)
    for s in shapes:
        if s not in SHAPES:
            raise CheersError(f"unknown shape {s!r}; expected one of {SHAPES}")
    for c in colors:
        if c not in PALETTE:
            raise CheersError(f"unknown colour {c!r}; expected one of {COLORS}")
    forbid = set(forbid)
    return [(s, c) for s in shapes for c in colors if (c, s) not in forbid]


def sample_scene(
    rng: np.random.Generator,
    canvas: int = DEFAULT_CANVAS,
    n_objects: int | None = None,
    shapes: Iterable[str] | None = None,
    colors: Iterable[str] | None = None,
    forbid: Iterable[tuple[str, str]] = HELD_OUT,
) -> Scene:
    """A random valid scene: ``n_objects`` (default 1–4, uniform) non-overlapping objects.

    Each object's shape and colour are drawn uniformly from ``shapes`` × ``colors`` (default all)
    minus the ``forbid`` set of ``(color, shape)`` pairs (default :data:`HELD_OUT`; pass ``()``
    to allow everything). Sizes are whole pixels in :func:`size_range`; boxes keep 2 px from the
    border and from each other.

    Raises:
        CheersError: (a ``ValueError``) when no shape/colour pair is allowed, ``n_objects`` is
            outside 1–4, the canvas is too small, or placement keeps failing.
    """
    kinds = allowed_kinds(shapes, colors, forbid)
    if not kinds:
        raise CheersError("no (shape, colour) pair is left once the forbidden pairs are removed")
    n = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1)) if n_objects is None else n_objects
    if not MIN_OBJECTS <= n <= MAX_OBJECTS:
        raise CheersError(f"n_objects must be between {MIN_OBJECTS} and {MAX_OBJECTS}, got {n}")
    picks = [kinds[int(rng.integers(len(kinds)))] for _ in range(n)]
    return place_objects(rng, picks, canvas)
