"""Samplers against exact solutions: fields each method integrates without error, orders of
convergence, the reference grid, step caching and guidance intervals."""

from __future__ import annotations

import math

import pytest
import torch

from cheers.errors import CheersError, SamplerError
from cheers.samplers import DEFAULTS, SAMPLERS, StepCache, get_sampler, noise
from cheers.samplers.schedule import timesteps


def integrate(sampler, velocity, x, steps: int, t0: float = 0.0, cache=None):
    sampler.set_timesteps(steps, t0=t0)
    for t in sampler.timesteps:
        v = velocity(x, float(t)) if cache is None else cache(float(t), velocity, x, float(t))
        x = sampler.step(v, t, x)
    return x


def test_defaults_are_the_authors():
    assert (DEFAULTS.num_inference_steps, DEFAULTS.guidance_scale, DEFAULTS.time_shift) == (
        80,
        9.5,
        0.5,
    )
    assert DEFAULTS.sampler == "euler"


def test_forward_process_endpoints_and_midpoint():
    x1, x0 = torch.tensor([2.0]), torch.tensor([-4.0])
    assert noise(x1, x0, 1.0) == x1 and noise(x1, x0, 0.0) == x0
    assert noise(x1, x0, 0.25) == torch.tensor([-2.5])


def test_euler_is_the_reference_grid_and_final_step():
    s = get_sampler("euler", shift=0.5)
    s.set_timesteps(4)
    assert torch.allclose(s.timesteps, torch.tensor([0.0, 0.2, 0.5, 1.0]))
    assert s.num_evaluations == 4
    # Constant velocity: exact over [0, 1] plus the quirk's extra v/N (spec §10).
    v = torch.tensor([1.0, -2.0])
    assert torch.allclose(integrate(s, lambda x, t: v, torch.zeros(2), 7), v * (1 + 1 / 7))


def test_edit_grid_starts_at_t0():
    s = get_sampler("heun")
    s.set_timesteps(80, t0=0.1)
    assert torch.equal(s.grid, timesteps(80, 0.5, t0=0.1))


def test_heun_integrates_a_velocity_linear_in_time_exactly():
    """dx/dt = a + b·t from 0 to 1 gives x(1) = x(0) + a + b/2; the trapezoid rule is exact."""
    a, b = torch.tensor([0.3, -1.0]), torch.tensor([2.0, 0.5])
    x = integrate(get_sampler("heun"), lambda x, t: a + b * t, torch.ones(2), 3)
    torch.testing.assert_close(x, 1 + a + b / 2)


@pytest.mark.parametrize("name", ["euler", "heun", "ab2"])
@pytest.mark.parametrize("shift", [1.0, 0.5])
def test_order_of_convergence_on_a_gaussian_flow(name, shift):
    """Data x1 ~ N(μ, s²), noise N(0, 1): the exact flow maps x(0) = z to x(1) = μ + s·z with
    v(x, t) = μ + σ'_t·(x − tμ)/σ_t, σ_t² = t²s² + (1−t)². Doubling the grid divides the error
    by about 2^order (Euler's v/N quirk is itself first order)."""
    mu, var, z = 2.0, 0.09, 1.3

    def field(x, t):
        sigma = math.sqrt(t * t * var + (1 - t) ** 2)
        return mu + (t * var - (1 - t)) / sigma * (x - t * mu) / sigma

    def error(n):
        sampler = get_sampler(name, shift=shift)
        sampler.set_timesteps(n)
        x = torch.tensor([z], dtype=torch.float64)
        for t in sampler.timesteps:
            x = sampler.step(field(x, float(t)), t, x)
        return abs(float(x) - (mu + math.sqrt(var) * z))

    order = SAMPLERS[name].order
    errors = [error(n) for n in (41, 81, 161)]
    rates = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(order - 0.3 < r < order + 0.5 for r in rates), rates


def test_evaluation_counts():
    counts = {}
    for name in SAMPLERS:
        s = get_sampler(name)
        s.set_timesteps(10)
        counts[name] = s.num_evaluations
    assert counts == {"euler": 10, "heun": 18, "ab2": 9}


def test_step_cache_extrapolates_linear_velocity_exactly():
    """A velocity linear in t is predicted without error by first-order extrapolation, so the
    cached run equals the full one with fewer model calls."""
    calls = []

    def field(x, t):
        calls.append(t)
        return torch.full_like(x, 1.0 + 2.0 * t)

    full = integrate(get_sampler("euler"), field, torch.zeros(1), 12)
    n_full = len(calls)
    calls.clear()
    cache = StepCache(interval=3, order=1, warmup=2)
    cached = integrate(get_sampler("euler"), field, torch.zeros(1), 12, cache=cache)
    torch.testing.assert_close(cached, full)
    assert cache.evaluations == len(calls) < n_full


def test_bad_sampler_settings_are_named():
    with pytest.raises(SamplerError, match=r"unknown sampler 'ddim'.*euler"):
        get_sampler("ddim")
    with pytest.raises(CheersError, match="time shift"):
        get_sampler("euler", shift=0)
    with pytest.raises(SamplerError, match="at least 2"):
        get_sampler("euler").set_timesteps(1)
    s = get_sampler("euler")
    s.set_timesteps(2)
    x = torch.zeros(1)
    for t in s.timesteps:
        x = s.step(x, t, x)
    with pytest.raises(SamplerError, match="set_timesteps"):
        s.step(x, 1.0, x)
    with pytest.raises(SamplerError, match="interval"):
        StepCache(interval=0)
