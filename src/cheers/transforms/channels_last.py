"""Channels-last convolutions: the autoencoder and the decoder projector in NHWC memory order.

On CUDA, cuDNN's bfloat16 tensor-core convolutions work in NHWC; given NCHW tensors they
transpose around every call. The decoder projector runs at every denoising step (latent →
pixels at the full image resolution, for the ViT), so its convolutions are most of a step's
arithmetic. With the weights in channels-last order each convolution returns channels-last
output, and the whole decoder stays in that order; the numbers change only by rounding.

    >>> convolutions_channels_last(pipe.model)      # doctest: +SKIP
"""

from __future__ import annotations

import torch
from torch import nn

from cheers.model import Cheers


def convolution_modules(model: Cheers) -> dict[str, nn.Module]:
    """The convolutional parts, by checkpoint name: the VAE and the decoder projector."""
    m = model.model
    modules = {"model.vae_model": m.vae_model}
    if m.vae_decoder_projector is not None:
        modules["model.vae_decoder_projector"] = m.vae_decoder_projector
    return modules


def convolutions_channels_last(model: Cheers) -> list[str]:
    """Put the convolution weights of the VAE and the decoder projector in channels-last
    order, in place; returns the names of the modules changed. Checkpoint names and values
    are unchanged (``state_dict`` tensors are only strided differently)."""
    changed = convolution_modules(model)
    for module in changed.values():
        module.to(memory_format=torch.channels_last)
    return list(changed)
