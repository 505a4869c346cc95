"""The cascaded flow-matching heads: time embedder, modulated DiT blocks, gate.

See docs/architecture.md §8.

``FlowHead`` is used twice: the semantic head (``gen_projector``, at LLM width) predicts
ViT-grid features from the LLM's hidden states; the detail head (``hi_projector``, at ViT
width) turns the gated features into the latent velocity.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cheers.modules.common import RMSNorm, SwiGLU, apply_rope, attention, rope_cos_sin

FREQUENCY_DIM = 256


def timestep_features(t: torch.Tensor, dim: int = FREQUENCY_DIM) -> torch.Tensor:
    """Sinusoidal features ``[cos(t·f), sin(t·f)]`` of t ∈ [0, 1] (not scaled), (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


class TimestepEmbedder(nn.Module):
    """t → (te1 at LLM width, te2 at ViT width), each (B, 1, D) to broadcast over tokens."""

    def __init__(self, text_dim: int, vision_dim: int) -> None:
        super().__init__()
        self.mlp_1 = _mlp(FREQUENCY_DIM, text_dim)
        self.mlp_2 = _mlp(FREQUENCY_DIM, vision_dim)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``dtype``: the model's compute dtype (the float32 features are cast to it)."""
        features = timestep_features(t).to(dtype)
        return self.mlp_1(features)[:, None], self.mlp_2(features)[:, None]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x·(1 + scale) + shift`` in float32, returned in x's dtype."""
    return (x.float() * (1 + scale.float()) + shift.float()).to(x.dtype)


class HeadAttention(nn.Module):
    """Bidirectional GQA self-attention without biases, RoPE θ 1e4."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads = num_heads, num_kv_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.o_proj(attention(q, k, v))


class DiTBlock(nn.Module):
    """adaLN-modulated pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, num_kv_heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(dim, eps)
        self.attn = HeadAttention(dim, num_heads, num_kv_heads)
        self.post_attention_layernorm = RMSNorm(dim, eps)
        self.mlp = SwiGLU(dim, 4 * dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(
        self, x: torch.Tensor, te: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(te).chunk(6, -1)
        x = x + gate_a * self.attn(modulate(self.input_layernorm(x), shift_a, scale_a), rope)
        return x + gate_m * self.mlp(modulate(self.post_attention_layernorm(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, dim: int, out_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_final = RMSNorm(dim, eps)
        self.linear = nn.Linear(dim, out_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(te).chunk(2, -1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class FlowHead(nn.Module):
    """A stack of :class:`DiTBlock` (``diffusion_head_a``) and a :class:`FinalLayer` (``_b``)."""

    def __init__(
        self, dim: int, out_dim: int, depth: int, num_heads: int, num_kv_heads: int
    ) -> None:
        super().__init__()
        self.head_dim = dim // num_heads
        self.diffusion_head_a = nn.ModuleList(
            DiTBlock(dim, num_heads, num_kv_heads) for _ in range(depth)
        )
        self.diffusion_head_b = FinalLayer(dim, out_dim)

    def forward(self, x: torch.Tensor, te: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), te (B, 1, D), RoPE ``positions`` (N,) → (B, N, out_dim)."""
        rope = rope_cos_sin(positions[None], self.head_dim, 10000.0, x.dtype)
        for block in self.diffusion_head_a:
            x = block(x, te, rope)
        return self.diffusion_head_b(x, te)


class HiGate(nn.Module):
    """Injects patch details: ``LayerNorm(low + g(low)·high)`` with a scalar gate per token.

    ``high = None`` (the no-injection ablation) leaves ``LayerNorm(low)``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1))
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, low: torch.Tensor, high: torch.Tensor | None) -> torch.Tensor:
        if high is None:
            return self.layer_norm(low)
        return self.layer_norm(low + self.gate(low) * high)
