"""The scale of the image tokens in the LLM's residual stream, measured and reset.

Nothing in the architecture normalises the understanding projector's output, and in a model
trained from scratch the flow loss pushes it up: large image tokens carry x_t through the LLM
unchanged, so the heads denoise well, but whatever attention adds at the image positions (the
prompt) becomes small beside them, and text-to-image can ignore the prompt. The embedded
default model's image tokens had grown to ~85× the mean norm of its word embeddings. These
functions measure that ratio and scale the tokens back (rescaling alone did not make that
model follow its prompts: docs/default_model.md).
"""

from __future__ import annotations

import torch

from cheers.model import Cheers
from cheers.samplers import noise as forward_process


def image_token_norm(model: Cheers, pixels: torch.Tensor, t: float = 0.5, seed: int = 0) -> float:
    """Mean L2 norm of the LLM image tokens of x_t = t·x1 + (1−t)·noise for images (B, 3, R, R)
    in [0, 1]; the noise is drawn from ``seed``."""
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1], got {t}")
    with torch.no_grad():
        x1 = model.encode_latent(pixels.to(model.device)).float()
        g = torch.Generator().manual_seed(seed)
        x0 = torch.randn(x1.shape, generator=g).to(x1.device)
        tokens = model.image_tokens(forward_process(x1, x0, t)).tokens
        return float(tokens.float().norm(dim=-1).mean())


def word_embedding_norm(model: Cheers) -> float:
    """Mean L2 norm of the rows of the LLM's input embedding table."""
    with torch.no_grad():
        return float(model.model.language_model.embed_tokens.weight.float().norm(dim=-1).mean())


def rescale_image_tokens(model: Cheers, factor: float) -> None:
    """Multiply every LLM image token by ``factor``, exactly, by scaling the understanding
    projector's output layer (its last operation is that linear layer)."""
    if not factor > 0:
        raise ValueError(f"factor must be positive, got {factor}")
    out = model.model.und_projector.mlp[-1]
    with torch.no_grad():
        out.weight.mul_(factor)
        if out.bias is not None:
            out.bias.mul_(factor)


__all__ = ["image_token_norm", "rescale_image_tokens", "word_embedding_norm"]
