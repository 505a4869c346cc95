"""Regional ``torch.compile``: the model's repeated blocks compiled in place, each on its own.

Compiling the whole denoising step or decoding loop would trace one large graph per prompt
length and per cache length; compiling the blocks instead gives small graphs that every block
of the same shape reuses (one graph serves all LLM decoder layers, one all ViT layers), compiled
in seconds, while the Python between the blocks (the sampler, the cache bookkeeping, the
guidance) stays as it is. The regions:

- each LLM decoder layer (prompt prefill, the image tokens of every denoising step and each
  decoded token; the growing cache length becomes a dynamic size after its first change);
- each ViT encoder layer and each flow-head block;
- each residual and attention block of the decoder projector, which turns every step's latent
  into pixels for the ViT (convolutions at up to the full image resolution).

Numbers change only by the float rounding of fused kernels. Each distinct block shape is a
recompilation of the same code: for the official preset raise
``torch._dynamo.config.cache_size_limit`` (e.g. to 64) before the first call.

    >>> compile_regions(pipe.model)                    # doctest: +SKIP
    >>> pipe("a red circle")                           # first call compiles   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from torch import nn

from cheers.model import Cheers
from cheers.modules.vae import AttnBlock, ResnetBlock


def regions(model: Cheers) -> dict[str, nn.Module]:
    """The blocks :func:`compile_regions` compiles, by checkpoint name."""
    out: dict[str, nn.Module] = {}
    m = model.model
    for prefix, blocks in (
        ("model.language_model.layers", m.language_model.layers),
        ("model.vision_representation.encoder.layers", m.vision_representation.encoder.layers),
    ):
        out.update({f"{prefix}.{i}": block for i, block in enumerate(blocks)})
    for name in ("gen_projector", "hi_projector"):
        head = getattr(m, name)
        out.update(
            {f"model.{name}.diffusion_head_a.{i}": b for i, b in enumerate(head.diffusion_head_a)}
        )
        out[f"model.{name}.diffusion_head_b"] = head.diffusion_head_b
    if m.vae_decoder_projector is not None:
        for name, module in m.vae_decoder_projector.named_modules():
            if isinstance(module, (ResnetBlock, AttnBlock)):
                out[f"model.vae_decoder_projector.{name}"] = module
    return out


def compile_regions(model: Cheers, **options: Any) -> list[str]:
    """Compile each of :func:`regions` in place (``nn.Module.compile(**options)``, e.g.
    ``backend=`` or ``mode=``); returns their names. The LLM layers see a new length at every
    decoded token, so they keep dynamo's automatic dynamic shapes; the other blocks always see
    the same shapes and are compiled static (``dynamic=False``) unless ``options`` say."""
    blocks = regions(model)
    for name, block in blocks.items():
        if name.startswith("model.language_model."):
            block.compile(**options)
        else:  # fixed shapes: one static graph per block shape
            block.compile(**{"dynamic": False, **options})
    return list(blocks)
