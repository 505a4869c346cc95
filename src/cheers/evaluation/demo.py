"""``cheers demo``: every ability of a model on the Shapes world, as one HTML page.

Generates images for a few prompts, answers questions about a few rendered scenes and performs
one edit, timing each, then writes a self-contained ``index.html`` (images inlined) and the
PNGs next to it. Every result is judged as the benchmarks judge it — drawings and the edit by
the Shapes detector, answers against the true answer — and marked right or wrong, with a
score line, so that the page says plainly what the model gets right.
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

from cheers.evaluation.common import to_canvas
from cheers.loading import SHAPES_ONLY
from cheers.pipeline import CheersPipeline
from cheers.shapes.captions import PromptSpec, judge, make_prompt
from cheers.shapes.detector import Detection, detect
from cheers.shapes.edits import matches_scene
from cheers.shapes.questions import score_answer
from cheers.shapes.render import Scene, ShapeObject, render

PROMPTS: tuple[PromptSpec, ...] = (
    make_prompt("colors", "circle", color="red"),
    make_prompt("color_attr", "square", color="blue", shape2="triangle", color2="yellow"),
    make_prompt("counting", "circle", count=2),
    make_prompt("position", "square", shape2="circle", relation="left of"),
)
SCENES = (
    (
        Scene(
            (ShapeObject("circle", "red", 20, 22, 16), ShapeObject("square", "blue", 44, 40, 14))
        ),
        "What color is the circle?",
        "red",
    ),
    (
        Scene((ShapeObject("triangle", "green", 32, 32, 18),)),
        "What shape is the green object?",
        "triangle",
    ),
    (
        Scene(
            (
                ShapeObject("square", "yellow", 14, 14, 12),
                ShapeObject("square", "red", 46, 16, 12),
                ShapeObject("circle", "blue", 30, 46, 14),
            )
        ),
        "How many squares are there?",
        "two",
    ),
    (
        Scene(
            (
                ShapeObject("circle", "orange", 16, 32, 14),
                ShapeObject("triangle", "purple", 48, 32, 16),
            )
        ),
        "Is the circle to the left of the triangle?",
        "yes",
    ),
)
EDIT = (
    Scene((ShapeObject("circle", "red", 32, 32, 18),)),
    "make the circle blue",
    Scene((ShapeObject("circle", "blue", 32, 32, 18),)),
)


@dataclass
class Judged:
    """One demo result: what was asked, the images, what came out, and whether it is right."""

    task: str
    asked: str
    image: Image.Image
    output: str
    right: bool
    source: Image.Image | None = None  # the edit's input


@dataclass
class DemoResult:
    results: list[Judged] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def score(self) -> tuple[int, int]:
        """(right, total) over every result."""
        return sum(r.right for r in self.results), len(self.results)

    def of(self, task: str) -> list[Judged]:
        return [r for r in self.results if r.task == task]


def _detect(image: Image.Image, canvas: int) -> list[Detection]:
    """What the Shapes detector finds in an image, brought to the canvas as the benchmarks do."""
    return detect(np.asarray(to_canvas(image, canvas)))


def _seen(found: list[Detection]) -> str:
    return ", ".join(f"{d.color} {d.shape}" for d in found) or "nothing"


def run_demo(
    pipe: CheersPipeline, seed: int = 0, steps: int = 20, guidance: float | None = 3.0
) -> DemoResult:
    """Run the three tasks on the fixed demo inputs and judge each result."""
    result = DemoResult()
    canvas = 64  # the Shapes canvas the detector judges at
    start = time.perf_counter()
    images = pipe(
        [p.text for p in PROMPTS],
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=seed,
    ).images
    result.timings["text → image (4 images)"] = time.perf_counter() - start
    for spec, image in zip(PROMPTS, images, strict=True):
        found = _detect(image, canvas)
        result.results.append(
            Judged("generate", spec.text, image, _seen(found), judge(spec, found))
        )

    start = time.perf_counter()
    size = pipe.resolution
    pictures = [render(Scene(s.objects, canvas=canvas)).resize((size, size)) for s, _, _ in SCENES]
    answers = pipe.understand(pictures, [q for _, q, _ in SCENES], max_new_tokens=8)
    result.timings["image → text (4 questions)"] = time.perf_counter() - start
    for (_, question, truth), picture, answer in zip(SCENES, pictures, answers, strict=True):
        right = score_answer(answer, truth)
        result.results.append(Judged("answer", question, picture, answer, right))

    start = time.perf_counter()
    scene, instruction, target = EDIT
    source = render(scene).resize((size, size))
    edited = pipe.edit(
        source, instruction, num_inference_steps=steps, guidance_scale=guidance, generator=seed
    ).images[0]
    result.timings["edit (1 image)"] = time.perf_counter() - start
    found = _detect(edited, canvas)
    result.results.append(
        Judged("edit", instruction, edited, _seen(found), matches_scene(found, target), source)
    )
    return result


def _png(image: Image.Image, scale: int = 3) -> str:
    buffer = io.BytesIO()
    image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST).save(
        buffer, format="PNG"
    )
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_html(
    result: DemoResult, out_dir: Path, model_name: str, shapes_only: bool = False
) -> Path:
    """Write ``index.html`` (and the images as PNG files) into ``out_dir``; returns the page.

    ``shapes_only`` adds the note that the model knows only the Shapes world (the embedded one).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    esc = html.escape

    def card(image: Image.Image, caption: str, right: bool | None = None) -> str:
        img = f'<img src="{_png(image)}" alt="">'
        mark = ""
        if right is not None:
            mark = (
                "<br><span class='ok'>✓ right</span>"
                if right
                else ("<br><span class='bad'>✗ wrong</span>")
            )
        return f"<figure>{img}<figcaption>{caption}{mark}</figcaption></figure>"

    right, total = result.score
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cheers demo</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}figure{display:inline-block;"
        "margin:.5em;text-align:center;vertical-align:top;width:14em}img{image-rendering:pixelated;"
        "border:1px solid #ccc}figcaption{font-size:.9em}td,th{padding:.2em 1em;text-align:left}"
        ".ok{color:#070}.bad{color:#b00}.score{font-size:1.2em}",
        "</style></head><body>",
        f"<h1>cheers demo</h1><p>Model: <code>{esc(model_name)}</code></p>",
        f"<p class='score' id='score'><b>{right} of {total} right</b> (drawings and the edit "
        "judged by the Shapes detector, answers against the true answer)</p>",
    ]
    if shapes_only:
        parts.append(f"<p><i>{esc(SHAPES_ONLY)}</i></p>")
    parts.append("<h2>Text → image</h2>")
    for i, r in enumerate(result.of("generate")):
        r.image.save(out_dir / f"generate-{i}.png")
        caption = f"<b>{esc(r.asked)}</b><br><small>detector: {esc(r.output)}</small>"
        parts.append(card(r.image, caption, r.right))
    parts.append("<h2>Image → text</h2>")
    for i, r in enumerate(result.of("answer")):
        r.image.save(out_dir / f"question-{i}.png")
        parts.append(card(r.image, f"{esc(r.asked)}<br><b>{esc(r.output)}</b>", r.right))
    for r in result.of("edit"):
        r.source.save(out_dir / "edit-source.png")
        r.image.save(out_dir / "edit-result.png")
        parts.append("<h2>Editing</h2>")
        parts.append(card(r.source, "source"))
        caption = f"<b>{esc(r.asked)}</b><br><small>detector: {esc(r.output)}</small>"
        parts.append(card(r.image, caption, r.right))
    parts.append("<h2>Timings</h2><table>")
    for name, seconds in result.timings.items():
        parts.append(f"<tr><td>{esc(name)}</td><td>{seconds:.2f} s</td></tr>")
    parts.append("</table></body></html>")
    page = out_dir / "index.html"
    tmp = page.with_suffix(".tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, page)
    return page
