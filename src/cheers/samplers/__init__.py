"""Samplers of the image flow, behind one interface (:class:`FlowMatchSampler`).

    >>> from cheers.samplers import get_sampler
    >>> sampler = get_sampler("heun", shift=0.5)
    >>> sampler.set_timesteps(10)
    >>> sampler.num_evaluations
    18

``euler`` is the reference (and the default); ``heun`` (two evaluations per step) and ``ab2``
(Adams–Bashforth, one per step) are second order. A
:class:`StepCache` skips model evaluations by extrapolating the velocity (TaylorSeer).
"""

from __future__ import annotations

from cheers.errors import SamplerError
from cheers.samplers.base import DEFAULTS, SAMPLERS, FlowMatchSampler, SamplingDefaults, noise
from cheers.samplers.cache import StepCache
from cheers.samplers.euler import EulerSampler
from cheers.samplers.heun import HeunSampler
from cheers.samplers.multistep import AdamsBashforthSampler


def get_sampler(
    sampler: str | FlowMatchSampler | None = None, shift: float = DEFAULTS.time_shift
) -> FlowMatchSampler:
    """A sampler by name (``None``: the default), or the given instance unchanged."""
    if isinstance(sampler, FlowMatchSampler):
        return sampler
    name = DEFAULTS.sampler if sampler is None else sampler
    if name not in SAMPLERS:
        raise SamplerError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name](shift=shift)


__all__ = [
    "DEFAULTS",
    "SAMPLERS",
    "AdamsBashforthSampler",
    "EulerSampler",
    "FlowMatchSampler",
    "HeunSampler",
    "SamplingDefaults",
    "StepCache",
    "get_sampler",
    "noise",
]
