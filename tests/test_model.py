"""Model behaviour checked against identities: caching, padding, masks, frozen statistics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cheers.config import CheersConfig
from cheers.errors import PromptError
from cheers.model import Cheers
from cheers.sequence import (
    CAUSAL,
    appended_block_mask,
    left_pad,
    omni_mask,
    splice,
)


@pytest.fixture(scope="module")
def model() -> Cheers:
    torch.manual_seed(0)
    return Cheers(CheersConfig.tiny(image_size=64, vocab_size=300)).eval()


def test_omni_mask_hand_computed():
    block = torch.tensor([[CAUSAL, 0, 0, CAUSAL, 1, 1]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],  # image 0 sees its whole block
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(omni_mask(block, valid)[0], expected)
    padded = omni_mask(torch.tensor([[CAUSAL, CAUSAL, 0]]), torch.tensor([[False, True, True]]))
    assert torch.equal(
        padded[0], torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool)
    )  # padding sees padding only, real tokens never see padding


def test_splice_places_image_tokens_and_checks_counts():
    embed = torch.arange(5.0)[:, None].repeat(1, 2)
    image = torch.full((3, 2), -1.0)
    out, block = splice([7, 8, -200, 9, 10], embed, [image], image_token_id=99)
    assert out[:, 0].tolist() == [0, 1, -1, -1, -1, 3, 4]
    assert block.tolist() == [CAUSAL, CAUSAL, 0, 0, 0, CAUSAL, CAUSAL]
    with pytest.raises(PromptError, match="1 image placeholder"):
        splice([7, 99, 8], embed[:3], [], image_token_id=99)


def test_kv_cached_decoding_equals_full_forward(model):
    ids = torch.randint(0, 300, (2, 9))
    embeds = model.embed(ids)
    positions = torch.arange(9).expand(2, -1)
    causal = torch.ones(9, 9, dtype=torch.bool).tril().expand(2, -1, -1)
    with torch.no_grad():
        full = model.transformer(embeds, positions, causal)
        cache = model.new_kv_cache(2, 9)
        steps = [model.transformer(embeds[:, :5], positions[:, :5], causal[:, :5, :5], cache, 0)]
        for t in range(5, 9):
            mask = torch.ones(2, 1, t + 1, dtype=torch.bool)
            steps.append(
                model.transformer(embeds[:, t : t + 1], positions[:, t : t + 1], mask, cache, t)
            )
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_left_padding_does_not_change_a_sequence(model):
    short = torch.randint(0, 300, (4,))
    long = torch.randint(0, 300, (11,))
    image = torch.randn(model.tokens_per_image, 64)
    with torch.no_grad():
        seqs = [splice(s, model.embed(s), [], 0) for s in (short, long)]
        alone = left_pad([seqs[0]])
        both = left_pad(seqs)
        h_alone = model.transformer(
            alone.embeds, alone.positions, omni_mask(alone.block, alone.valid)
        )
        h_both = model.transformer(both.embeds, both.positions, omni_mask(both.block, both.valid))
        torch.testing.assert_close(h_both[0, -4:], h_alone[0], rtol=1e-5, atol=1e-5)
        # Appended image tokens (as during sampling) see the same thing in both layouts.
        outs = []
        for batch, row in ((alone, 0), (both, 0)):
            cache = model.new_kv_cache(batch.valid.shape[0], batch.valid.shape[1] + len(image))
            model.transformer(
                batch.embeds, batch.positions, omni_mask(batch.block, batch.valid), cache
            )
            pos = batch.lengths[:, None] + torch.arange(len(image))
            new = image.expand(batch.valid.shape[0], -1, -1)
            mask = appended_block_mask(batch.valid, len(image))
            outs.append(model.transformer(new, pos, mask, cache, batch.valid.shape[1])[row])
        torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)


def test_latent_statistics_never_update(model):
    model.train()
    bn = model.model.vae_model.bn
    bn.running_mean.normal_()
    before = bn.running_mean.clone()
    pixels = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        together = model.encode_latent(pixels)
        alone = model.encode_latent(pixels[:1])
    model.eval()
    assert torch.equal(bn.running_mean, before)
    torch.testing.assert_close(together[:1], alone, rtol=1e-5, atol=1e-5)


def test_latent_round_trip_through_normalisation(model):
    vae = model.model.vae_model
    vae.bn.running_mean.uniform_(-1, 1)
    vae.bn.running_var.uniform_(0.5, 2)
    z = torch.randn(2, model.config.vae_encoder_config.z_channels, 8, 8)
    from cheers.layouts import latent_space_to_depth
    from cheers.modules.vae import _denormalize, _normalize

    x = latent_space_to_depth(z)
    manual = (x - vae.bn.running_mean[None, :, None, None]) / torch.sqrt(
        vae.bn.running_var[None, :, None, None] + 1e-4
    )
    torch.testing.assert_close(_normalize(x, vae.bn), manual)
    torch.testing.assert_close(_denormalize(_normalize(x, vae.bn), vae.bn), x)


def test_position_table_resizing(model):
    embeddings = model.model.vision_representation.embeddings
    table = embeddings.position_embedding.weight
    assert embeddings.position_table(4, 4) is table
    # The reference resizes with bicubic interpolation; to the same size that is the identity,
    # which is why resizing whenever the grid differs changes nothing at parity.
    grid = table.detach().reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    same = F.interpolate(grid, size=(4, 4), mode="bicubic", align_corners=False)
    torch.testing.assert_close(same, grid)
    bigger = embeddings.position_table(6, 6)
    assert bigger.shape == (36, table.shape[1])
    with torch.no_grad():
        tokens = model.understanding_tokens(torch.rand(1, 3, 96, 96))
    assert tokens.shape == (1, 9, 64)


def test_tied_head_shares_storage_and_untied_does_not():
    tied = Cheers(CheersConfig.tiny(vocab_size=100))
    assert tied.lm_head.weight is tied.model.language_model.embed_tokens.weight
    cfg = CheersConfig.tiny(vocab_size=100)
    cfg.text_config.tie_word_embeddings = False
    untied = Cheers(cfg)
    assert untied.lm_head.weight is not untied.model.language_model.embed_tokens.weight


def test_velocity_shape_and_gate_closed_identity(model):
    """With the gate's last layer at zero (as initialised in the real model) the detail input
    adds nothing: the velocity must not depend on the patch embeddings."""
    p, grid = model.tokens_per_image, model.grid_size
    hidden = torch.randn(2, p, 64)
    t = torch.tensor([0.3, 0.9])
    gate = model.model.hi_gate.gate[2]
    saved = gate.weight.detach().clone(), gate.bias.detach().clone()
    with torch.no_grad():
        gate.weight.zero_()
        gate.bias.zero_()
        a = model.velocity(hidden, torch.randn(2, grid * grid, 64), t).velocity
        b = model.velocity(hidden, torch.randn(2, grid * grid, 64), t).velocity
        gate.weight.copy_(saved[0])
        gate.bias.copy_(saved[1])
        c = model.velocity(hidden, torch.randn(2, grid * grid, 64), t).velocity
    assert a.shape == (2, model.config.latent_channels, grid, grid)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
