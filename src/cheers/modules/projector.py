"""Understanding projector: ViT features → LLM tokens with 4× token compression.

See docs/architecture.md §5.
"""

from __future__ import annotations

import torch
from torch import nn

from cheers.layouts import merge_tokens


class UndProjector(nn.Module):
    """LayerNorm, k×k token merge (the paper's k = 2), then an MLP into the LLM width."""

    def __init__(self, vision_dim: int, text_dim: int, cell: int = 2) -> None:
        super().__init__()
        self.cell = cell
        merged = cell * cell * vision_dim
        self.layernorm = nn.LayerNorm(vision_dim)
        self.mlp = nn.Sequential(
            nn.Linear(merged, merged),
            nn.GELU(),
            nn.Linear(merged, text_dim),
        )

    def forward(
        self, features: torch.Tensor, grid: int, dtype: torch.dtype | None = None
    ) -> torch.Tensor:
        """``dtype``: the model's compute dtype; None keeps the input's."""
        # The reference casts the input to the (bf16) module dtype here.
        features = features if dtype is None else features.to(dtype)
        return self.mlp(merge_tokens(self.layernorm(features), grid, self.cell))
