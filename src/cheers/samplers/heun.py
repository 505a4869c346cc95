"""Heun's second-order method (the trapezoidal predictor–corrector of EDM)."""

from __future__ import annotations

import torch

from cheers.samplers.base import FlowMatchSampler, register


@register
class HeunSampler(FlowMatchSampler):
    """Per interval [t_k, t_{k+1}]: an Euler predictor, then the velocity at its end averaged
    with the first. Ends at t = 1 without the reference's extra step; 2(N−1) evaluations."""

    name = "heun"
    order = 2

    def reset(self) -> None:
        self._x: torch.Tensor | None = None
        self._v: torch.Tensor | None = None

    def _evaluation_times(self, grid: torch.Tensor) -> torch.Tensor:
        # (t_0, t_1), (t_1, t_2), …: the predictor's time, then the corrector's.
        return torch.stack([grid[:-1], grid[1:]], dim=1).flatten()

    def _step(self, v: torch.Tensor, index: int, x: torch.Tensor) -> torch.Tensor:
        k = index // 2
        h = self.grid[k + 1] - self.grid[k]
        if index % 2 == 0:
            self._x, self._v = x, v
            return x + h * v
        assert self._x is not None and self._v is not None
        out = self._x + h * 0.5 * (self._v + v)
        self._x = self._v = None
        return out
