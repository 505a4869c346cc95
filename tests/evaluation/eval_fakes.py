"""Fake pipelines whose right answers are known, to check the benchmark harness.

They read the prompt text themselves (no structured spec from the benchmark code) and draw a
scene that satisfies it with the Shapes world's own placement, so a correct harness must give
them a perfect score; their outputs depend only on the noise they are handed.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image

from cheers.shapes import COLORS, SHAPES, Scene, render
from cheers.shapes.render import place_objects

SHAPE = "(circle|square|triangle)"
COLOR = f"({'|'.join(COLORS)})"
ART = "an?"
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
PHRASES = {
    "to the left of": "left of",
    "to the right of": "right of",
    "above": "above",
    "below": "below",
}


def parse_prompt(text: str) -> tuple[list[tuple[str, str | None]], str | None]:
    """``([(shape, colour or None), ...], relation or None)`` named by a Shapes prompt."""
    if m := re.fullmatch(rf"(one|two|three|four) {SHAPE}s?", text):
        return [(m[2], None)] * NUMBERS[m[1]], None
    rel = "|".join(PHRASES)
    if m := re.fullmatch(rf"{ART} {SHAPE} ({rel}) {ART} {SHAPE}", text):
        return [(m[1], None), (m[3], None)], PHRASES[m[2]]
    if m := re.fullmatch(rf"{ART} {COLOR} {SHAPE} and {ART} {COLOR} {SHAPE}", text):
        return [(m[2], m[1]), (m[4], m[3])], None
    if m := re.fullmatch(rf"{ART} {SHAPE} and {ART} {SHAPE}", text):
        return [(m[1], None), (m[2], None)], None
    if m := re.fullmatch(rf"{ART} {COLOR} {SHAPE}", text):
        return [(m[2], m[1])], None
    if m := re.fullmatch(rf"{ART} {SHAPE}", text):
        return [(m[1], None)], None
    raise AssertionError(f"unexpected prompt {text!r}")


def relation_of(a: tuple[float, float], b: tuple[float, float]) -> str | None:
    """Where ``a`` lies relative to ``b`` on the dominant axis (image y grows downwards)."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) == abs(dy):
        return None
    if abs(dx) > abs(dy):
        return "right of" if dx > 0 else "left of"
    return "below" if dy > 0 else "above"


def true_centre(obj: Any) -> tuple[float, float]:
    """Centre of mass of a drawn shape (a triangle's lies 2/3 down from its apex)."""
    if obj.shape == "triangle":
        return obj.cx, obj.cy - obj.size / 2 + 2 * obj.size / 3
    return obj.cx, obj.cy


def scene_for_prompt(text: str, canvas: int, rng: np.random.Generator) -> Scene:
    """A valid scene that satisfies ``text``: the named objects only, colours free if unnamed."""
    objects, relation = parse_prompt(text)
    kinds = [
        (s, c if c is not None else COLORS[int(rng.integers(len(COLORS)))]) for s, c in objects
    ]
    condition = None
    if relation is not None:

        def condition(scene: Scene) -> bool:
            a, b = (true_centre(o) for o in scene.objects)
            lead = abs(abs(a[0] - b[0]) - abs(a[1] - b[1]))
            return relation_of(a, b) == relation and lead >= canvas / 16

    return place_objects(rng, kinds, canvas, condition)


def noise_rng(noise: torch.Tensor) -> np.random.Generator:
    """A numpy generator seeded by the bytes of one image's noise."""
    return np.random.default_rng(zlib.crc32(noise.numpy().tobytes()))


def scale_scene(scene: Scene, canvas: int) -> Scene:
    """``scene`` drawn on a canvas of side ``canvas`` (an integer multiple or divisor)."""
    f = canvas / scene.canvas
    objs = [
        dataclasses.replace(o, cx=o.cx * f, cy=o.cy * f, size=o.size * f) for o in scene.objects
    ]
    return Scene(tuple(objs), canvas)


class FakePipe:
    """Stands in for CheersPipeline: ``resolution``, ``model.config`` and the three requests.

    ``draw(prompt, noise)`` makes a text-to-image output, ``answer(image, question)`` an
    answer and ``edit_fn(image, instruction, noise)`` an edit output; every call is logged.
    """

    def __init__(
        self,
        resolution: int = 64,
        draw: Callable[[str, torch.Tensor], Image.Image] | None = None,
        answer: Callable[[Image.Image, str], str] | None = None,
        edit_fn: Callable[[Image.Image, str, torch.Tensor], Image.Image] | None = None,
    ) -> None:
        self.resolution = resolution
        self.model = SimpleNamespace(config=SimpleNamespace(latent_channels=3, grid_size=2))
        self.draw, self.answer, self.edit_fn = draw, answer, edit_fn
        self.calls: list[dict[str, Any]] = []

    def text_to_image(
        self, prompts: Sequence[str], *, num_images_per_prompt: int = 1, latents=None, **kw: Any
    ) -> SimpleNamespace:
        self.calls.append({"prompts": list(prompts), "latents": latents, **kw})
        rows = [p for p in prompts for _ in range(num_images_per_prompt)]
        assert latents is not None and latents.shape[0] == len(rows)
        return SimpleNamespace(images=[self.draw(p, latents[i]) for i, p in enumerate(rows)])

    def understand(self, images: Sequence[Any], questions: Sequence[str], **kw: Any) -> list[str]:
        self.calls.append({"questions": list(questions), **kw})
        return [self.answer(im, q) for im, q in zip(images, questions, strict=True)]

    def edit(
        self, images: Sequence[Any], instructions: Sequence[str], *, latents=None, **kw: Any
    ) -> SimpleNamespace:
        self.calls.append({"instructions": list(instructions), "latents": latents, **kw})
        assert latents is not None and latents.shape[0] == len(instructions)
        out = [
            self.edit_fn(im, ins, latents[i])
            for i, (im, ins) in enumerate(zip(images, instructions, strict=True))
        ]
        return SimpleNamespace(images=out)


def oracle_drawer(resolution: int, world: int = 64) -> Callable[[str, torch.Tensor], Image.Image]:
    """Draws, at ``resolution``, a scene of the ``world``-pixel Shapes world satisfying each
    prompt (what a perfect model trained on that world would output), chosen by the noise."""

    def draw(prompt: str, noise: torch.Tensor) -> Image.Image:
        scene = scene_for_prompt(prompt, world, noise_rng(noise))
        return render(scale_scene(scene, resolution) if resolution != world else scene)

    return draw


def blank_drawer(resolution: int) -> Callable[[str, torch.Tensor], Image.Image]:
    """Plain white images: nothing for the detector to find."""
    return lambda prompt, noise: Image.new("RGB", (resolution, resolution), (255, 255, 255))


def image_key(image: Any) -> bytes:
    return np.asarray(image.convert("RGB")).tobytes()


__all__ = ["SHAPES", "FakePipe", "blank_drawer", "image_key", "oracle_drawer", "scale_scene"]
