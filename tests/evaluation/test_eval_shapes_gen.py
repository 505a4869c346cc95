"""The generation benchmark, checked with fake pipelines whose right score is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_fakes import FakePipe, blank_drawer, oracle_drawer, parse_prompt, scale_scene
from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import evaluate_generation, to_canvas
from cheers.shapes import benchmark_prompts, detect, render, sample_scene

SIX = ["single_object", "two_object", "counting", "colors", "position", "color_attr"]


@pytest.mark.parametrize(
    ("resolution", "world", "canvas"),
    [(64, 64, 64), (128, 64, 64), (32, 32, 64), (128, 128, 128)],
    ids=["same-size", "box-down", "nearest-up", "canvas-128"],
)
def test_ground_truth_scenes_score_one_everywhere(resolution: int, world: int, canvas: int):
    pipe = FakePipe(resolution, draw=oracle_drawer(resolution, world))
    r = evaluate_generation(
        pipe, n_per_category=3, images_per_prompt=2, batch_size=4, canvas=canvas, seed=3
    )
    assert list(r["scores"]) == [*SIX, "overall"]
    assert all(v == 1.0 for v in r["scores"].values()), r["scores"]
    assert {c: v["total"] for c, v in r["counts"].items()} == dict.fromkeys(SIX, 6)
    held = r["heldout"]
    assert held["scores"] == {"colors": 1.0, "color_attr": 1.0, "overall": 1.0}
    assert held["by_pair"] == {"orange square": 1.0, "purple triangle": 1.0}
    # Every judged image is at the canvas size, one sample per image.
    assert len(r["samples"]) == (6 * 3 + 2 * 3) * 2
    assert {s.image.size for s in r["samples"]} == {(canvas, canvas)}
    assert r["timings"]["images"] == 48


def test_blank_images_score_zero():
    pipe = FakePipe(64, draw=blank_drawer(64))
    r = evaluate_generation(pipe, n_per_category=2, images_per_prompt=2)
    assert r["scores"] == {**dict.fromkeys(SIX, 0.0), "overall": 0.0}
    assert r["heldout"]["scores"]["overall"] == 0.0
    assert not any(s.correct for s in r["samples"])


def test_overall_is_the_mean_over_categories():
    # Right only for prompts naming a colour: colors and color_attr perfect, the rest mostly not
    # (blank), so overall must be the category mean, not the image mean.
    truth = oracle_drawer(64)

    def draw(prompt, noise):
        if any(c is not None for _, c in parse_prompt(prompt)[0]):
            return truth(prompt, noise)
        return Image.new("RGB", (64, 64), "white")

    r = evaluate_generation(FakePipe(64, draw=draw), n_per_category=2, heldout=False)
    assert r["scores"]["colors"] == r["scores"]["color_attr"] == 1.0
    assert r["scores"]["overall"] == pytest.approx(2 / 6)
    assert r["heldout"] is None


def test_same_seed_same_prompts_and_noise():
    texts = [p.text for p in benchmark_prompts(5, 2)]
    assert texts == [p.text for p in benchmark_prompts(5, 2)]
    assert texts != [p.text for p in benchmark_prompts(6, 2)]
    runs = [
        evaluate_generation(FakePipe(64, draw=oracle_drawer(64)), seed=s, n_per_category=2)
        for s in (5, 5, 6)
    ]
    assert [it["text"] for it in runs[0]["items"]][:12] == texts
    assert runs[0]["items"] == runs[1]["items"]
    assert runs[0]["items"] != runs[2]["items"]


def test_noise_per_prompt_does_not_depend_on_batch_size():
    def noises(batch_size: int) -> dict[str, list[torch.Tensor]]:
        pipe = FakePipe(64, draw=blank_drawer(64))
        evaluate_generation(pipe, n_per_category=2, images_per_prompt=3, batch_size=batch_size)
        out: dict[str, list[torch.Tensor]] = {}
        for call in pipe.calls:
            assert call["latents"].shape[1:] == (3, 2, 2)
            for i, p in enumerate(call["prompts"]):
                out.setdefault(p, []).append(call["latents"][3 * i : 3 * i + 3])
        return out

    one, many = noises(1), noises(12)
    assert one.keys() == many.keys()
    for prompt in one:
        for a, b in zip(one[prompt], many[prompt], strict=True):
            assert torch.equal(a, b)
    # The images of a prompt get different noise; so do different prompts.
    first = next(iter(one.values()))[0]
    assert not torch.equal(first[0], first[1])


def test_calls_carry_the_sampling_settings():
    pipe = FakePipe(64, draw=blank_drawer(64))
    evaluate_generation(
        pipe, n_per_category=1, num_inference_steps=7, guidance_scale=None, time_shift=0.7
    )
    for call in pipe.calls:
        assert call["num_inference_steps"] == 7
        assert call["guidance_scale"] is None
        assert call["time_shift"] == 0.7
        assert call["output_type"] == "pil"
        assert call["dummy_image"] is not True  # a fixed noise image, the same for every call
    assert all(np.array_equal(c["dummy_image"], pipe.calls[0]["dummy_image"]) for c in pipe.calls)
    bare = FakePipe(64, draw=blank_drawer(64))
    r = evaluate_generation(bare, n_per_category=1, heldout=False, dummy_image=False)
    assert all(c["dummy_image"] is False for c in bare.calls)
    assert r["settings"]["dummy_image"] is False


def test_to_canvas_reverses_exact_upscaling():
    scene = sample_scene(np.random.default_rng(0), 64)
    small = render(scene)
    big = render(scale_scene(scene, 128))
    assert np.array_equal(
        np.asarray(to_canvas(small.resize((128, 128), Image.Resampling.NEAREST), 64)),
        np.asarray(small),
    )
    assert [(d.shape, d.color) for d in detect(to_canvas(big, 64))] == [
        (d.shape, d.color) for d in detect(small)
    ]
    assert to_canvas(small, 64).size == (64, 64)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_per_category": 0},
        {"images_per_prompt": 0},
        {"batch_size": 0},
        {"num_inference_steps": 1},
        {"seed": -1},
        {"time_shift": 0.0},
        {"n_heldout": 0},
    ],
)
def test_bad_settings_fail_before_any_call(kwargs):
    pipe = FakePipe(64, draw=blank_drawer(64))
    with pytest.raises(CheersError):
        evaluate_generation(pipe, **kwargs)
    assert pipe.calls == []
