"""SigLIP2-style vision transformer, the semantic encoder (docs/architecture.md §4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cheers.config import VisionConfig
from cheers.layouts import feature_map_to_tokens


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size
        )
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def position_table(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Position embeddings for a grid_h × grid_w patch grid, (grid_h·grid_w, D).

        The reference only resizes the table for inputs wider than 512 px; resizing whenever
        the grid differs gives the same numbers there (bicubic resizing to the same size is the
        identity) and also serves every other size.
        """
        table = self.position_embedding.weight
        side = math.isqrt(table.shape[0])
        if (grid_h, grid_w) == (side, side):
            return table
        grid = table.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False
        ).to(table.dtype)
        return grid.permute(0, 2, 3, 1).reshape(grid_h * grid_w, -1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixels.to(weight.dtype))
        h, w = patches.shape[-2:]
        return feature_map_to_tokens(patches) + self.position_table(h, w)


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (
            proj(x).view(b, n, self.num_heads, -1).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, -1))


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        if cfg.hidden_act not in ("gelu_pytorch_tanh", "gelu"):
            raise ValueError(f"unsupported vision hidden_act {cfg.hidden_act!r}")
        self.approximate = "tanh" if cfg.hidden_act == "gelu_pytorch_tanh" else "none"
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))


class VisionEncoderLayer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = VisionAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(VisionEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class AttentionPoolingHead(nn.Module):
    """SigLIP's pooled-embedding head. Stored in the checkpoint; Cheers never uses its output."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.probe = nn.Parameter(torch.randn(1, 1, cfg.hidden_size))
        self.attention = nn.MultiheadAttention(
            cfg.hidden_size, cfg.num_attention_heads, batch_first=True
        )
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = VisionMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.expand(x.shape[0], -1, -1)
        pooled = self.attention(probe, x, x, need_weights=False)[0]
        pooled = pooled + self.mlp(self.layernorm(pooled))
        return pooled[:, 0]


class VisionTransformer(nn.Module):
    """Pixels (B, 3, H, W) in [0, 1] → features (B, H/p·W/p, D) after ``post_layernorm``."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = VisionEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.head = AttentionPoolingHead(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encode_embeddings(self.embeddings(pixels))

    def encode_embeddings(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Run the encoder layers on patch embeddings already computed by ``embeddings``."""
        return self.post_layernorm(self.encoder(embeddings))
