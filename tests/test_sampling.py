"""The time grid, the Euler integrator, guidance and token sampling, against hand values."""

from __future__ import annotations

import pytest
import torch

from cheers.pipeline.loops import sample_token
from cheers.samplers.guidance import apply_guidance
from cheers.samplers.schedule import euler_step, final_step, time_shift, timesteps


def test_time_shift_identities():
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(time_shift(t, 1.0), t)
    shifted = time_shift(t, 0.5)
    assert shifted[0] == 0 and shifted[-1] == 1
    assert bool((shifted.diff() > 0).all())
    assert bool((shifted[1:-1] < t[1:-1]).all())  # α < 1 spends more steps near noise
    assert time_shift(torch.tensor(1 / 3), 0.5).item() == pytest.approx(0.2)


def test_grid_for_generation_and_editing():
    assert torch.allclose(timesteps(4, 0.5), torch.tensor([0.0, 0.2, 0.5, 1.0]))
    edit = timesteps(80, 0.5, t0=0.1)
    assert len(edit) == 72  # the reference's int(0.9·n)
    assert edit[0].item() == pytest.approx(0.05 / 0.95)  # s(0.1) with α = 0.5
    assert edit[-1].item() == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        timesteps(1, 0.5)
    with pytest.raises(ValueError, match="raise num_inference_steps"):
        timesteps(2, 0.5, t0=0.6)


def test_constant_velocity_is_integrated_exactly():
    """Euler is exact for a constant velocity: 1 over [0, 1], plus the quirk's extra v/N."""
    times = timesteps(7, 0.5)
    x = torch.zeros(3)
    v = torch.tensor([1.0, -2.0, 0.5])
    for k in range(len(times)):
        x = euler_step(x, v, times[k], times[k + 1]) if k < len(times) - 1 else final_step(x, v, 7)
    assert torch.allclose(x, v * (1 + 1 / 7))


def test_guidance_interpolates_and_extrapolates():
    vc, vu = torch.tensor([2.0]), torch.tensor([1.0])
    assert apply_guidance(vc, vu, 1.0) == vc
    assert apply_guidance(vc, vu, 0.0) == vu
    assert apply_guidance(vc, vu, 3.0) == torch.tensor([4.0])


def test_greedy_and_nucleus_sampling():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert sample_token(logits).item() == 0
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_token(logits, 1.0, 0.7, gen) for _ in range(400)])
    # The nucleus of mass 0.7 is {0, 1}: the smallest prefix reaching it.
    assert set(draws.tolist()) == {0, 1}
    frac0 = (draws == 0).float().mean().item()
    assert frac0 == pytest.approx(0.5 / 0.8, abs=0.08)
    tiny = torch.cat([sample_token(logits, 1.0, 1e-6, gen) for _ in range(50)])
    assert set(tiny.tolist()) == {0}
    with pytest.raises(ValueError, match="top_p"):
        sample_token(logits, 1.0, 0.0)


def test_sampling_is_reproducible_with_a_generator():
    logits = torch.randn(4, 100)
    a = sample_token(logits, 0.8, 0.9, torch.Generator().manual_seed(5))
    b = sample_token(logits, 0.8, 0.9, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_a_vanishing_temperature_samples_the_argmax_instead_of_failing():
    from cheers.pipeline.loops import sample_token

    logits = torch.tensor([[-0.9, 3.2, 20.7, 2.6], [1.0, -5.0, 0.5, 7.5]])
    for temperature in (1e-46, 1e-30):
        assert sample_token(logits, temperature=temperature).tolist() == [2, 3]
