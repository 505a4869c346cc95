"""Image rows → images: the memory check, the initial noise, the guided sampling run, the output.

Text-to-image, editing and drawings inside a conversation differ only in their rows and their
starting latents; from there they share one tail, :func:`draw`:
:class:`~cheers.pipeline.llm_inputs.ImageRows` are prefilled, with their unconditional twins
when guidance is on, :func:`cheers.pipeline.loops.sample_latents` integrates the latents on the
sampler's grid from the start time, and :func:`to_output` decodes them to the requested
``output_type``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cheers.errors import CheersError
from cheers.image import to_pil_list
from cheers.model import Cheers
from cheers.pipeline import memory
from cheers.pipeline.arguments import ImagePipelineOutput, OutputType, StepEndCallback, check_finite
from cheers.pipeline.llm_inputs import ImageRows, InputBuilder
from cheers.pipeline.loops import StepEnd, image_token_count, prefill, sample_latents
from cheers.samplers import FlowMatchSampler, StepCache, get_sampler
from cheers.sequence import left_pad


@dataclass(frozen=True)
class FlowSettings:
    """How a drawing samples its latents (the arguments of text_to_image, edit and draw)."""

    num_inference_steps: int
    guidance_scale: float | None
    time_shift: float
    sampler: str | FlowMatchSampler | None = None
    guidance_interval: tuple[float, float] | None = None
    step_cache: StepCache | None = None
    progress: bool = False
    callback: Callable[[int, int], None] | None = None
    on_step_end: StepEnd | None = None


def check_image_memory(
    model: Cheers,
    budget: memory.MemoryBudget,
    images: int,
    guided: bool,
    prompt_tokens: int,
    size: tuple[int, int] | None = None,
) -> None:
    """Refuse a call of ``images`` images (of ``size``; ``None``: native) that cannot fit
    (:mod:`cheers.pipeline.memory`), saying how many would."""

    def need(n: int) -> memory.MemoryEstimate:
        return memory.image_call(
            model.config, model.dtype, n, guided=guided, prompt_tokens=prompt_tokens, size=size
        )

    fits = budget.rows_that_fit(need, images, model.device)
    if fits < images:
        fix = (
            f"make at most {fits} image(s) per call (split the prompts or lower "
            "num_images_per_prompt / --batch-size)"
            if fits
            else "not even one image fits: free memory, use a smaller dtype "
            "(--dtype bfloat16) or --offload"
        )
        budget.check(need(images), model.device, fix)


def initial_noise(
    model: Cheers,
    n: int,
    latents: torch.Tensor | None,
    generators: Sequence[torch.Generator | None],
    grid: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The starting noise of ``n`` images on the latent ``grid`` (rows, columns; ``None``:
    native): the checked ``latents``, or drawn from ``generators`` (one shared, or one per
    image) on their device."""
    cfg = model.config
    rows, columns = (cfg.grid_size, cfg.grid_size) if grid is None else grid
    shape = (n, cfg.latent_channels, rows, columns)
    if latents is not None:
        if not isinstance(latents, torch.Tensor):
            raise CheersError(
                f"latents must be a torch.Tensor, got {type(latents).__name__}; "
                "convert with torch.as_tensor(latents)"
            )
        if tuple(latents.shape) != shape:
            raise CheersError(
                f"latents have shape {tuple(latents.shape)} but this request needs {shape} "
                "(images × latent channels × grid rows × grid columns)"
            )
        if not bool(torch.isfinite(latents).all()):
            raise CheersError(
                "latents contain NaN or infinity; pass finite noise (e.g. torch.randn)"
            )
        return latents.to(model.device, torch.float32)
    if len(generators) == n and n > 1:  # one generator per image
        return torch.cat([initial_noise(model, 1, None, [g], grid) for g in generators])
    generator = generators[0]
    device = generator.device if generator is not None else torch.device("cpu")
    x0 = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    return x0.to(model.device)


def step_end_hook(pipe: Any, callback_on_step_end: StepEndCallback | None):
    """Adapt a diffusers-style ``callback_on_step_end`` (called with ``pipe``) to the sampling
    loop's hook."""
    if callback_on_step_end is None:
        return None

    def hook(step: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        out = callback_on_step_end(pipe, step, t, {"latents": x})
        latents = out.get("latents") if isinstance(out, Mapping) else None
        if latents is not None and not isinstance(latents, torch.Tensor):
            raise CheersError(
                f"callback_on_step_end returned latents of type {type(latents).__name__}; "
                "return {'latents': tensor} with a tensor of the latents' shape, or None"
            )
        return latents

    return hook


def sample_images(
    inputs: InputBuilder,
    rows: ImageRows,
    x: torch.Tensor,
    sampler: FlowMatchSampler,
    guidance_scale: float | None,
    progress: bool,
    callback: Callable[[int, int], None] | None,
    **options: Any,
) -> torch.Tensor:
    """Prefill ``rows`` (and, guided, their unconditional rows) and integrate ``x`` with
    ``sampler``; ``options`` go to :func:`cheers.pipeline.loops.sample_latents`."""
    guided = guidance_scale is not None
    seqs = inputs.sequences(rows.ids, rows.images, rows.prefixes)
    if guided:
        uncond = rows.negatives or [inputs.uncond_ids(i) for i in rows.ids]
        seqs += inputs.sequences(uncond, rows.images, rows.prefixes)
    batch = left_pad(seqs)
    model = inputs.model
    p = image_token_count(model, x)
    inputs.check_context(int(batch.lengths.max()), p)
    prefix = prefill(model, batch, room=p)
    check_finite(prefix.hidden[:, -1], "the prompt's hidden states")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sampler.num_evaluations, desc="denoising", unit="step")

    def step(k: int, n: int) -> None:
        if bar is not None:
            bar.update(1)
        if callback is not None:
            callback(k, n)

    try:
        x = sample_latents(model, prefix, x, sampler, guidance_scale, callback=step, **options)
    finally:
        if bar is not None:
            bar.close()
    check_finite(x, "the image latents")
    return x


def to_output(model: Cheers, x: torch.Tensor, output_type: str) -> ImagePipelineOutput:
    """The final latents ``x`` as ``output_type`` (decoded unless "latent")."""
    if output_type == "latent":
        return ImagePipelineOutput(x, x)
    decoded = model.decode_latent(x).float()
    check_finite(decoded, "the decoded images")
    images = decoded.clamp(0, 1)
    if output_type == "pil":
        return ImagePipelineOutput(to_pil_list(images), x)
    if output_type == "np":
        return ImagePipelineOutput(images.permute(0, 2, 3, 1).cpu().numpy(), x)
    return ImagePipelineOutput(images, x)


def draw(
    inputs: InputBuilder,
    rows: ImageRows,
    x: torch.Tensor,
    settings: FlowSettings,
    t0: float = 0.0,
    output_type: OutputType = "pil",
    return_dict: bool = True,
) -> ImagePipelineOutput | tuple:
    """The tail every drawing shares: integrate ``x`` (at time ``t0``) to t = 1 after ``rows``
    and return the images as ``output_type`` (the tuple ``(images,)`` unless ``return_dict``)."""
    sampler = get_sampler(settings.sampler, settings.time_shift)
    sampler.set_timesteps(settings.num_inference_steps, t0=t0)
    x = sample_images(
        inputs,
        rows,
        x,
        sampler,
        settings.guidance_scale,
        settings.progress,
        settings.callback,
        guidance_interval=settings.guidance_interval,
        step_cache=settings.step_cache,
        on_step_end=settings.on_step_end,
    )
    out = to_output(inputs.model, x, output_type)
    return out if return_dict else (out.images,)
