"""The second-order Adams–Bashforth multistep method on the (non-uniform) time grid.

One model evaluation per step, like Euler, but the step uses the last two velocities: with
h = t_{k+1} − t_k and h' = t_k − t_{k−1},

    x_{k+1} = x_k + h·[(1 + h/(2h'))·v_k − (h/(2h'))·v_{k−1}]

which is the integral of the line through (t_{k−1}, v_{k−1}) and (t_k, v_k) over the step. The
first step is Euler's. The grid's last point t = 1 is never evaluated: N−1 evaluations.
"""

from __future__ import annotations

import torch

from cheers.samplers.base import FlowMatchSampler, register


@register
class AdamsBashforthSampler(FlowMatchSampler):
    """Two-step Adams–Bashforth (see the module docstring)."""

    name = "ab2"
    order = 2

    def reset(self) -> None:
        self._prev: torch.Tensor | None = None

    def _evaluation_times(self, grid: torch.Tensor) -> torch.Tensor:
        return grid[:-1]

    def _step(self, v: torch.Tensor, index: int, x: torch.Tensor) -> torch.Tensor:
        h = float(self.grid[index + 1] - self.grid[index])
        slope = v
        if self._prev is not None:
            ratio = h / (2.0 * float(self.grid[index] - self.grid[index - 1]))
            slope = (1.0 + ratio) * v - ratio * self._prev
        self._prev = v
        return x + h * slope
