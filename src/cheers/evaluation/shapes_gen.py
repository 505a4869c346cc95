"""GenEval-style text-to-image benchmark of the Shapes world.

A fixed, seeded set of prompts (:func:`cheers.shapes.benchmark_prompts`, the same number of each
of the six categories) is generated ``images_per_prompt`` times each; every image is brought to
the Shapes canvas and judged by the deterministic detector (:func:`cheers.shapes.detect` +
:func:`cheers.shapes.judge`). As in GenEval, a category's score is the fraction of its images
judged correct and ``overall`` is the mean of the six category scores. Prompts that name a
held-out composition (:func:`cheers.shapes.heldout_prompts`) are scored separately.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import flags
from cheers.evaluation.benchmark import Judged, Timings, run_benchmark
from cheers.evaluation.command import EvalCommand, finish_report, report_target
from cheers.evaluation.common import (
    EvalSample,
    accuracy_counts,
    check_seed,
    check_steps,
    describe,
    item_seed,
    rate,
    seeded_noise,
    to_canvas,
)
from cheers.evaluation.protocol import TextToImagePipeline
from cheers.evaluation.settings import SETTINGS
from cheers.pipeline.arguments import check_positive
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


class Prompt(NamedTuple):
    """One item: the prompt, whether it names a held-out composition, its noise seed."""

    spec: PromptSpec
    heldout: bool
    seed: int


@dataclass
class ShapesGen:
    """The benchmark; arguments as in :func:`evaluate_generation`, checked on creation."""

    seed: int = 0
    n_per_category: int = DEFAULT_N_PER_CATEGORY
    images_per_prompt: int = DEFAULT_IMAGES_PER_PROMPT
    num_inference_steps: int = DEFAULT_STEPS
    guidance_scale: float | None = DEFAULT_GUIDANCE
    time_shift: float = DEFAULT_TIME_SHIFT
    sampler: str | None = None
    step_cache: int = 0
    images_per_call: int = DEFAULT_BATCH_SIZE
    heldout: bool = True
    n_heldout: int | None = None
    canvas: int = DEFAULT_CANVAS
    dummy_image: bool | None = None
    name: ClassVar[str] = TASK
    _dummy: dict[bool, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_positive(self.n_per_category, "n_per_category")
        check_positive(self.images_per_prompt, "images_per_prompt")
        check_positive(self.images_per_call, "batch_size")
        check_steps(self.num_inference_steps, self.guidance_scale, self.time_shift)
        if self.n_heldout is None:
            self.n_heldout = self.n_per_category
        if self.heldout:
            check_positive(self.n_heldout, "n_heldout")

    @property
    def batch_size(self) -> int:
        """Prompts per call: ``images_per_call`` rounded down to whole prompts (at least 1)."""
        return max(1, self.images_per_call // self.images_per_prompt)

    def done(self, item: object) -> bool:  # noqa: ARG002 - the Benchmark interface
        return False  # the report is written whole, at the end: every item runs

    def items(self) -> list[Prompt]:
        # Held-out prompts draw noise from their own stream.
        jobs = [
            Prompt(spec, False, item_seed(self.seed, "generation", i))
            for i, spec in enumerate(benchmark_prompts(self.seed, self.n_per_category))
        ]
        if self.heldout:
            assert self.n_heldout is not None
            jobs += [
                Prompt(spec, True, item_seed(self.seed, "heldout_generation", i))
                for i, spec in enumerate(heldout_prompts(self.seed, self.n_heldout))
            ]
        return jobs

    def uses_dummy(self, pipe: Any) -> bool:
        """Whether a noise image stands in front of the prompts (``None``: the model config)."""
        if self.dummy_image is not None:
            return self.dummy_image
        model = getattr(pipe, "model", None)
        return bool(getattr(getattr(model, "config", None), "dummy_image_prefix", False))

    def _dummy_for(self, pipe: Any) -> Any:
        # One fixed noise image stands in front of every prompt (the reference draws a fresh
        # one per call): a per-call one would tie a prompt's image to its batch-mates.
        use = self.uses_dummy(pipe)
        if use not in self._dummy:
            from cheers.image import make_dummy_image

            gen = torch.Generator("cpu").manual_seed(item_seed(self.seed, "dummy", 0))
            self._dummy[use] = make_dummy_image(gen) if use else False
        return self._dummy[use]

    def run(self, pipe: TextToImagePipeline, batch: Sequence[Prompt]) -> list[list[Image.Image]]:
        n = self.images_per_prompt
        out = pipe.text_to_image(
            [job.spec.text for job in batch],
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            time_shift=self.time_shift,
            sampler=self.sampler,
            step_cache=StepCache(interval=self.step_cache) if self.step_cache else None,
            num_images_per_prompt=n,
            latents=seeded_noise(pipe, [job.seed for job in batch], n),
            dummy_image=self._dummy_for(pipe),
            output_type="pil",
        )
        images = list(out.images)
        if len(images) != len(batch) * n:
            raise CheersError(
                f"the pipeline returned {len(images)} images for {len(batch)} prompts × "
                f"{n}; expected one per prompt and noise"
            )
        return [images[j * n : (j + 1) * n] for j in range(len(batch))]

    def judge(self, item: Prompt, output: list[Image.Image], unit: int) -> Judged:
        spec = item.spec
        group = f"heldout/{spec.category}" if item.heldout else spec.category
        verdicts, found, samples = [], [], []
        for image in output:
            judged = to_canvas(image, self.canvas)
            detections = detect(judged)
            ok = judge(spec, detections)
            verdicts.append(ok)
            found.append(describe(detections))
            samples.append(EvalSample(judged, spec.text, ok, group, unit))
        record = {
            "text": spec.text,
            "category": spec.category,
            "heldout": item.heldout,
            "spec": spec.to_dict(),
            "seed": item.seed,
            "correct": verdicts,
            "detections": found,
        }
        return Judged(record, samples)

    def settings(self, pipe: TextToImagePipeline) -> dict[str, Any]:
        resolution = int(pipe.resolution)
        return {
            "seed": self.seed,
            "n_per_category": self.n_per_category,
            "n_heldout": self.n_heldout if self.heldout else 0,
            "images_per_prompt": self.images_per_prompt,
            "num_inference_steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "time_shift": self.time_shift,
            "sampler": self.sampler or DEFAULTS.sampler,
            "step_cache": self.step_cache,
            "batch_size": self.images_per_call,
            "canvas": self.canvas,
            "dummy_image": self.uses_dummy(pipe),
            "resolution": resolution,
            "resize": _resize_note(resolution, self.canvas),
        }

    def aggregate(
        self,
        items: Sequence[Prompt],  # noqa: ARG002 - the Benchmark interface
        records: list[dict[str, Any]],
        timings: Timings,
    ) -> dict[str, Any]:
        main_items = [it for it in records if not it["heldout"]]
        held_items = [it for it in records if it["heldout"]]
        n_images = len(records) * self.images_per_prompt
        return {
            **_score(main_items),
            "heldout": _heldout_scores(held_items) if self.heldout else None,
            "items": records,
            "timings": {
                "total_s": timings.total_s,
                "generate_s": timings.run_s,
                "judge_s": timings.judge_s,
                "images": n_images,
                "s_per_image": timings.total_s / n_images if n_images else 0.0,
            },
        }


def evaluate_generation(
    pipe: TextToImagePipeline,
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
        pipe: a :class:`~cheers.pipeline.CheersPipeline` (or any
            :class:`~cheers.evaluation.protocol.TextToImagePipeline`).
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
    bench = ShapesGen(
        seed=seed,
        n_per_category=n_per_category,
        images_per_prompt=images_per_prompt,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        time_shift=time_shift,
        sampler=sampler,
        step_cache=step_cache,
        images_per_call=batch_size,
        heldout=heldout,
        n_heldout=n_heldout,
        canvas=canvas,
        dummy_image=dummy_image,
    )
    return run_benchmark(bench, pipe, progress=progress)


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


# ------------------------------------------------------------------------------- command
def _add_flags(p: argparse.ArgumentParser) -> None:
    flags.add_report_flags(p, DEFAULT_N_PER_CATEGORY, "prompts per category (six categories)")
    flags.add_heldout_flags(p, "prompts per category (colors, color_attr)")
    p.add_argument(
        "--no-dummy-image",
        action="store_true",
        help=(
            "do not put a noise image in front of the prompts (by default the model config's "
            "dummy_image_prefix decides: on for the released model, off for models trained here)"
        ),
    )
    flags.add_sampling_flags(p, "shapes-gen", per_prompt=True, step_cache=True)
    flags.add_run_flags(p, DEFAULT_BATCH_SIZE, "images per model call, rounded down to prompts")


def _build(args: argparse.Namespace) -> ShapesGen:
    s = flags.sampling_settings(args)
    flags.check_counts(args, "n", "batch_size", "grid_cells", "n_heldout")
    flags.check_canvas(args)
    return ShapesGen(
        seed=s.seed,
        n_per_category=args.n,
        images_per_prompt=s.images_per_prompt,
        num_inference_steps=s.steps,
        guidance_scale=flags.guidance(args, s),
        time_shift=s.time_shift,
        sampler=args.sampler,
        step_cache=args.step_cache,
        images_per_call=args.batch_size,
        canvas=args.canvas,
        dummy_image=False if args.no_dummy_image else None,
        **flags.heldout(args),  # type: ignore[arg-type]
    )


COMMAND = EvalCommand(
    TASK,
    "text-to-image on Shapes prompts, judged by the detector (GenEval style)",
    _add_flags,
    _build,
    report_target,
    finish_report,
    journal=True,
)

__all__ = ["COMMAND", "Prompt", "ShapesGen", "evaluate_generation"]
