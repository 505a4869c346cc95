"""Measuring and resetting the scale of the image tokens (cheers.training.token_scale)."""

from __future__ import annotations

import pytest
import torch

from cheers.config import CheersConfig
from cheers.model import Cheers
from cheers.training.token_scale import (
    image_token_norm,
    rescale_image_tokens,
    word_embedding_norm,
)


@pytest.fixture
def model() -> Cheers:
    torch.manual_seed(0)
    return Cheers(CheersConfig.tiny(image_size=32)).eval()


def test_rescaling_multiplies_every_image_token_exactly(model):
    latent = torch.randn(
        2, model.config.latent_channels, model.config.grid_size, model.config.grid_size
    )
    before = model.image_tokens(latent).tokens
    rescale_image_tokens(model, 0.125)
    after = model.image_tokens(latent).tokens
    torch.testing.assert_close(after, 0.125 * before, rtol=1e-6, atol=1e-7)


def test_measured_norm_follows_the_factor(model):
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    before = image_token_norm(model, pixels)
    assert image_token_norm(model, pixels) == before  # the noise is fixed by the seed
    rescale_image_tokens(model, 4.0)
    assert image_token_norm(model, pixels) == pytest.approx(4.0 * before, rel=1e-5)


def test_word_embedding_norm_by_hand(model):
    table = model.model.language_model.embed_tokens.weight
    with torch.no_grad():
        table.zero_()
        table[:, 0], table[:, 1] = 3.0, 4.0  # every row has norm 5
    assert word_embedding_norm(model) == pytest.approx(5.0)


def test_bad_arguments_are_named(model):
    with pytest.raises(ValueError, match="factor must be positive"):
        rescale_image_tokens(model, 0.0)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        image_token_norm(model, torch.rand(1, 3, 32, 32), t=1.5)
