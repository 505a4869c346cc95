"""Instruction-editing benchmark of the Shapes world.

A fixed, seeded set of edits (:func:`cheers.shapes.benchmark_edits`: ``recolor``, ``remove``
and ``add`` in turn) is applied by the pipeline to the rendered source scenes; each output is
brought to the Shapes canvas, run through the detector and judged by the pair's own judge
(:meth:`cheers.shapes.EditPair.judge`): every object of the target scene must be found with its
shape, colour and place, and nothing else. Success rate is reported per edit kind and overall
(over edits).
"""

from __future__ import annotations

import time
from typing import Any

from cheers.errors import CheersError
from cheers.evaluation.common import (
    EvalSample,
    accuracy_counts,
    batches,
    check_positive,
    check_seed,
    check_steps,
    describe,
    item_seed,
    progress_bar,
    rate,
    seeded_noise,
    to_canvas,
)
from cheers.evaluation.settings import SETTINGS
from cheers.samplers import DEFAULTS
from cheers.shapes import EDIT_KINDS, EditPair, detect, render
from cheers.shapes.dataset import benchmark_edits
from cheers.shapes.render import DEFAULT_CANVAS

TASK = "shapes-edit"
#: Edits: a multiple of 3 keeps the kinds balanced.
DEFAULT_N = 60
DEFAULT_STEPS = SETTINGS["shapes-edit"].steps  # the settings table, written once
DEFAULT_GUIDANCE = SETTINGS["shapes-edit"].guidance
DEFAULT_TIME_SHIFT = SETTINGS["shapes-edit"].time_shift
#: The reference's editing strength: start from 10 % source, 90 % noise.
DEFAULT_STRENGTH = DEFAULTS.edit_strength
DEFAULT_BATCH_SIZE = 8


def evaluate_editing(
    pipe: Any,
    *,
    seed: int = 0,
    n: int = DEFAULT_N,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = DEFAULT_GUIDANCE,
    time_shift: float = DEFAULT_TIME_SHIFT,
    sampler: str | None = None,
    strength: float = DEFAULT_STRENGTH,
    batch_size: int = DEFAULT_BATCH_SIZE,
    canvas: int = DEFAULT_CANVAS,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``pipe``'s instruction edits on the Shapes editing pairs.

    Args:
        pipe: a :class:`~cheers.pipeline.CheersPipeline` (or an object with the same
            ``edit``, ``resolution`` and ``model.config``).
        seed: picks the edits and each edit's noise.
        n: edits; edit ``i`` is of kind ``("recolor", "remove", "add")[i % 3]``.
        num_inference_steps, guidance_scale, time_shift, strength: passed to ``edit``;
            ``int(strength · num_inference_steps)`` must be at least 2.
        batch_size: edits per pipeline call; each edit's noise comes from its own seed, so
            scores do not depend on it (up to float rounding of padded batches).
        canvas: side of the source scenes and of the canvas outputs are judged at.
        progress: show a progress bar on stderr.

    Returns:
        A JSON-ready dict (except ``"samples"``) with ``task``, ``settings``, ``scores`` (per
        kind and ``overall`` = success over all edits), ``counts``, ``items`` (instruction,
        kind, source and target scenes, detections, verdict), ``timings`` and ``samples``
        (edited image with its source).

    Raises:
        CheersError: on a bad setting.
    """
    check_seed(seed)
    check_positive(n, "n")
    check_positive(batch_size, "batch_size")
    check_steps(num_inference_steps, guidance_scale, time_shift)
    if not 0.0 < strength <= 1.0:
        raise CheersError(f"strength must be in (0, 1], got {strength}")
    if int(strength * num_inference_steps + 1e-9) < 2:
        raise CheersError(
            f"strength {strength} with {num_inference_steps} steps leaves fewer than 2 "
            "denoising steps; raise num_inference_steps"
        )

    pairs: list[EditPair] = benchmark_edits(seed, n, canvas)
    jobs = [
        (pair, render(pair.source), item_seed(seed, "editing", i)) for i, pair in enumerate(pairs)
    ]

    items: list[dict[str, Any]] = []
    samples: list[EvalSample] = []
    edit_s = judge_s = 0.0
    start = time.perf_counter()
    bar = progress_bar(len(jobs), "shapes-edit", progress)
    try:
        for chunk in batches(jobs, batch_size):
            t0 = time.perf_counter()
            out = pipe.edit(
                [src for _, src, _ in chunk],
                [pair.instruction for pair, _, _ in chunk],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                time_shift=time_shift,
                sampler=sampler,
                strength=strength,
                latents=seeded_noise(pipe, [s for _, _, s in chunk]),
                output_type="pil",
            )
            images = list(out.images)
            t1 = time.perf_counter()
            edit_s += t1 - t0
            if len(images) != len(chunk):
                raise CheersError(
                    f"the pipeline returned {len(images)} images for {len(chunk)} edits"
                )
            for (pair, source, noise_seed), image in zip(chunk, images, strict=True):
                judged = to_canvas(image, canvas)
                detections = detect(judged)
                ok = pair.judge(detections)
                samples.append(
                    EvalSample(judged, pair.instruction, ok, pair.kind, len(items), source=source)
                )
                items.append(
                    {
                        "instruction": pair.instruction,
                        "kind": pair.kind,
                        "seed": noise_seed,
                        "correct": ok,
                        "source": pair.source.to_dict(),
                        "target": pair.target.to_dict(),
                        "detections": describe(detections),
                    }
                )
            judge_s += time.perf_counter() - t1
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    total_s = time.perf_counter() - start

    counts = accuracy_counts((it["kind"], it["correct"]) for it in items)
    ordered = {k: counts[k] for k in EDIT_KINDS if k in counts}
    scores = {k: rate(c["correct"], c["total"]) for k, c in ordered.items()}
    scores["overall"] = rate(sum(it["correct"] for it in items), len(items))
    resolution = int(pipe.resolution)
    return {
        "task": TASK,
        "settings": {
            "seed": seed,
            "n": n,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "time_shift": time_shift,
            "sampler": sampler or DEFAULTS.sampler,
            "strength": strength,
            "batch_size": batch_size,
            "canvas": canvas,
            "resolution": resolution,
        },
        "scores": scores,
        "counts": ordered,
        "heldout": None,
        "items": items,
        "timings": {
            "total_s": total_s,
            "edit_s": edit_s,
            "judge_s": judge_s,
            "edits": len(items),
            "s_per_edit": total_s / len(items) if items else 0.0,
        },
        "samples": samples,
    }
