"""The user API end to end on the public fixture's model (with the official tokenizer)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cheers import CheersPipeline
from cheers.errors import CheersError, PromptError
from parity_fixtures import fixture_dirs, load_reference


@pytest.fixture(scope="module")
def pipe(public_model_dir) -> CheersPipeline:
    return CheersPipeline.from_pretrained(public_model_dir)


def _public_reference():
    dirs = [d for d in fixture_dirs() if d.name == "public"]
    if not dirs:
        pytest.skip("public fixture missing")
    return load_reference(dirs[0])


FAST = {"num_inference_steps": 3, "guidance_scale": 2.0}


def test_text_to_image_matches_the_reference_through_the_public_api(pipe):
    meta, ref = _public_reference()
    kwargs = meta["t2i_generate_kwargs"]["cfg"]
    out = pipe.text_to_image(
        meta["spec"]["t2i_prompt"],
        num_inference_steps=kwargs["num_inference_steps"],
        guidance_scale=kwargs["cfg_scale"],
        time_shift=kwargs["alpha"],
        latents=ref["t2i.cfg.z_init"],
        dummy_image=ref["inputs.gen.dummy_image_uint8"].numpy(),
        output_type="pt",
    )
    torch.testing.assert_close(out.latents, ref["t2i.cfg.final_latent"], rtol=1e-4, atol=1e-3)
    expected = ref["t2i.cfg.image"].clamp(0, 1)
    torch.testing.assert_close(out.images, expected, rtol=1e-4, atol=1e-3)


def test_understanding_matches_the_reference_answer(pipe):
    meta, ref = _public_reference()
    image = ref["inputs.und.image_uint8"].numpy()
    question = meta["und"]["messages"][0]["content"].split("\n", 1)[1]
    n = meta["i2t_generate_kwargs"]["max_length"] + 1
    answer = pipe.understand(image, question, max_new_tokens=n)
    assert answer == pipe.tokenizer.decode(meta["i2t_output_ids"]).strip()


def test_batched_generation_equals_one_at_a_time(pipe):
    prompts = ["a red circle", "three small blue squares next to a green triangle"]
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 128, 8, 8, generator=gen)
    dummy = np.full((256, 256, 3), 128, dtype=np.uint8)
    both = pipe(prompts, latents=latents, dummy_image=dummy, output_type="pt", **FAST)
    for i, prompt in enumerate(prompts):
        one = pipe(prompt, latents=latents[i : i + 1], dummy_image=dummy, output_type="pt", **FAST)
        torch.testing.assert_close(both.latents[i : i + 1], one.latents, rtol=1e-4, atol=1e-4)


def test_seeds_images_per_prompt_and_output_types(pipe):
    a = pipe(["a", "b"], num_images_per_prompt=2, generator=7, **FAST)
    assert len(a.images) == 4 and all(isinstance(im, Image.Image) for im in a.images)
    assert a.images[0].size == (128, 128)
    b = pipe(["a", "b"], num_images_per_prompt=2, generator=7, **FAST)
    assert torch.equal(a.latents, b.latents)
    c = pipe(["a", "b"], num_images_per_prompt=2, generator=8, **FAST)
    assert not torch.equal(a.latents, c.latents)
    assert not torch.equal(a.latents[0], a.latents[1])  # per-image noise differs
    pt = pipe("a", guidance_scale=None, num_inference_steps=2, output_type="pt")
    assert pt.images.shape == (1, 3, 128, 128)
    assert float(pt.images.min()) >= 0 and float(pt.images.max()) <= 1


def test_progress_callback_counts_steps(pipe):
    seen = []
    pipe("x", num_inference_steps=4, callback=lambda k, n: seen.append((k, n)), progress=True)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_guidance_scale_one_equals_conditional_only(pipe):
    latents = torch.randn(1, 128, 8, 8, generator=torch.Generator().manual_seed(0))
    dummy = np.zeros((8, 8, 3), dtype=np.uint8)
    common = {"latents": latents, "dummy_image": dummy, "num_inference_steps": 3}
    guided = pipe("a cat", guidance_scale=1.0, **common).latents
    plain = pipe("a cat", guidance_scale=None, **common).latents
    torch.testing.assert_close(guided, plain, rtol=1e-4, atol=1e-4)


def test_edit_starts_from_the_source(pipe, monkeypatch):
    source = Image.new("RGB", (128, 128), (200, 30, 30))
    out = pipe.edit(source, "make it blue", generator=0, **FAST)
    assert len(out.images) == 1 and out.images[0].size == (128, 128)

    import cheers.pipeline.drawing as image_generation

    seen = {}
    real = image_generation.sample_latents

    def spy(model, prefix, x, sampler, *args, **kwargs):
        seen["x"], seen["times"] = x.clone(), sampler.grid.clone()
        return real(model, prefix, x, sampler, *args, **kwargs)

    monkeypatch.setattr(image_generation, "sample_latents", spy)
    noise = torch.randn(1, 128, 8, 8, generator=torch.Generator().manual_seed(1))
    pipe.edit(source, "x", strength=0.5, latents=noise, num_inference_steps=8)
    x1 = pipe.model.encode_latent(pipe.inputs.pixels([source]))
    # docs/architecture.md §10: start at t0 = 1 − strength from t0·x1 + (1 − t0)·noise,
    # int(strength·n) points
    torch.testing.assert_close(seen["x"], 0.5 * x1 + 0.5 * noise)
    assert len(seen["times"]) == 4 and seen["times"][-1] == 1.0
    with pytest.raises(CheersError, match="strength"):
        pipe.edit(source, "x", strength=0.0)
    with pytest.raises(CheersError, match="exactly one source image"):
        pipe.edit([source, source], "x")


def test_chat_and_sampling_reproducibility(pipe):
    one = pipe.chat("hello", max_new_tokens=4)
    assert isinstance(one, str)
    many = pipe.chat(["hello", [{"role": "user", "content": "hi"}]], max_new_tokens=4)
    assert isinstance(many, list) and len(many) == 2
    s1 = pipe.chat("hi", max_new_tokens=5, temperature=1.0, top_p=0.9, generator=3)
    s2 = pipe.chat("hi", max_new_tokens=5, temperature=1.0, top_p=0.9, generator=3)
    assert s1 == s2


def test_understanding_batches_and_multiple_images(pipe):
    red = Image.new("RGB", (40, 60), (255, 0, 0))
    blue = Image.new("RGB", (60, 40), (0, 0, 255))
    batch = pipe.understand([red, [red, blue]], ["what?", "compare"], max_new_tokens=3)
    assert len(batch) == 2
    assert batch[0] == pipe.understand(red, "what?", max_new_tokens=3)
    with pytest.raises(CheersError, match="one per request"):
        pipe.understand([red], ["a", "b"])


def test_save_and_reload_gives_the_same_answers(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "copy")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "copy" / name).is_file()
    again = CheersPipeline.from_pretrained(tmp_path / "copy")
    image = Image.new("RGB", (50, 50), (0, 200, 0))
    assert again.understand(image, "color?", max_new_tokens=3) == pipe.understand(
        image, "color?", max_new_tokens=3
    )
    assert json.loads((tmp_path / "copy" / "config.json").read_text())["torch_dtype"] == "float32"


def test_bad_requests_get_clear_errors(pipe):
    with pytest.raises(PromptError, match="contains an <image> placeholder"):
        pipe("draw <im_start><image><im_end>", **FAST)
    with pytest.raises(PromptError, match="empty"):
        pipe([], **FAST)
    with pytest.raises(PromptError, match="non-empty string"):
        pipe(["ok", "  "], **FAST)
    with pytest.raises(CheersError, match=r"latents have shape \(1, 4, 8, 8\)"):
        pipe("a", latents=torch.zeros(1, 4, 8, 8), **FAST)
    with pytest.raises(CheersError, match="generator must be"):
        pipe("a", generator="seed", **FAST)
    with pytest.raises(CheersError, match="output_type"):
        pipe("a", output_type="jpeg", **FAST)
    with pytest.raises(CheersError, match="num_images_per_prompt"):
        pipe("a", num_images_per_prompt=0, **FAST)
    with pytest.raises(CheersError, match="max_new_tokens"):
        pipe.chat("a", max_new_tokens=0)


def test_prompt_longer_than_the_context(pipe, monkeypatch):
    monkeypatch.setattr(pipe.model.config.text_config, "max_position_embeddings", 60)
    with pytest.raises(PromptError, match="context is 60"):
        pipe.chat("word " * 50, max_new_tokens=4)
    with pytest.raises(PromptError, match="shorten the prompt"):
        pipe("a long prompt " * 20, **FAST)


def test_unreadable_images_are_reported(pipe, tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(CheersError, match=r"nope\.png"):
        pipe.understand(str(missing), "what?")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(CheersError, match=r"broken\.png"):
        pipe.understand(str(broken), "what?")
    grey = Image.new("L", (30, 30), 100)
    assert isinstance(pipe.understand(grey, "what?", max_new_tokens=2), str)
