"""Every tensor layout of the model, each written once as an einops pattern.

The reference mixes ``view``/``permute`` chains; here each reordering is one pattern whose
index order can be read off directly. ``i`` and ``j`` are the row and column offsets inside a
2×2 cell; ``r`` and ``c`` index the cells.
"""

from __future__ import annotations

import torch
from einops import rearrange


def latent_space_to_depth(z: torch.Tensor) -> torch.Tensor:
    """VAE mean (B, z, 2H, 2W) → (B, 4z, H, W) with new channel index ``c·4 + i·2 + j``."""
    return rearrange(z, "b c (h i) (w j) -> b (c i j) h w", i=2, j=2)


def latent_depth_to_space(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`latent_space_to_depth`: (B, 4z, H, W) → (B, z, 2H, 2W)."""
    return rearrange(x, "b (c i j) h w -> b c (h i) (w j)", i=2, j=2)


def merge_tokens(x: torch.Tensor, grid: int, cell: int = 2) -> torch.Tensor:
    """Row-major grid tokens (B, G·W, C) → (B, G/k·W/k, k²C), position-major features; ``grid``
    is the number of rows G (the width W follows from the token count: square or not).

    With the model's k = 2, output token (r, c) concatenates the inputs at (2r+i, 2c+j) with
    feature index ``(i·2 + j)·C + channel``. k = 1 (the no-compression ablation) is the identity.
    """
    return rearrange(x, "b (r i c j) d -> b (r c) (i j d)", i=cell, j=cell, r=grid // cell)


def unmerge_tokens(x: torch.Tensor, grid: int, cell: int = 2) -> torch.Tensor:
    """Inverse of :func:`merge_tokens`: (B, G/k·W/k, k²C) → (B, G·W, C), ``grid`` = G rows."""
    return rearrange(x, "b (r c) (i j d) -> b (r i c j) d", i=cell, j=cell, r=grid // cell)


def feature_map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, H·W, C), tokens in row-major order."""
    return rearrange(x, "b c h w -> b (h w) c")


def tokens_to_feature_map(x: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, H·W, C) row-major tokens → (B, C, H, W), ``grid`` = H (W from the token count)."""
    return rearrange(x, "b (h w) c -> b c h w", h=grid)


def phase_view(x: torch.Tensor) -> torch.Tensor:
    """A view of (B, C, 2H, 2W) as its sub-pixel phases (B, i, j, C, H, W), i/j the row/column
    offset inside each 2×2 cell: phase (i, j) at (h, w) is pixel (2h+i, 2w+j). Writing into the
    view writes the pixels."""
    return rearrange(x, "b c (h i) (w j) -> b i j c h w", i=2, j=2)
