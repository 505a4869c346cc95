"""Classifier-free guidance of the flow velocity (docs/architecture.md §10)."""

from __future__ import annotations

import torch


def apply_guidance(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: v_u + s·(v_c − v_u)."""
    return v_uncond + scale * (v_cond - v_uncond)
