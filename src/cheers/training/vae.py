"""Training the autoencoder from scratch (for small models that have no released VAE).

A ``vae`` stage trains ``model.vae_model`` to reconstruct the images of the data with a KL-
regularised Gaussian posterior (as FLUX-style autoencoders); at its end the latent BatchNorm
statistics are measured over the data and the decoder projector starts as a copy of the
decoder (the joint stages then train it to feed the ViT).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from cheers.data.examples import DUMMY, GENERATION, Example, load_slot_image
from cheers.layouts import latent_space_to_depth
from cheers.model import Cheers
from cheers.training.randomness import sample_generator


@dataclass
class VAEBatch:
    pixels: torch.Tensor  # (N, 3, R, R)
    noise: torch.Tensor  # (N, z, R/8, R/8) for the posterior sample


@dataclass
class VAELossSums:
    recon: torch.Tensor
    recon_count: int
    kl: torch.Tensor
    kl_count: int


def vae_images(examples: Sequence[Example]) -> list[tuple[str, str, str]]:
    """Every distinct (path, role, source) image of the data, dummy slots excluded."""
    seen, out = set(), []
    for example in examples:
        for path, role in zip(example.images, example.roles, strict=True):
            if role != DUMMY and path not in seen:
                seen.add(path)
                out.append((path, role, example.source))
    return out


def make_vae_batch(
    items: Sequence[tuple[int, tuple[str, str, str]]], model: Cheers, seed: int
) -> VAEBatch:
    cfg = model.config
    r = cfg.image_size
    side = r // cfg.vae_encoder_config.downsample_factor
    pixels, noise = [], []
    for uid, (path, role, source) in items:
        pixels.append(load_slot_image(path, role if role == GENERATION else "und", r, source))
        g = sample_generator(seed, uid)
        noise.append(torch.randn(cfg.vae_encoder_config.z_channels, side, side, generator=g))
    return VAEBatch(torch.stack(pixels), torch.stack(noise))


def vae_losses(
    model: Cheers, batch: VAEBatch, latents_only: bool = False
) -> VAELossSums | torch.Tensor:
    """Reconstruction MSE + KL(q(z|x) ‖ N(0, I)) as sums with counts; with ``latents_only``
    the space-to-depth posterior means (for the latent statistics)."""
    vae = model.model.vae_model
    x = batch.pixels.to(model.device, model.dtype)
    moments = vae.encoder(x)
    if latents_only:
        return latent_space_to_depth(moments[:, : vae.z_channels])
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)
    z = mean + torch.exp(0.5 * logvar) * batch.noise.to(model.device, model.dtype)
    recon = vae.decoder(z)
    rec = (recon.float() - x.float()).pow(2).sum()
    kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).sum()
    return VAELossSums(rec, x.numel(), kl, mean.numel())


@torch.no_grad()
def finish_vae(model: Cheers, objective: nn.Module, batches: Iterator[VAEBatch]) -> None:
    """Measure the latent statistics (through ``objective``, the wrapped training module) and
    start the decoder projector as a copy of the decoder."""
    total = total_sq = None
    count = 0
    for batch in batches:
        lat = objective(batch, latents_only=True).double()
        s, sq = lat.sum(dim=(0, 2, 3)), lat.pow(2).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += lat.shape[0] * lat.shape[2] * lat.shape[3]
    if count == 0:
        return
    mean = total / count
    var = (total_sq / count - mean.pow(2)).clamp(min=1e-8)
    bn = model.model.vae_model.bn
    bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
    bn.running_var.copy_(var.to(bn.running_var.dtype))
    bn.num_batches_tracked.fill_(1)
    start_projector_from_decoder(model)


def start_projector_from_decoder(model: Cheers) -> None:
    """Start the decoder projector as a copy of the VAE's decoder and latent statistics
    (nothing to do when the ViT reads latents)."""
    vae, projector = model.model.vae_model, model.model.vae_decoder_projector
    if projector is not None:
        projector.decoder.load_state_dict(vae.decoder.state_dict())
        projector.bn.load_state_dict(vae.bn.state_dict())
