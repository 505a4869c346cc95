"""GenEval-style text-to-image benchmark of the Shapes world.

A fixed, seeded set of prompts (:func:`cheers.shapes.benchmark_prompts`, the same number of each
of the six categories) is generated ``images_per_prompt`` times each; every image is brought to
the Shapes canvas and judged by the deterministic detector (:func:`cheers.shapes.detect` +
:func:`cheers.shapes.judge`). As in GenEval, a category's score is the fraction of its images
judged correct and ``overall`` is the mean of the six category scores. Prompts that name a
held-out composition (:func:`cheers.shapes.heldout_prompts`) are scored separately.
"""

from __future__ import annotations

import time
from typing import Any

import torch

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
from cheers.samplers import DEFAULTS, StepCache
from cheers.shapes import CATEGORIES, PromptSpec, detect, judge, score_generation
from cheers.shapes.dataset import benchmark_prompts, heldout_prompts
from cheers.shapes.render import DEFAULT_CANVAS

TASK = "shapes-gen"
#: Prompts per category: 60 prompts × 4 images, a CPU-sized GenEval (which has ~550 prompts).
DEFAULT_N_PER_CATEGORY = 10
DEFAULT_IMAGES_PER_PROMPT = SETTINGS["shapes-gen"].images_per_prompt
#: Fewer steps than the authors' 80 keep a CPU run short; the tiny Shapes models converge fast.
DEFAULT_STEPS = SETTINGS["shapes-gen"].steps  # the settings table, written once
DEFAULT_GUIDANCE = SETTINGS["shapes-gen"].guidance
DEFAULT_TIME_SHIFT = SETTINGS["shapes-gen"].time_shift
#: Images per pipeline call (rounded down to whole prompts, at least one prompt).
DEFAULT_BATCH_SIZE = 8


def evaluate_generation(
    pipe: Any,
    *,
    seed: int = 0,
    n_per_category: int = DEFAULT_N_PER_CATEGORY,
    images_per_prompt: int = DEFAULT_IMAGES_PER_PROMPT,
    num_inference_steps: int = DEFAULT_STEPS,
    guidance_scale: float | None = DEFAULT_GUIDANCE,
    time_shift: float = DEFAULT_TIME_SHIFT,
    sampler: str | None = None,
    step_cache: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    heldout: bool = True,
    n_heldout: int | None = None,
    canvas: int = DEFAULT_CANVAS,
    dummy_image: bool | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``pipe``'s text-to-image on the Shapes prompts, GenEval style.

    Args:
        pipe: a :class:`~cheers.pipeline.CheersPipeline` (or an object with the same
            ``text_to_image``, ``resolution`` and ``model.config``).
        seed: picks the prompt set and every image's noise; the same seed gives the same
            prompts and (on the same machine) the same images.
        n_per_category: prompts of each of the six categories.
        images_per_prompt: images generated for every prompt, each judged on its own.
        num_inference_steps, guidance_scale, time_shift, sampler: passed to ``text_to_image``
            (``guidance_scale=None`` turns guidance off).
        step_cache: evaluate the model every K-th step only, extrapolating the velocity in
            between (:class:`~cheers.samplers.StepCache`; 0: every step).
        batch_size: images per pipeline call, rounded down to whole prompts. Each prompt's noise
            comes from its own seed, so the scores do not depend on it (up to float rounding of
            padded batches).
        heldout: also score the prompts naming held-out compositions (``purple triangle``,
            ``orange square``), reported apart under ``"heldout"``.
        n_heldout: held-out prompts per category (``colors``, ``color_attr``); default
            ``n_per_category``.
        canvas: side of the canvas the images are judged at: the Shapes world the model was
            trained on. Outputs of another size are resized to it (area averaging down,
            nearest neighbour up; see :func:`~cheers.evaluation.common.to_canvas`).
        dummy_image: put a noise image in front of every prompt (the released model's
            behaviour, docs/architecture.md §10); ``None`` follows the model config's
            ``dummy_image_prefix`` as the pipeline does. One fixed noise image drawn
            from ``seed`` serves every prompt, so a prompt's result does not depend on its
            batch-mates. ``False`` drops it (how text-to-image samples are laid out in
            training).
        progress: show a progress bar on stderr.

    Returns:
        A JSON-ready dict (except ``"samples"``, which holds PIL images for the grid) with
        ``task``, ``settings``, ``scores`` (per category and ``overall``), ``counts``
        (``{"correct", "total"}`` images per category), ``heldout`` (same layout plus
        ``by_pair``, or ``None``), ``items`` (one record per prompt: its text, category, seed,
        verdict and detections per image), ``timings`` and ``samples``
        (:class:`~cheers.evaluation.common.EvalSample` per image).

    Raises:
        CheersError: on a bad setting (non-positive count, fewer than 2 steps, negative seed).
    """
    check_seed(seed)
    check_positive(n_per_category, "n_per_category")
    check_positive(images_per_prompt, "images_per_prompt")
    check_positive(batch_size, "batch_size")
    check_steps(num_inference_steps, guidance_scale, time_shift)
    n_heldout = n_per_category if n_heldout is None else n_heldout
    if heldout:
        check_positive(n_heldout, "n_heldout")

    # (spec, is_heldout, noise seed): held-out prompts draw noise from their own stream.
    jobs: list[tuple[PromptSpec, bool, int]] = [
        (spec, False, item_seed(seed, "generation", i))
        for i, spec in enumerate(benchmark_prompts(seed, n_per_category))
    ]
    if heldout:
        jobs += [
            (spec, True, item_seed(seed, "heldout_generation", i))
            for i, spec in enumerate(heldout_prompts(seed, n_heldout))
        ]

    # One fixed noise image stands in front of every prompt (the reference draws a fresh one
    # per call): a per-call one would tie a prompt's image to its batch-mates.
    if dummy_image is None:
        model = getattr(pipe, "model", None)
        dummy_image = bool(getattr(getattr(model, "config", None), "dummy_image_prefix", False))
    dummy: Any = False
    if dummy_image:
        from cheers.image import make_dummy_image

        dummy = make_dummy_image(torch.Generator("cpu").manual_seed(item_seed(seed, "dummy", 0)))

    prompts_per_call = max(1, batch_size // images_per_prompt)
    items: list[dict[str, Any]] = []
    samples: list[EvalSample] = []
    generate_s = judge_s = 0.0
    start = time.perf_counter()
    bar = progress_bar(len(jobs), "shapes-gen", progress)
    try:
        for chunk in batches(jobs, prompts_per_call):
            t0 = time.perf_counter()
            out = pipe.text_to_image(
                [spec.text for spec, _, _ in chunk],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                time_shift=time_shift,
                sampler=sampler,
                step_cache=StepCache(interval=step_cache) if step_cache else None,
                num_images_per_prompt=images_per_prompt,
                latents=seeded_noise(pipe, [s for _, _, s in chunk], images_per_prompt),
                dummy_image=dummy,
                output_type="pil",
            )
            images = list(out.images)
            t1 = time.perf_counter()
            generate_s += t1 - t0
            if len(images) != len(chunk) * images_per_prompt:
                raise CheersError(
                    f"the pipeline returned {len(images)} images for {len(chunk)} prompts × "
                    f"{images_per_prompt}; expected one per prompt and noise"
                )
            for j, (spec, is_heldout, noise_seed) in enumerate(chunk):
                unit = len(items)
                group = f"heldout/{spec.category}" if is_heldout else spec.category
                verdicts, found = [], []
                for image in images[j * images_per_prompt : (j + 1) * images_per_prompt]:
                    judged = to_canvas(image, canvas)
                    detections = detect(judged)
                    ok = judge(spec, detections)
                    verdicts.append(ok)
                    found.append(describe(detections))
                    samples.append(EvalSample(judged, spec.text, ok, group, unit))
                items.append(
                    {
                        "text": spec.text,
                        "category": spec.category,
                        "heldout": is_heldout,
                        "spec": spec.to_dict(),
                        "seed": noise_seed,
                        "correct": verdicts,
                        "detections": found,
                    }
                )
            judge_s += time.perf_counter() - t1
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    total_s = time.perf_counter() - start

    main_items = [it for it in items if not it["heldout"]]
    held_items = [it for it in items if it["heldout"]]
    n_images = len(items) * images_per_prompt
    return {
        "task": TASK,
        "settings": {
            "seed": seed,
            "n_per_category": n_per_category,
            "n_heldout": n_heldout if heldout else 0,
            "images_per_prompt": images_per_prompt,
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "time_shift": time_shift,
            "sampler": sampler or DEFAULTS.sampler,
            "step_cache": step_cache,
            "batch_size": batch_size,
            "canvas": canvas,
            "dummy_image": dummy_image,
            "resolution": int(pipe.resolution),
            "resize": _resize_note(int(pipe.resolution), canvas),
        },
        **_score(main_items),
        "heldout": _heldout_scores(held_items) if heldout else None,
        "items": items,
        "timings": {
            "total_s": total_s,
            "generate_s": generate_s,
            "judge_s": judge_s,
            "images": n_images,
            "s_per_image": total_s / n_images if n_images else 0.0,
        },
        "samples": samples,
    }


def _per_image(items: list[dict[str, Any]]) -> list[tuple[PromptSpec, bool]]:
    return [(PromptSpec.from_dict(it["spec"]), ok) for it in items for ok in it["correct"]]


def _score(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``scores`` (GenEval: per category, overall = their mean) and ``counts`` of ``items``."""
    counts = accuracy_counts((it["category"], ok) for it in items for ok in it["correct"])
    ordered = {c: counts[c] for c in CATEGORIES if c in counts}
    return {"scores": score_generation(_per_image(items)), "counts": ordered}


def _heldout_scores(items: list[dict[str, Any]]) -> dict[str, Any]:
    out = _score(items)
    # Which held-out composition a prompt names: its first object, by heldout_prompts' design.
    pairs = accuracy_counts(
        (f"{it['spec']['color']} {it['spec']['shape']}", ok) for it in items for ok in it["correct"]
    )
    out["by_pair"] = {k: rate(v["correct"], v["total"]) for k, v in sorted(pairs.items())}
    return out


def _resize_note(resolution: int, canvas: int) -> str:
    if resolution == canvas:
        return "none"
    return "box (area) downsampling" if resolution > canvas else "nearest upsampling"
