"""The sampler interface, the defaults and the forward process, written once.

Conventions follow diffusers' ``FlowMatchEulerDiscreteScheduler`` with Cheers' time axis
(t = 0 is noise, t = 1 the clean image; docs/architecture.md §6):
:meth:`FlowMatchSampler.set_timesteps` lays
out the shifted grid, ``timesteps`` lists the times at which the model is evaluated (one
velocity evaluation each, in order), and :meth:`FlowMatchSampler.step` turns the velocity at
the current one into the next sample. Multi-stage and multistep solvers keep their state
between calls, so every sampler runs in the same loop::

    sampler.set_timesteps(num_inference_steps)
    for t in sampler.timesteps:
        x = sampler.step(velocity(x, t), t, x)

A new sampler is one subclass in one file, registered with :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from cheers.errors import SamplerError
from cheers.samplers.schedule import timesteps as shifted_grid


@dataclass(frozen=True)
class SamplingDefaults:
    """The authors' sampling settings; every default in cheers reads them here.

    See docs/architecture.md §10.
    """

    num_inference_steps: int = 80
    guidance_scale: float = 9.5
    time_shift: float = 0.5
    sampler: str = "euler"
    edit_strength: float = 0.9


DEFAULTS = SamplingDefaults()


def noise(x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """The forward process x_t = t·x1 + (1−t)·x0 (x1 clean, x0 Gaussian noise).

    See docs/architecture.md §6.
    """
    return t * x1 + (1 - t) * x0


# Smallest 1 − t that divides a clean-latent prediction into a velocity: near t = 1 the division
# would amplify the prediction's error without bound (as in JiT, arXiv 2511.13720).
MIN_NOISE_LEVEL = 0.05


def velocity_from_sample(
    x1_hat: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | float
) -> torch.Tensor:
    """The velocity that a predicted clean latent x̂1 implies at x_t: (x̂1 − x_t)/(1 − t).

    Exact for the forward process above (x_t = t·x1 + (1−t)·x0 gives x1 − x0 =
    (x1 − x_t)/(1 − t)); 1 − t is clamped at :data:`MIN_NOISE_LEVEL`.
    """
    gap = (1 - torch.as_tensor(t, dtype=x_t.dtype, device=x_t.device)).clamp(min=MIN_NOISE_LEVEL)
    return (x1_hat - x_t) / gap


def velocity_from_head(
    head: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor | float, prediction: str
) -> torch.Tensor:
    """The velocity that the detail head's output means under a config's ``flow_prediction``.

    "velocity" (the reference): the output itself. "sample": a clean latent x̂1
    (:func:`velocity_from_sample`). "skip": the velocity plus x_t, so v = head − x_t; at t = 0
    the head's target is x1 itself, which the prompt decides, instead of x1 − x0, whose noise
    part only x_t carries.
    """
    if prediction == "velocity":
        return head
    if prediction == "sample":
        return velocity_from_sample(head, x_t, t)
    if prediction == "skip":
        return head - x_t
    raise ValueError(f"unknown flow_prediction {prediction!r}")


class FlowMatchSampler:
    """An ODE solver for the flow dx/dt = v(x, t) from t0 to 1 on the shifted time grid.

    Subclasses set ``name`` and ``order`` and implement :meth:`_evaluation_times` and
    :meth:`_step`; the base class keeps the step index, so ``step`` is called exactly once per
    entry of ``timesteps``.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 1

    def __init__(self, shift: float = DEFAULTS.time_shift) -> None:
        if not (isinstance(shift, (int, float)) and shift > 0):
            raise SamplerError(
                f"the time shift must be a positive number (1 = uniform grid, below 1 = more "
                f"steps near noise), got {shift!r}"
            )
        self.shift = float(shift)
        self.grid = torch.zeros(0)
        self.timesteps = torch.zeros(0)
        self.step_index = 0

    # --------------------------------------------------------------- the grid
    def set_timesteps(self, num_inference_steps: int, t0: float = 0.0) -> None:
        """Lay out ``num_inference_steps`` shifted grid points from ``t0`` to 1 (editing starts
        at t0 > 0 with ``int((1 − t0)·n)`` points, as the reference)."""
        if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool):
            raise SamplerError(
                f"num_inference_steps must be an integer, got {num_inference_steps!r}"
            )
        try:
            grid = shifted_grid(num_inference_steps, self.shift, t0)
        except ValueError as err:
            raise SamplerError(str(err)) from err
        self.set_grid(grid)

    def set_grid(self, grid: torch.Tensor) -> None:
        """Use an explicit increasing grid ending at t = 1 (e.g. the reference's)."""
        if grid.dim() != 1 or len(grid) < 2 or bool((grid.diff() <= 0).any()):
            raise SamplerError("the time grid must be increasing with at least 2 points")
        self.grid = grid.float()
        self.timesteps = self._evaluation_times(self.grid)
        self.step_index = 0
        self.reset()

    @property
    def num_evaluations(self) -> int:
        """Model evaluations one run makes (the cost of the sampler)."""
        return len(self.timesteps)

    # ---------------------------------------------------------------- stepping
    def step(
        self,
        velocity: torch.Tensor,
        t: torch.Tensor | float,  # noqa: ARG002 - diffusers' step(model_output, timestep, sample)
        sample: torch.Tensor,
    ) -> torch.Tensor:
        """The sample after the velocity ``velocity`` evaluated at ``sample`` and time ``t``
        (the current entry of ``timesteps``)."""
        if self.step_index >= len(self.timesteps):
            raise SamplerError(
                f"step() was called {self.step_index + 1} times but the sampler has "
                f"{len(self.timesteps)} timesteps; call set_timesteps() before each run"
            )
        # At least float32 (bfloat16 velocities would lose the small steps near t = 1).
        dtype = torch.promote_types(
            torch.promote_types(velocity.dtype, sample.dtype), torch.float32
        )
        out = self._step(velocity.to(dtype), self.step_index, sample.to(dtype))
        self.step_index += 1
        return out

    noise = staticmethod(noise)

    # ------------------------------------------------------------ to implement
    def reset(self) -> None:
        """Forget the state of an earlier run (multistep history, stored stages)."""

    def _evaluation_times(self, grid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _step(self, v: torch.Tensor, index: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shift={self.shift})"


SAMPLERS: dict[str, type[FlowMatchSampler]] = {}


def register(cls: type[FlowMatchSampler]) -> type[FlowMatchSampler]:
    """Class decorator: make a sampler available by its ``name`` (pipeline and CLI)."""
    SAMPLERS[cls.name] = cls
    return cls
