"""Independent re-statements of the spec used by the Shapes tests (not imported from src)."""

from __future__ import annotations

from cheers.shapes import ShapeObject

SPEC_PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 190),
    "orange": (245, 130, 30),
}
SPEC_HELD_OUT = {("purple", "triangle"), ("orange", "square")}
WORDS = ["zero", "one", "two", "three", "four"]


def true_centre(obj: ShapeObject) -> tuple[float, float]:
    """Centre of mass of the drawn shape (a triangle's lies 2/3 down from its apex)."""
    top = obj.cy - obj.size / 2
    if obj.shape == "triangle":
        return obj.cx, top + 2 * obj.size / 3
    return obj.cx, obj.cy


def relation(a: tuple[float, float], b: tuple[float, float]) -> str | None:
    """Where ``a`` is relative to ``b`` on the dominant axis (y grows downwards)."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) == abs(dy):
        return None
    if abs(dx) > abs(dy):
        return "right of" if dx > 0 else "left of"
    return "below" if dy > 0 else "above"
