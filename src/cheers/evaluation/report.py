"""Reports of the Shapes benchmarks: a JSON file, a PNG grid of judged samples, a text table.

The JSON report is the benchmark's result dict without its PIL ``samples`` (the per-item
``items`` records carry the same verdicts as text). Files are written atomically (a temporary
file in the same folder, then :func:`os.replace`), so a reader never sees half a report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from cheers._files import atomic_write
from cheers.errors import CheersError
from cheers.evaluation.common import EvalSample

REPORT_NAME = "report.json"
GRID_NAME = "grid.png"

CORRECT_RGB = (30, 160, 60)
WRONG_RGB = (210, 40, 40)
_BACKGROUND = (235, 235, 235)
_TILE = (255, 255, 255)
_TEXT = (20, 20, 20)
_SEAM = (150, 150, 150)


# ------------------------------------------------------------------------------------- JSON
def to_jsonable(result: Mapping[str, Any]) -> dict[str, Any]:
    """``result`` as plain JSON data: ``samples`` dropped, tuples as lists.

    This is exactly what :func:`read_report` gives back after :func:`write_json`.

    Raises:
        CheersError: when a value is not JSON-serialisable (or is NaN/infinite).
    """
    stripped = {k: v for k, v in result.items() if k != "samples"}
    try:
        return json.loads(json.dumps(stripped, allow_nan=False))
    except (TypeError, ValueError) as err:
        raise CheersError(f"the result cannot be written as JSON: {err}") from err


def write_json(result: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``result`` (see :func:`to_jsonable`) as indented UTF-8 JSON, atomically."""
    text = json.dumps(to_jsonable(result), indent=2, ensure_ascii=False) + "\n"
    return atomic_write(Path(path), lambda f: f.write(text.encode("utf-8")))


def read_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a report written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------- grid
def select_samples(samples: Sequence[EvalSample], max_cells: int) -> list[EvalSample]:
    """At most ``max_cells`` samples, whole units (all images of a prompt), spread over groups.

    Units are taken round-robin over the groups (categories, question kinds, edit kinds, in
    first-seen order) so that a small grid still shows every group; the chosen units keep
    their original order.
    """
    units: dict[int, list[EvalSample]] = {}
    for s in samples:
        units.setdefault(s.unit, []).append(s)
    by_group: dict[str, list[int]] = {}
    for unit, members in units.items():
        by_group.setdefault(members[0].group, []).append(unit)
    queues = [list(q) for q in by_group.values()]
    chosen: list[int] = []
    used = 0
    while any(queues):
        progressed = False
        for q in queues:
            if q and used + len(units[q[0]]) <= max_cells:
                unit = q.pop(0)
                chosen.append(unit)
                used += len(units[unit])
                progressed = True
            elif q:
                q.clear()  # this group's next unit no longer fits
        if not progressed:
            break
    if not chosen:
        # Not even one whole unit fits: show its first images rather than nothing.
        return list(samples[: max(0, max_cells)])
    return [s for unit in sorted(chosen) for s in units[unit]]


def _ascii(text: str) -> str:
    # PIL's default font may lack glyphs for the gibberish an untrained model writes.
    flat = " ".join(text.split())
    return flat.encode("ascii", "replace").decode("ascii")


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; the last kept line ends in ``...`` if cut."""
    if max_lines <= 0:
        return []
    lines: list[str] = []
    current = ""
    for word in _ascii(text).split(" "):
        candidate = f"{current} {word}" if current else word
        if draw.textlength(candidate, font=font) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    lines = [_fit(draw, line, font, width) for line in lines]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = _fit(draw, lines[-1] + "...", font, width)
    return lines


def _fit(draw: ImageDraw.ImageDraw, line: str, font: Any, width: int) -> str:
    """``line`` cut to ``width`` pixels, ending in ``...`` when something was cut."""
    if draw.textlength(line, font=font) <= width:
        return line
    while line and draw.textlength(line + "...", font=font) > width:
        line = line[:-1]
    return line + "..."


def make_grid(
    samples: Sequence[EvalSample],
    *,
    columns: int = 8,
    cell: int = 128,
    border: int = 3,
    gap: int = 6,
    text_lines: int = 4,
    line_height: int = 12,
) -> Image.Image:
    """A picture of judged samples: each tile an image framed green (correct) or red (wrong).

    Each sample's image is scaled (nearest neighbour, so shapes stay crisp) to ``cell`` pixels;
    when any sample carries a ``source`` (editing) the tile shows source then result side by
    side, ``2 · cell`` wide. Below the framed image, ``text_lines`` lines of ``line_height``
    pixels hold the prompt/question/instruction and, for answers, ``-> answer (gold X)``.

    The grid is exactly ``c · (k·cell + 2·border) + (c + 1) · gap`` wide and
    ``r · (cell + 2·border + text_lines·line_height) + (r + 1) · gap`` high, with
    ``c = min(columns, len(samples))``, ``r = ceil(len(samples) / c)`` and ``k`` 2 with sources
    else 1.

    Raises:
        CheersError: on no samples or a non-positive size.
    """
    if not samples:
        raise CheersError("no samples to draw")
    for value, name in ((columns, "columns"), (cell, "cell"), (line_height, "line_height")):
        if value < 1:
            raise CheersError(f"{name} must be positive, got {value}")
    if border < 0 or gap < 0 or text_lines < 0:
        raise CheersError("border, gap and text_lines must not be negative")
    k = 2 if any(s.source is not None for s in samples) else 1
    cols = min(columns, len(samples))
    rows = math.ceil(len(samples) / cols)
    tile_w = k * cell + 2 * border
    tile_h = cell + 2 * border + text_lines * line_height
    grid = Image.new(
        "RGB", (cols * tile_w + (cols + 1) * gap, rows * tile_h + (rows + 1) * gap), _BACKGROUND
    )
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for i, s in enumerate(samples):
        x = gap + (i % cols) * (tile_w + gap)
        y = gap + (i // cols) * (tile_h + gap)
        draw.rectangle([x, y, x + tile_w - 1, y + tile_h - 1], fill=_TILE)
        frame = CORRECT_RGB if s.correct else WRONG_RGB
        draw.rectangle([x, y, x + tile_w - 1, y + cell + 2 * border - 1], fill=frame)
        shown = [s.source, s.image] if k == 2 else [s.image]
        for j, im in enumerate(shown):
            if im is None:  # a sample without a source in a grid that has some
                continue
            scaled = im.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST)
            grid.paste(scaled, (x + border + j * cell, y + border))
        if k == 2:
            # A seam between source and result; it covers the result's blank left margin.
            seam = x + border + cell
            draw.line([seam, y + border, seam, y + border + cell - 1], fill=_SEAM)
        lines = _caption_lines(draw, s, font, tile_w - 4, text_lines)
        for n, line in enumerate(lines):
            draw.text((x + 2, y + cell + 2 * border + n * line_height), line, fill=_TEXT, font=font)
    return grid


def _caption_lines(
    draw: ImageDraw.ImageDraw, s: EvalSample, font: Any, width: int, text_lines: int
) -> list[str]:
    if s.answer is None:
        return _wrap(draw, s.caption, font, width, text_lines)
    # The answer line is always shown: it is what the tile is judging.
    answer = f"-> {s.answer or '(empty)'} (gold {s.gold})"
    head = _wrap(draw, s.caption, font, width, text_lines - 1)
    return [*head, *_wrap(draw, answer, font, width, 1)][:text_lines]


def _png_writer(image: Image.Image) -> Callable[[Any], None]:
    return lambda f: image.save(f, format="PNG")


def save_grid(
    samples: Sequence[EvalSample],
    path: str | os.PathLike[str],
    *,
    max_cells: int = 64,
    **grid_kwargs: Any,
) -> Path:
    """Draw up to ``max_cells`` samples (see :func:`select_samples`, :func:`make_grid`) to a PNG."""
    image = make_grid(select_samples(samples, max_cells), **grid_kwargs)
    return atomic_write(Path(path), _png_writer(image))


def grid_columns(result: Mapping[str, Any]) -> int:
    """Columns that suit ``result``: one row per prompt for generation, else 8."""
    per_prompt = result.get("settings", {}).get("images_per_prompt")
    return per_prompt if isinstance(per_prompt, int) and per_prompt >= 2 else 8


def write_report(
    result: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    max_cells: int = 64,
    report_name: str = REPORT_NAME,
    grid_name: str = GRID_NAME,
) -> tuple[Path, Path | None]:
    """Write ``report.json`` and (when there are samples) ``grid.png`` into ``out_dir``.

    Returns the two paths (the grid's is ``None`` when the result has no samples).
    """
    out = Path(out_dir)
    report = write_json(result, out / report_name)
    samples = result.get("samples") or []
    if not samples:
        return report, None
    grid = save_grid(samples, out / grid_name, max_cells=max_cells, columns=grid_columns(result))
    return report, grid


# ------------------------------------------------------------------------------------ table
def _rows(section: Mapping[str, Any]) -> list[str]:
    scores: Mapping[str, float] = section.get("scores") or {}
    counts: Mapping[str, Mapping[str, int]] = section.get("counts") or {}
    out = []
    for name, value in scores.items():
        if name == "overall":
            continue
        c = counts.get(name)
        frac = f"{c['correct']}/{c['total']}" if c else ""
        out.append(f"  {name:<18}{value:>8.3f}  {frac:>9}")
    if "overall" in scores:
        out.append(f"  {'overall':<18}{scores['overall']:>8.3f}")
    return out


def format_table(result: Mapping[str, Any]) -> str:
    """A plain-text table of a benchmark result: scores per group, overall, held-out, time."""
    settings = result.get("settings", {})
    lines = [f"{result.get('task', 'result')} (seed {settings.get('seed', '?')})"]
    lines.append(f"  {'':<18}{'accuracy':>8}  {'correct':>9}")
    lines += _rows(result)
    for extra in ("by_type", "by_form"):
        if result.get(extra):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in result[extra].items())
            lines.append(f"  {extra.replace('_', ' ')}: {parts}")
    held = result.get("heldout")
    if held:
        lines.append("held-out compositions")
        lines += _rows(held)
        if held.get("by_pair"):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in held["by_pair"].items())
            lines.append(f"  by pair: {parts}")
    timings = result.get("timings") or {}
    if "total_s" in timings:
        per = [
            f"{v:.2f} {k.replace('s_per_', 's/')}"
            for k, v in timings.items()
            if k.startswith("s_per")
        ]
        lines.append(f"time: {timings['total_s']:.1f} s" + (f" ({per[0]})" if per else ""))
    return "\n".join(lines)
