"""Image rows → images: the initial noise, the guided sampling run and the output.

:class:`~cheers.llm_inputs.ImageRows` (from text-to-image or editing requests) are prefilled,
with their unconditional twins when guidance is on, then :func:`cheers.generation.sample_latents`
integrates the latents, which :func:`to_output` decodes to the requested ``output_type``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from cheers.arguments import ImagePipelineOutput, StepEndCallback, check_finite, check_number
from cheers.errors import CheersError
from cheers.generation import prefill, sample_latents
from cheers.image import to_pil_list
from cheers.llm_inputs import ImageRows, InputBuilder
from cheers.model import Cheers
from cheers.samplers import FlowMatchSampler
from cheers.sequence import left_pad


def initial_noise(
    model: Cheers,
    n: int,
    latents: torch.Tensor | None,
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """The starting noise of ``n`` images: the checked ``latents``, or drawn from
    ``generators`` (one shared, or one per image) on their device."""
    cfg = model.config
    shape = (n, cfg.latent_channels, cfg.grid_size, cfg.grid_size)
    if latents is not None:
        if not isinstance(latents, torch.Tensor):
            raise CheersError(
                f"latents must be a torch.Tensor, got {type(latents).__name__}; "
                "convert with torch.as_tensor(latents)"
            )
        if tuple(latents.shape) != shape:
            raise CheersError(
                f"latents have shape {tuple(latents.shape)} but this request needs {shape} "
                "(images × latent channels × grid × grid)"
            )
        if not bool(torch.isfinite(latents).all()):
            raise CheersError(
                "latents contain NaN or infinity; pass finite noise (e.g. torch.randn)"
            )
        return latents.to(model.device, torch.float32)
    if len(generators) == n and n > 1:  # one generator per image
        return torch.cat([initial_noise(model, 1, None, [g]) for g in generators])
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
    ``sampler``; ``options`` go to :func:`cheers.generation.sample_latents`."""
    check_number(guidance_scale, "guidance_scale", allow_none=True)
    guided = guidance_scale is not None
    seqs = inputs.sequences(rows.ids, rows.images, rows.prefixes)
    if guided:
        uncond = rows.negatives or [inputs.uncond_ids(i) for i in rows.ids]
        seqs += inputs.sequences(uncond, rows.images, rows.prefixes)
    batch = left_pad(seqs)
    model = inputs.model
    p = model.tokens_per_image
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
