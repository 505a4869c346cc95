"""The ``flow_prediction`` switch: what the detail head's output means — the velocity (the
reference), a clean latent x̂1 turned into the velocity (x̂1 − x_t)/(1 − t), or the velocity plus
x_t ("skip": v = output − x_t) (docs/training.md, "Generation that listens")."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cheers.checkpoint import load_model, save_model
from cheers.config import CheersConfig
from cheers.errors import ConfigError
from cheers.model import Cheers
from cheers.samplers.base import MIN_NOISE_LEVEL, noise, velocity_from_head, velocity_from_sample


def _pair(prediction: str = "sample") -> tuple[Cheers, Cheers]:
    """Two tiny models with the same weights, predicting velocity and ``prediction``."""
    torch.manual_seed(0)
    base = CheersConfig.tiny(image_size=32, vocab_size=300)
    v = Cheers(base).init_weights(std=0.05).eval()
    with torch.no_grad():  # open the gate and the adaLN so that every part contributes
        for p in v.parameters():
            if p.abs().sum() == 0 and p.dim() > 0:
                p.normal_(0, 0.05)
    s = Cheers(dataclasses.replace(base, flow_prediction=prediction)).eval()
    s.load_state_dict(v.state_dict())
    return v, s


def test_a_perfect_sample_prediction_gives_the_flow_velocity():
    """x_t = t·x1 + (1−t)·x0, so (x1 − x_t)/(1 − t) is exactly x1 − x0 below the clamp."""
    g = torch.Generator().manual_seed(1)
    x1, x0 = torch.randn(4, 8, 3, 3, generator=g), torch.randn(4, 8, 3, 3, generator=g)
    t = torch.tensor([0.0, 0.3, 0.7, 1 - MIN_NOISE_LEVEL])[:, None, None, None]
    torch.testing.assert_close(velocity_from_sample(x1, noise(x1, x0, t), t), x1 - x0)


def test_near_t_1_the_division_is_clamped():
    x_t, x1_hat = torch.zeros(1, 2, 1, 1), torch.ones(1, 2, 1, 1)
    v = velocity_from_sample(x1_hat, x_t, torch.tensor(1.0))
    torch.testing.assert_close(v, torch.full_like(x_t, 1 / MIN_NOISE_LEVEL))


def test_a_perfect_skip_prediction_gives_the_flow_velocity():
    """The skip head's target is v + x_t; at t = 0 that is x1 itself (x_t = x0)."""
    g = torch.Generator().manual_seed(2)
    x1, x0 = torch.randn(3, 8, 2, 2, generator=g), torch.randn(3, 8, 2, 2, generator=g)
    t = torch.tensor([0.0, 0.5, 1.0])[:, None, None, None]
    x_t = noise(x1, x0, t)
    target = x1 - x0 + x_t
    torch.testing.assert_close(velocity_from_head(target, x_t, t, "skip"), x1 - x0)
    torch.testing.assert_close(target[0], x1[0])
    with pytest.raises(ValueError, match="unknown flow_prediction"):
        velocity_from_head(target, x_t, t, "noise")


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("sample", lambda head, x_t, t: (head - x_t) / (1 - t)[:, None, None, None]),
        ("skip", lambda head, x_t, t: head - x_t),
    ],
)
def test_the_model_turns_the_same_head_output_into_a_velocity(prediction, expected):
    v_model, s_model = _pair(prediction)
    p, grid = v_model.tokens_per_image, v_model.grid_size
    hidden, patches = torch.randn(2, p, 64), torch.randn(2, grid * grid, 64)
    x_t = torch.randn(2, v_model.config.latent_channels, grid, grid)
    t = torch.tensor([0.2, 0.6])
    with torch.no_grad():
        head = v_model.velocity(hidden, patches, t).velocity
        got = s_model.velocity(hidden, patches, t, x_t).velocity
    torch.testing.assert_close(got, expected(head, x_t, t))
    with pytest.raises(ValueError, match="pass x_t"):
        s_model.velocity(hidden, patches, t)


def test_the_default_is_the_reference_and_the_switch_round_trips(tmp_path):
    assert CheersConfig.official().flow_prediction == "velocity"
    _, s_model = _pair()
    save_model(s_model, tmp_path / "m")
    assert '"flow_prediction": "sample"' in (tmp_path / "m" / "config.json").read_text()
    again = load_model(tmp_path / "m", dtype=torch.float32)
    assert again.config.flow_prediction == "sample"
    # The released config does not name the field: it stays out of a velocity model's file.
    v_model, _ = _pair()
    save_model(v_model, tmp_path / "v")
    assert "flow_prediction" not in (tmp_path / "v" / "config.json").read_text()


def test_an_unknown_prediction_is_refused():
    cfg = dataclasses.replace(CheersConfig.tiny(image_size=32), flow_prediction="noise")
    with pytest.raises(ConfigError, match="flow_prediction must be one of"):
        cfg.validate()
