"""The reference sampler: Euler on the shifted grid, with its extra v/N step at t = 1."""

from __future__ import annotations

import torch

from cheers.samplers.base import FlowMatchSampler, register
from cheers.samplers.schedule import euler_step, final_step


@register
class EulerSampler(FlowMatchSampler):
    """Evaluates at every grid point t_0 … t_{N−1} = 1; x ← x + v·(t_{k+1} − t_k), and the
    reference's quirk at the last point: x + v/N (docs/architecture.md §10). N evaluations."""

    name = "euler"
    order = 1

    def _evaluation_times(self, grid: torch.Tensor) -> torch.Tensor:
        return grid

    def _step(self, v: torch.Tensor, index: int, x: torch.Tensor) -> torch.Tensor:
        n = len(self.grid)
        if index < n - 1:
            return euler_step(x, v, self.grid[index], self.grid[index + 1])
        return final_step(x, v, n)
