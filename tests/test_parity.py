"""Parity with the authors' reference implementation, on every fixture found.

Each fixture is a random Cheers checkpoint in the released format with the reference's inputs
and outputs (see ``shared/fixtures/README.md``). Nothing about a fixture's sizes is assumed:
everything is read from its config and reference.json. Tolerances are the README's.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from cheers.checkpoint import load_model
from cheers.image import preprocess_understanding
from cheers.pipeline.loops import (
    DecodeState,
    FlowTrace,
    decode_from,
    feed_token,
    prefill,
    sample_latents,
    start_decoding,
)
from cheers.samplers.schedule import timesteps
from cheers.sequence import (
    IMAGE_PLACEHOLDER,
    appended_block_mask,
    left_pad,
    omni_mask,
    splice,
    unconditional_ids,
)
from parity_fixtures import fixture_params, load_reference, materialize_fixture_model

TOL = {"rtol": 1e-4, "atol": 1e-4}
GUIDED_TOL = {"rtol": 1e-4, "atol": 1e-3}

pytestmark = pytest.mark.parametrize("fixture", fixture_params())


@cache
def _setup(fixture: Path, workdir: Path):
    folder = materialize_fixture_model(fixture, workdir / fixture.name, with_tokenizer=False)
    model = load_model(folder)
    meta, ref = load_reference(fixture)
    return model, meta, ref


@pytest.fixture
def setup(fixture, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "parity_models"
    return _setup(fixture, root)


def assert_close(ref: dict, name: str, actual: torch.Tensor, tol=TOL) -> None:
    expected = ref[name]
    actual = actual.detach().float().reshape(expected.shape)
    torch.testing.assert_close(actual, expected.float(), **tol, msg=lambda m: f"{name}: {m}")


def _active(meta_ref, logits: torch.Tensor) -> torch.Tensor:
    return logits[..., meta_ref["inputs.active_vocab_ids"]]


def _sequence(model, ids: torch.Tensor, images=(), prefix=None):
    embeds = model.embed(ids.clamp(min=0))
    return splice(ids, embeds, list(images), IMAGE_PLACEHOLDER, causal_prefix=prefix)


@torch.inference_mode()
def test_understanding_forward(setup):
    model, _, ref = setup
    resolution = model.config.image_size
    pixels = preprocess_understanding(ref["inputs.und.image_uint8"].numpy(), resolution)
    assert torch.equal(pixels, ref["inputs.und.pixel_values"][0])

    latent = model.encode_latent(ref["inputs.und.pixel_values"])
    assert_close(ref, "und.vae_latent", latent)
    image = model.image_tokens(latent)
    assert_close(ref, "und.pixel_hat", image.pixel_hat)
    assert_close(ref, "und.vit_last_hidden", image.vit_hidden)
    assert_close(ref, "und.und_proj", image.tokens)

    batch = left_pad([_sequence(model, ref["inputs.und.input_ids"][0], [image.tokens[0]])])
    assert_close(ref, "und.lm_inputs_embeds", batch.embeds)
    mask = omni_mask(batch.block, batch.valid)[0]
    assert torch.equal(mask.to(torch.int8), ref["und.lm_attention_mask"])
    hidden = model.transformer(batch.embeds, batch.positions, mask[None])
    assert_close(ref, "und.last_hidden", hidden)
    assert_close(ref, "und.logits_active", _active(ref, model.logits(hidden)))


def _t2i_prefix(model, ref, guided: bool, room: int):
    dummy = model.understanding_tokens(ref["inputs.gen.pixel_values"])[0]
    keys = ["inputs.gen.input_ids"] + (["inputs.gen.uncond_input_ids"] if guided else [])
    batch = left_pad([_sequence(model, ref[k][0], prefix=dummy) for k in keys])
    return prefill(model, batch, room)


@torch.inference_mode()
def test_unconditional_ids(setup):
    _, meta, ref = setup
    ids = meta["special_ids"]
    keep = {ids["IM_START_ID"], ids["IM_END_ID"], ids["IMAGE_TOKEN_INDEX"]}
    cond = ref["inputs.gen.input_ids"][0].tolist()
    assert (
        unconditional_ids(cond, keep, ids["NO_MEAN_ID"])
        == ref["inputs.gen.uncond_input_ids"][0].tolist()
    )


@torch.inference_mode()
def test_text_to_image_prefix(setup):
    model, _, ref = setup
    prefix = _t2i_prefix(model, ref, guided=True, room=0)
    for row, kind in enumerate(("cond", "uncond")):
        assert_close(ref, f"ctx.{kind}.lm_inputs_embeds", prefix.batch.embeds[row])
        mask = omni_mask(prefix.batch.block, prefix.batch.valid)[row]
        assert torch.equal(mask.to(torch.int8), ref[f"ctx.{kind}.lm_attention_mask"])
        assert_close(ref, f"ctx.{kind}.last_hidden", prefix.hidden[row])
        logits = model.logits(prefix.hidden[row, -1])
        assert_close(ref, f"ctx.{kind}.logits_last_active", _active(ref, logits))


@torch.inference_mode()
def test_velocity_and_head_intermediates(setup):
    model, _, ref = setup
    p = model.tokens_per_image
    prefix = _t2i_prefix(model, ref, guided=True, room=p)
    x_t = ref["inputs.drift.x_t"]
    for i, t in enumerate(ref["inputs.drift.t"]):
        image = model.image_tokens(torch.cat([x_t, x_t]))
        positions = prefix.batch.lengths[:, None] + torch.arange(p)

        mask = appended_block_mask(prefix.batch.valid, p)
        hidden = model.transformer(image.tokens, positions, mask, prefix.cache, prefix.length)
        out = model.velocity(hidden, image.patch_embeds, t.expand(2))
        for row, kind in enumerate(("cond", "uncond")):
            assert_close(ref, f"drift.t{i}.{kind}.drift", out.velocity[row])
        c = f"drift.t{i}.cond."
        assert_close(ref, c + "pixel", image.pixel_hat[0])
        assert_close(ref, c + "vit_last_hidden", image.vit_hidden[0])
        assert_close(ref, c + "und_proj", image.tokens[0])
        assert_close(ref, c + "lm_last_hidden", hidden[0])
        assert_close(ref, c + "t_emb_1", out.t_emb_1[0])
        assert_close(ref, c + "t_emb_2", out.t_emb_2[0])
        assert_close(ref, c + "gen_proj_out", out.gen_proj_out[0])
        assert_close(ref, c + "hi_gate_low", out.hi_gate_low[0])
        assert_close(ref, c + "hi_gate_high", image.patch_embeds[0])
        assert_close(ref, c + "hi_gate_out", out.hi_gate_out[0])
        assert_close(ref, c + "hi_proj_out", out.hi_proj_out[0])


@pytest.mark.parametrize("mode", ["cfg", "nocfg"])
@torch.inference_mode()
def test_text_to_image_sampling(setup, mode):
    model, meta, ref = setup
    kwargs = meta["t2i_generate_kwargs"][mode]
    special = meta["special_ids"]
    scale = kwargs["cfg_scale"]
    guided = scale is not None
    tol = GUIDED_TOL if guided else TOL
    p = model.tokens_per_image
    # The reference emits max_length + 1 tokens, the image counting as P of them.
    n_text = kwargs["max_length"] + 1 - p
    prefix = _t2i_prefix(model, ref, guided, room=p + 1 + n_text)
    times = timesteps(kwargs["num_inference_steps"], kwargs["alpha"])
    trace = FlowTrace()
    pre = f"t2i.{mode}."
    latent = sample_latents(model, prefix, ref[pre + "z_init"], times, scale, trace)

    assert_close(ref, pre + "step_t", torch.stack(trace.t), TOL)
    assert_close(ref, pre + "euler_dt", times.diff(), TOL)
    assert_close(ref, pre + "step_x_t", torch.cat(trace.x_t), tol)
    assert_close(ref, pre + "step_drift_cond", torch.cat(trace.v_cond), tol)
    if guided:
        assert_close(ref, pre + "step_drift_uncond", torch.cat(trace.v_uncond), tol)
    assert_close(ref, pre + "euler_drift", torch.cat(trace.v[:-1]), tol)
    assert_close(ref, pre + "final_latent", latent, tol)
    assert_close(ref, pre + "image", model.decode_latent(latent), tol)
    assert int(ref[pre + "n_images"]) == 1

    # Text continues after the image from the cache of the last velocity evaluation.
    cache = prefix.cache.select(torch.tensor([0]))
    valid = torch.cat([prefix.batch.valid[:1], torch.ones(1, p, dtype=torch.bool)], dim=1)
    position = prefix.batch.lengths[:1] + p
    im_end = torch.tensor([special["IM_END_ID"]])
    logits, valid = feed_token(model, cache, valid, im_end, position, prefix.length + p)
    text = decode_from(
        model,
        DecodeState.begin(cache, valid, position + 1, prefix.length + p + 1, logits),
        n_text,
        eos_id=special["EOS_TOKEN_ID"],
        pad_id=special["pad"],
    )
    ids = [special["IM_END_ID"], *text.tokens[0].tolist()]
    assert ids == ref[pre + "output_ids"][0].tolist()
    step_logits = torch.stack([lg[0] for lg in text.logits])
    assert_close(ref, pre + "text_step_logits_active", _active(ref, step_logits))


@torch.inference_mode()
def test_image_to_text_greedy(setup):
    model, meta, ref = setup
    special = meta["special_ids"]
    tokens = model.understanding_tokens(ref["inputs.und.pixel_values"])
    batch = left_pad([_sequence(model, ref["inputs.und.input_ids"][0], [tokens[0]])])
    n_new = meta["i2t_generate_kwargs"]["max_length"] + 1
    _, state = start_decoding(model, batch, room=n_new)
    out = decode_from(
        model,
        state,
        n_new,
        eos_id=special["EOS_TOKEN_ID"],
        pad_id=special["pad"],
    )
    expected = ref["i2t.output_ids"][0].tolist()
    assert out.tokens[0].tolist() == expected
    step_logits = torch.stack([lg[0] for lg in out.logits])
    assert_close(ref, "i2t.step_logits_active", _active(ref, step_logits))
    assert int(ref["i2t.n_images"]) == 0
