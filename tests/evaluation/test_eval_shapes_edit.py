"""The editing benchmark, checked with an oracle and an identity editor."""

from __future__ import annotations

import pytest
import torch
from eval_fakes import FakePipe, image_key, scale_scene
from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import evaluate_editing
from cheers.shapes import EDIT_KINDS, benchmark_edits, render

N = 9


def oracle(seed: int, resolution: int):
    """Returns the rendered target scene of the edit asked for, drawn at ``resolution``."""
    targets = {
        (e.instruction, image_key(render(e.source))): e.target for e in benchmark_edits(seed, N)
    }

    def edit(image, instruction, noise):
        return render(scale_scene(targets[(instruction, image_key(image))], resolution))

    return edit


def identity(resolution: int):
    return lambda image, instruction, noise: image.resize(
        (resolution, resolution), Image.Resampling.NEAREST
    )


@pytest.mark.parametrize("resolution", [64, 128])
def test_oracle_editor_scores_one(resolution: int):
    pipe = FakePipe(resolution, edit_fn=oracle(0, resolution))
    r = evaluate_editing(pipe, n=N, batch_size=4, num_inference_steps=3)
    assert r["scores"] == {**dict.fromkeys(EDIT_KINDS, 1.0), "overall": 1.0}
    assert {k: c["total"] for k, c in r["counts"].items()} == dict.fromkeys(EDIT_KINDS, 3)
    assert [len(c["instructions"]) for c in pipe.calls] == [4, 4, 1]
    assert all(s.source is not None and s.image.size == (64, 64) for s in r["samples"])


@pytest.mark.parametrize("resolution", [64, 128])
def test_identity_editor_scores_zero(resolution: int):
    pipe = FakePipe(resolution, edit_fn=identity(resolution))
    r = evaluate_editing(pipe, n=N, num_inference_steps=3)
    assert r["scores"]["recolor"] == r["scores"]["remove"] == 0.0
    assert r["scores"]["add"] == 0.0 and r["scores"]["overall"] == 0.0


def test_half_right_editor():
    # Oracle on recolor, identity elsewhere: overall is the share of recolor edits.
    right, wrong = oracle(0, 64), identity(64)

    def edit(image, instruction, noise):
        return (right if instruction.startswith("make") else wrong)(image, instruction, noise)

    r = evaluate_editing(FakePipe(64, edit_fn=edit), n=N, num_inference_steps=3)
    assert r["scores"] == {
        "recolor": 1.0,
        "remove": 0.0,
        "add": 0.0,
        "overall": pytest.approx(1 / 3),
    }


def test_edit_noise_and_settings():
    pipe = FakePipe(64, edit_fn=identity(64))
    evaluate_editing(
        pipe, n=4, batch_size=2, num_inference_steps=5, strength=0.8, guidance_scale=3.0
    )
    again = FakePipe(64, edit_fn=identity(64))
    evaluate_editing(again, n=4, batch_size=4, num_inference_steps=5, strength=0.8)
    one = torch.cat([c["latents"] for c in pipe.calls])
    assert torch.equal(one, again.calls[0]["latents"])
    assert all(c["strength"] == 0.8 and c["guidance_scale"] == 3.0 for c in pipe.calls)


@pytest.mark.parametrize(
    "kwargs",
    [{"n": 0}, {"strength": 0.0}, {"strength": 0.9, "num_inference_steps": 2}, {"seed": -2}],
)
def test_bad_settings(kwargs):
    pipe = FakePipe(64, edit_fn=identity(64))
    with pytest.raises(CheersError):
        evaluate_editing(pipe, **kwargs)
    assert pipe.calls == []
