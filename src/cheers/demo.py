"""``cheers demo``: every ability of a model on the Shapes world, as one HTML page.

Generates images for a few prompts, answers questions about a few rendered scenes and performs
one edit, timing each, then writes a self-contained ``index.html`` (images inlined) and the
PNGs next to it.
"""

from __future__ import annotations

import base64
import html
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cheers.pipeline import CheersPipeline
from cheers.shapes.detector import detect
from cheers.shapes.render import Scene, ShapeObject, render

PROMPTS = (
    "a red circle",
    "a blue square and a yellow triangle",
    "two green circles",
    "a purple square to the left of an orange circle",
)
SCENES = (
    (
        Scene(
            (ShapeObject("circle", "red", 20, 22, 16), ShapeObject("square", "blue", 44, 40, 14))
        ),
        "What color is the circle?",
    ),
    (Scene((ShapeObject("triangle", "green", 32, 32, 18),)), "What shape is the green object?"),
    (
        Scene(
            (
                ShapeObject("square", "yellow", 14, 14, 12),
                ShapeObject("square", "red", 46, 16, 12),
                ShapeObject("circle", "blue", 30, 46, 14),
            )
        ),
        "How many squares are there?",
    ),
    (
        Scene(
            (
                ShapeObject("circle", "orange", 16, 32, 14),
                ShapeObject("triangle", "purple", 48, 32, 16),
            )
        ),
        "Is the circle to the left of the triangle?",
    ),
)
EDIT = (Scene((ShapeObject("circle", "red", 32, 32, 18),)), "make the circle blue")


@dataclass
class DemoResult:
    generations: list[tuple[str, Image.Image, str]] = field(default_factory=list)
    answers: list[tuple[str, Image.Image, str]] = field(default_factory=list)
    edit: tuple[str, Image.Image, Image.Image, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _describe(image: Image.Image, canvas: int) -> str:
    """What the Shapes detector sees in an image, e.g. 'red circle, blue square'."""
    if image.size != (canvas, canvas):
        image = image.resize((canvas, canvas), Image.Resampling.BOX)
    found = detect(np.asarray(image.convert("RGB")))
    return ", ".join(f"{d.color} {d.shape}" for d in found) or "nothing"


def run_demo(
    pipe: CheersPipeline, seed: int = 0, steps: int = 20, guidance: float | None = 3.0
) -> DemoResult:
    """Run the three tasks on the fixed demo inputs."""
    result = DemoResult()
    canvas = pipe.resolution
    start = time.perf_counter()
    images = pipe(
        list(PROMPTS), num_inference_steps=steps, guidance_scale=guidance, generator=seed
    ).images
    result.timings["text → image (4 images)"] = time.perf_counter() - start
    for prompt, image in zip(PROMPTS, images, strict=True):
        result.generations.append((prompt, image, _describe(image, canvas)))

    start = time.perf_counter()
    pictures = [render(Scene(s.objects, canvas=64)).resize((canvas, canvas)) for s, _ in SCENES]
    answers = pipe.understand(pictures, [q for _, q in SCENES], max_new_tokens=8)
    result.timings["image → text (4 questions)"] = time.perf_counter() - start
    for (_, question), picture, answer in zip(SCENES, pictures, answers, strict=True):
        result.answers.append((question, picture, answer))

    start = time.perf_counter()
    source = render(EDIT[0]).resize((canvas, canvas))
    edited = pipe.edit(
        source, EDIT[1], num_inference_steps=steps, guidance_scale=guidance, generator=seed
    ).images[0]
    result.timings["edit (1 image)"] = time.perf_counter() - start
    result.edit = (EDIT[1], source, edited, _describe(edited, canvas))
    return result


def _png(image: Image.Image, scale: int = 3) -> str:
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(
        buffer, format="PNG"
    )
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_html(result: DemoResult, out_dir: Path, model_name: str) -> Path:
    """Write ``index.html`` (and the images as PNG files) into ``out_dir``; returns the page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape

    def card(image: Image.Image, caption: str) -> str:
        img = f'<img src="{_png(image)}" alt="">'
        return f"<figure>{img}<figcaption>{caption}</figcaption></figure>"

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cheers demo</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}figure{display:inline-block;"
        "margin:.5em;text-align:center;vertical-align:top;width:14em}img{image-rendering:pixelated;"
        "border:1px solid #ccc}figcaption{font-size:.9em}td,th{padding:.2em 1em;text-align:left}",
        "</style></head><body>",
        f"<h1>cheers demo</h1><p>Model: <code>{esc(model_name)}</code></p>",
        "<h2>Text → image</h2>",
    ]
    for i, (prompt, image, seen) in enumerate(result.generations):
        image.save(out_dir / f"generate-{i}.png")
        parts.append(card(image, f"<b>{esc(prompt)}</b><br><small>detector: {esc(seen)}</small>"))
    parts.append("<h2>Image → text</h2>")
    for i, (question, image, answer) in enumerate(result.answers):
        image.save(out_dir / f"question-{i}.png")
        parts.append(card(image, f"{esc(question)}<br><b>{esc(answer)}</b>"))
    if result.edit is not None:
        instruction, source, edited, seen = result.edit
        source.save(out_dir / "edit-source.png")
        edited.save(out_dir / "edit-result.png")
        parts.append("<h2>Editing</h2>")
        parts.append(card(source, "source"))
        parts.append(
            card(edited, f"<b>{esc(instruction)}</b><br><small>detector: {esc(seen)}</small>")
        )
    parts.append("<h2>Timings</h2><table>")
    for name, seconds in result.timings.items():
        parts.append(f"<tr><td>{esc(name)}</td><td>{seconds:.2f} s</td></tr>")
    parts.append("</table></body></html>")
    page = out_dir / "index.html"
    tmp = page.with_suffix(".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, page)
    return page
