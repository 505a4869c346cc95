"""Understanding projector: ViT features → LLM tokens with 4× token compression (spec §5)."""

from __future__ import annotations

import torch
from torch import nn

from cheers.layouts import merge_2x2_tokens


class UndProjector(nn.Module):
    """LayerNorm, 2×2 token merge, then an MLP into the LLM width."""

    def __init__(self, vision_dim: int, text_dim: int) -> None:
        super().__init__()
        self.layernorm = nn.LayerNorm(vision_dim)
        self.mlp = nn.Sequential(
            nn.Linear(4 * vision_dim, 4 * vision_dim),
            nn.GELU(),
            nn.Linear(4 * vision_dim, text_dim),
        )

    def forward(self, features: torch.Tensor, grid: int) -> torch.Tensor:
        # The reference casts the input to the (bf16) module dtype here.
        features = features.to(self.layernorm.weight.dtype)
        return self.mlp(merge_2x2_tokens(self.layernorm(features), grid))
