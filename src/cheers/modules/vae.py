"""FLUX-style convolutional autoencoder and the latent normalisation (docs/architecture.md §3).

``VAE`` is the frozen autoencoder (``model.vae_model``); ``DecoderProjector`` is the second,
trainable decoder with its own statistics that turns latents into the pixels the ViT sees
(``model.vae_decoder_projector``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cheers.config import VAEConfig
from cheers.layouts import latent_depth_to_space, latent_space_to_depth, phase_view


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place at inference: two fewer full-size tensors per block, the same numbers.
        # Training keeps the copies, which autograd needs for the backward pass.
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return h.add_(x) if inplace else x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H·W positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (
            proj(y).reshape(b, 1, c, h * w).transpose(2, 3) for proj in (self.q, self.k, self.v)
        )
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj_out(y)


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Asymmetric padding (right and bottom only) as in the original autoencoder.
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training keeps the reference's exact arithmetic
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return _upsample_conv(x, self.conv.weight, self.conv.bias)


def _phase_taps(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3-tap kernel seen from a 2× nearest-upsampled axis: output 2h reads inputs (h−1, h)
    with taps (w0, w1+w2), output 2h+1 reads (h, h+1) with taps (w0+w1, w2)."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _upsample_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv3×3(nearest 2× upsample of x), computed at x's resolution: one 2×2 convolution per
    output phase (4/9 of the multiply-adds), equal to the direct form up to float rounding."""
    c, (h, w) = weight.shape[0], x.shape[-2:]
    # Keep x's memory order (channels-last on GPU, see cheers.transforms.channels_last).
    order = torch.channels_last if _channels_last(x) else torch.contiguous_format
    kernels = [kc for kr in _phase_taps(weight, 2) for kc in _phase_taps(kr, 3)]
    padded = F.pad(x, (1, 1, 1, 1)).contiguous(memory_format=order)
    y = F.conv2d(padded, torch.cat(kernels).contiguous(memory_format=order), bias.repeat(4))
    y = y.unflatten(1, (2, 2, c))  # (B, i, j, C, H+1, W+1)
    out = torch.empty(
        (x.shape[0], c, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=order
    )
    phases = phase_view(out)  # each phase written straight into its pixels: one copy
    for i in (0, 1):
        for j in (0, 1):
            phases[:, i, j] = y[:, i, j, :, i : i + h, j : j + w]
    return out


class _Middle(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: residual blocks, then an optional resampling."""

    def __init__(self, blocks: list[ResnetBlock], resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if resample is not None:
            self.add_module(name, resample)
        self._resample_name = name if resample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block:
            x = block(x)
        if self._resample_name is not None:
            x = getattr(self, self._resample_name)(x)
        return x


class Encoder(nn.Module):
    """Pixels (B, 3, H, W) → moments (B, 2z, H/8, W/8) (for ``ch_mult`` of length 4)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        channels = cfg.ch
        levels = []
        for level, mult in enumerate(cfg.ch_mult):
            out = cfg.ch * mult
            blocks = []
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResnetBlock(channels, out))
                channels = out
            last = level == len(cfg.ch_mult) - 1
            levels.append(_Level(blocks, None if last else Downsample(channels), "downsample"))
        self.down = nn.ModuleList(levels)
        self.mid = _Middle(channels)
        self.norm_out = _group_norm(channels)
        self.conv_out = nn.Conv2d(channels, 2 * cfg.z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for level in self.down:
            x = level(x)
        x = self.mid(x)
        return self.quant_conv(self.conv_out(F.silu(self.norm_out(x))))


class Decoder(nn.Module):
    """z-channel latent (B, z, h, w) → pixels (B, out_ch, 8h, 8w) (for ``ch_mult`` of length 4)."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)
        channels = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, channels, 3, padding=1)
        self.mid = _Middle(channels)
        levels: list[_Level] = []
        for level in reversed(range(len(cfg.ch_mult))):
            out = cfg.ch * cfg.ch_mult[level]
            blocks = []
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResnetBlock(channels, out))
                channels = out
            levels.insert(0, _Level(blocks, Upsample(channels) if level else None, "upsample"))
        # Indexed by level (up.0 is the finest), applied from the coarsest.
        self.up = nn.ModuleList(levels)
        self.norm_out = _group_norm(channels)
        self.conv_out = nn.Conv2d(channels, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(self.post_quant_conv(z)))
        for level in reversed(self.up):
            x = level(x)
        return self.conv_out(F.silu(self.norm_out(x)))


def _latent_norm(channels: int) -> nn.BatchNorm2d:
    # Only the running statistics are used (never batch statistics), see normalize().
    return nn.BatchNorm2d(channels, eps=1e-4, affine=False, track_running_stats=True)


def _normalize(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    mean = bn.running_mean.to(x.dtype)[None, :, None, None]
    std = torch.sqrt(bn.running_var.to(x.dtype) + bn.eps)[None, :, None, None]
    return (x - mean) / std


def _denormalize(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    mean = bn.running_mean.to(x.dtype)[None, :, None, None]
    std = torch.sqrt(bn.running_var.to(x.dtype) + bn.eps)[None, :, None, None]
    return x * std + mean


class VAE(nn.Module):
    """The frozen autoencoder with its latent BatchNorm statistics (``model.vae_model``)."""

    def __init__(self, encoder_cfg: VAEConfig, decoder_cfg: VAEConfig) -> None:
        super().__init__()
        self.z_channels = encoder_cfg.z_channels
        self.encoder = Encoder(encoder_cfg)
        self.decoder = Decoder(decoder_cfg)
        self.bn = _latent_norm(4 * encoder_cfg.z_channels)

    def encode_unnormalized(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1] → space-to-depth latent mean before normalisation."""
        moments = self.encoder(pixels)
        return latent_space_to_depth(moments[:, : self.z_channels])

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, H, W) in [0, 1] → normalised latent (B, 4z, H/16, W/16)."""
        return _normalize(self.encode_unnormalized(pixels), self.bn)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Normalised latent → pixels (not clamped)."""
        return self.decoder(latent_depth_to_space(_denormalize(latent, self.bn)))


class DecoderProjector(nn.Module):
    """Latent → pixels for the semantic encoder (``model.vae_decoder_projector``)."""

    def __init__(self, decoder_cfg: VAEConfig) -> None:
        super().__init__()
        self.decoder = Decoder(decoder_cfg)
        self.bn = _latent_norm(4 * decoder_cfg.z_channels)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(latent_depth_to_space(_denormalize(latent, self.bn)))
