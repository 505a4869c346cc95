"""The generation engine through the pipeline: identities that must hold exactly or to float
rounding (not earlier outputs of this code)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cheers import CheersPipeline
from cheers.errors import CheersError
from cheers.pipeline.loops import flow_context, prefill
from cheers.samplers import StepCache, get_sampler
from cheers.sequence import left_pad


@pytest.fixture(scope="module")
def pipe(public_model_dir) -> CheersPipeline:
    return CheersPipeline.from_pretrained(public_model_dir)


def _noise(pipe, n=1, seed=0):
    cfg = pipe.model.config
    shape = (n, cfg.latent_channels, cfg.grid_size, cfg.grid_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


COMMON = {"num_inference_steps": 2, "dummy_image": False, "output_type": "latent"}


def test_velocity_seam_shares_the_image_path_between_branches(pipe):
    """One image-path pass for both branches equals the reference's pass on cat([x, x])."""
    model = pipe.model
    ids = [pipe.inputs.generation_ids("a red circle")]
    seqs = pipe.inputs.sequences([*ids, pipe.inputs.uncond_ids(ids[0])], [[], []], [None, None])
    prefix = prefill(model, left_pad(seqs), room=model.tokens_per_image)
    ctx = flow_context(model, prefix, 1, guidance_scale=3.0)
    x, t = _noise(pipe), torch.tensor(0.3)
    out = model.flow_velocity(x, t, ctx)
    image = model.image_tokens(torch.cat([x, x]))
    hidden = model.transformer(image.tokens, ctx.positions, ctx.mask, prefix.cache, ctx.start)
    v = model.velocity(hidden, image.patch_embeds, t.expand(2)).velocity
    torch.testing.assert_close(out.cond, v[:1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.uncond, v[1:], rtol=1e-5, atol=1e-5)
    guided = v[1:] + 3.0 * (v[:1] - v[1:])
    torch.testing.assert_close(out.velocity, guided, rtol=1e-4, atol=1e-4)


def test_guidance_off_everywhere_equals_no_guidance(pipe):
    """An interval that holds no evaluation time (grid 0, 1) runs the conditional branch
    alone at every step; a negative prompt equal to the prompt makes v_u = v_c."""
    x = _noise(pipe)
    plain = pipe("a cat", guidance_scale=None, latents=x, **COMMON).latents
    outside = pipe("a cat", guidance_scale=5.0, guidance_interval=(0.4, 0.6), latents=x, **COMMON)
    torch.testing.assert_close(outside.latents, plain, rtol=1e-5, atol=1e-5)
    same = pipe("a cat", guidance_scale=5.0, negative_prompt="a cat", latents=x, **COMMON)
    torch.testing.assert_close(same.latents, plain, rtol=1e-4, atol=1e-4)
    # A different negative prompt is neither the conditional row nor the <no_mean> row.
    zebra = "a long sentence about zebras"
    other = pipe("a cat", guidance_scale=5.0, negative_prompt=zebra, latents=x, **COMMON)
    default = pipe("a cat", guidance_scale=5.0, latents=x, **COMMON)
    assert (other.latents - plain).abs().max() > 1e-2
    assert (other.latents - default.latents).abs().max() > 1e-2


def test_callback_on_step_end_reads_and_replaces_latents(pipe):
    seen = []

    def cb(p, step, t, tensors):
        seen.append((step, float(t)))
        assert p is pipe
        return {"latents": torch.zeros_like(tensors["latents"])} if step == 1 else None

    out = pipe("a cat", latents=_noise(pipe), callback_on_step_end=cb, **COMMON)
    assert [s for s, _ in seen] == [0, 1] and seen[-1][1] == 1.0
    assert torch.count_nonzero(out.latents) == 0


def test_output_types_generator_lists_and_return_dict(pipe):
    r = pipe.resolution
    kw = {"num_inference_steps": 2, "guidance_scale": None, "dummy_image": False}
    both = pipe("a cat", num_images_per_prompt=2, generator=[1, 2], output_type="np", **kw)
    assert isinstance(both.images, np.ndarray) and both.images.shape == (2, r, r, 3)
    (second,) = pipe("a cat", generator=2, output_type="pt", return_dict=False, **kw)
    alone = pipe("a cat", generator=2, output_type="latent", **kw).latents
    torch.testing.assert_close(both.latents[1:], alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(both.images[1]).permute(2, 0, 1), second[0])
    with pytest.raises(CheersError, match="one generator"):
        pipe("a cat", generator=[1, 2, 3], num_images_per_prompt=2, **kw)
    with pytest.raises(CheersError, match="unknown sampler"):
        pipe("a cat", sampler="ddim", **kw)


def test_samplers_and_step_cache_run_through_the_pipeline(pipe):
    x = _noise(pipe)
    calls = []
    kw = {"latents": x, "callback": lambda k, n: calls.append(n), **COMMON}
    kw["num_inference_steps"] = 4
    for name, evaluations in (("heun", 6), ("ab2", 3)):
        calls.clear()
        out = pipe("a cat", sampler=get_sampler(name), **kw)
        assert calls[-1] == evaluations and torch.isfinite(out.latents).all()
    cache = StepCache(interval=2, warmup=2)
    pipe("a cat", step_cache=cache, **kw)
    assert cache.calls == 4 and cache.evaluations == 3


def test_streamed_text_adds_up_to_the_answer(pipe):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    pieces: list[str] = []
    answer = pipe.understand(
        image, "What is this?", max_new_tokens=6, stream=lambda p: pieces.append(p[0])
    )
    assert 1 <= len(pieces) <= 6
    assert "".join(pieces).strip() == answer
