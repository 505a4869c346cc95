"""Step caching: skip model evaluations by extrapolating the velocity in time (TaylorSeer).

Along a flow trajectory the velocity changes smoothly with t, so between full evaluations it
can be predicted from the last ones: order 0 reuses the last velocity (FORA-style), order 1
extrapolates linearly through the last two (TaylorSeer). The first ``warmup`` evaluations and
then every ``interval``-th are computed by the model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cheers.errors import SamplerError


class StepCache:
    """Wraps the velocity function of one sampling run; call :meth:`reset` between runs."""

    def __init__(self, interval: int = 2, order: int = 1, warmup: int = 2) -> None:
        if not (isinstance(interval, int) and interval >= 1):
            raise SamplerError(f"the step cache interval must be an integer ≥ 1, got {interval!r}")
        if order not in (0, 1):
            raise SamplerError(f"the step cache order must be 0 or 1, got {order!r}")
        if not (isinstance(warmup, int) and warmup >= order + 1):
            raise SamplerError(
                f"the step cache needs warmup ≥ order + 1 = {order + 1} full evaluations, "
                f"got {warmup!r}"
            )
        self.interval, self.order, self.warmup = interval, order, warmup
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.evaluations = 0
        self._history: list[tuple[float, torch.Tensor]] = []

    def __call__(self, t: float, compute: Callable[..., torch.Tensor], *args) -> torch.Tensor:
        """The velocity at time ``t``: ``compute(*args)`` or a prediction from earlier ones."""
        index = self.calls
        self.calls += 1
        full = index < self.warmup or (index - self.warmup + 1) % self.interval == 0
        if full or len(self._history) <= self.order:
            v = compute(*args)
            self.evaluations += 1
            self._history = [*self._history[-1:], (float(t), v)]
            return v
        t1, v1 = self._history[-1]
        if self.order == 0:
            return v1
        t0, v0 = self._history[-2]
        if t1 == t0:  # e.g. Heun's corrector and the next predictor share a time
            return v1
        return v1 + (float(t) - t1) * (v1 - v0) / (t1 - t0)
