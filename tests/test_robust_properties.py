"""Property tests on the public pipeline API and the CLI arguments: any input gives a correct
result or a CheersError (exit code 2 on the command line), never another exception.

Values mix valid ones (so that accepted calls are generated often and their results checked)
with near misses: wrong types, NaN, infinities, negatives, huge ints, special-token text. Runs
are kept short (at most 3 denoising steps, 4 new tokens) on the embedded tiny model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cheers import loading
from cheers.cli import main
from cheers.errors import CheersError
from cheers.pipeline import CheersPipeline

MODEL = Path(__file__).resolve().parents[1] / "src" / "cheers" / "default_model"
SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

JUNK = st.sampled_from(
    [None, "", "4", "x", b"x", [], [1], {}, object(), True, -1, 0, 2**70, -(2**70), 1.5,
     float("nan"), float("inf"), float("-inf"), -0.0]
)  # fmt: skip
SPECIAL = st.sampled_from(
    ["<|im_end|><|im_start|>assistant\n", "<image>", "<im_start><image><im_end>", "<no_mean>", ""]
)
TEXT = st.lists(st.text(max_size=6) | SPECIAL, min_size=1, max_size=3).map("".join)
PROMPTS = TEXT | st.lists(TEXT, min_size=1, max_size=2) | JUNK


@pytest.fixture(scope="module")
def pipe() -> CheersPipeline:
    return CheersPipeline.from_pretrained(MODEL)


def _maybe(valid: st.SearchStrategy) -> st.SearchStrategy:
    return valid | JUNK


IMAGE_KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "num_inference_steps": _maybe(st.integers(-1, 3)),
        "guidance_scale": _maybe(st.floats(-2, 12) | st.none()),
        "time_shift": _maybe(st.floats(-1, 3)),
        "sampler": _maybe(st.sampled_from(["euler", "heun", "ab2", "dpm"])),
        "num_images_per_prompt": _maybe(st.integers(0, 2)),
        "generator": _maybe(st.integers(0, 2**64 + 1)),
        "output_type": _maybe(st.sampled_from(["pil", "np", "pt", "latent", "PIL"])),
        "guidance_interval": _maybe(st.tuples(st.floats(-0.5, 1.5), st.floats(-0.5, 1.5))),
        "negative_prompt": TEXT | JUNK,
    },
)


@SETTINGS
@given(prompt=PROMPTS, kwargs=IMAGE_KWARGS)
def test_text_to_image_gives_images_or_a_cheers_error(pipe, prompt, kwargs):
    kwargs.setdefault("num_inference_steps", 2)
    try:
        out = pipe(prompt, **kwargs)
    except CheersError as err:
        assert str(err)
        return
    prompts = [prompt] if isinstance(prompt, str) else prompt
    n = len(prompts) * kwargs.get("num_images_per_prompt", 1)
    r, g = pipe.resolution, pipe.model.config.grid_size
    assert out.latents.shape == (n, pipe.model.config.latent_channels, g, g)
    assert bool(torch.isfinite(out.latents).all())
    kind = kwargs.get("output_type", "pil")
    if kind == "pil":
        assert [im.size for im in out.images] == [(r, r)] * n
    elif kind == "np":
        assert out.images.shape == (n, r, r, 3) and 0 <= out.images.min() <= out.images.max() <= 1
    elif kind == "pt":
        assert out.images.shape == (n, 3, r, r)


IMAGE = np.zeros((8, 8, 3), np.uint8)
TEXT_KWARGS = st.fixed_dictionaries(
    {},
    optional={
        "max_new_tokens": _maybe(st.integers(-1, 4)),
        "temperature": _maybe(st.floats(-1, 2)),
        "top_p": _maybe(st.floats(-0.5, 1.5)),
        "generator": _maybe(st.integers(0, 2**64 + 1)),
    },
)


@SETTINGS
@given(
    question=PROMPTS,
    images=st.sampled_from([IMAGE, [IMAGE, IMAGE], [], None, "missing.png", 3]),
    kwargs=TEXT_KWARGS,
)
def test_understand_gives_text_or_a_cheers_error(pipe, question, images, kwargs):
    kwargs.setdefault("max_new_tokens", 2)
    try:
        answer = pipe.understand(images, question, **kwargs)
    except CheersError:
        return
    if isinstance(question, str):
        assert isinstance(answer, str)
    else:
        assert isinstance(answer, list) and len(answer) == len(question)
        assert all(isinstance(a, str) for a in answer)


MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["system", "user", "assistant"]) | JUNK, "content": TEXT | JUNK}
    )
    | JUNK,
    max_size=3,
)


@SETTINGS
@given(messages=TEXT | MESSAGES | JUNK, kwargs=TEXT_KWARGS)
def test_chat_gives_text_or_a_cheers_error(pipe, messages, kwargs):
    kwargs.setdefault("max_new_tokens", 2)
    try:
        answer = pipe.chat(messages, **kwargs)
    except CheersError:
        return
    assert isinstance(answer, str | list)


# -- the command line ----------------------------------------------------------------------------


def _flag(name: str, values: st.SearchStrategy) -> st.SearchStrategy:
    return values.map(lambda v: [name, str(v)])


NUMBERS = st.sampled_from(["0", "-1", "2", "3", "1.5", "nan", "inf", "-inf", "x", "", "1e400",
                           "123456789012345678901234567890"])  # fmt: skip
# Flags that are all valid (the command must then succeed) and flags that may be anything.
GOOD_GENERATE_FLAGS = st.lists(
    _flag("--steps", st.sampled_from(["2", "3"]))
    | _flag("--guidance", st.sampled_from(["0", "1", "9.5"]))
    | _flag("--shift", st.sampled_from(["0.5", "1", "3"]))
    | _flag("--seed", st.integers(0, 2**64 - 1))
    | _flag("--num-images", st.sampled_from(["1", "2"]))
    | _flag("--sampler", st.sampled_from(["euler", "ab2"])),
    max_size=4,
    unique_by=lambda flag: flag[0],
).map(lambda groups: [a for g in groups for a in g])
ANY_GENERATE_FLAGS = st.lists(
    _flag("--steps", st.sampled_from(["2", "0", "-4", "2.5", "x", "99999999999999999999"]))
    | _flag("--guidance", NUMBERS)
    | _flag("--shift", NUMBERS)
    | _flag("--seed", NUMBERS)
    | _flag("--num-images", st.sampled_from(["1", "2", "0", "-1", "x"]))
    | _flag("--sampler", st.sampled_from(["euler", "eulr"]))
    | _flag("--dtype", st.sampled_from(["float32", "int8"]))
    | _flag("--device", st.sampled_from(["cpu", "gpu", "cuda:99"]))
    | st.sampled_from([["--no-guidance"], ["--bogus"], ["-q", "x"]]),
    max_size=4,
).map(lambda groups: [a for g in groups for a in g])
TEXT_FLAGS = st.lists(
    _flag("--max-new-tokens", st.sampled_from(["1", "3", "0", "-1", "x", "1e3", "100000"]))
    | _flag("--temperature", NUMBERS)
    | _flag("--top-p", NUMBERS)
    | _flag("--seed", NUMBERS)
    | st.sampled_from([["--bogus"], ["--steps", "2"]]),
    max_size=4,
).map(lambda groups: [a for g in groups for a in g])


@pytest.fixture
def cli(monkeypatch, pipe, tmp_path, capsys):
    """Run ``main(argv)`` on the shared model; returns (exit code, stderr)."""
    monkeypatch.setattr(loading, "load_pipeline", lambda *args, **kwargs: pipe)

    def run(argv: list[str]) -> tuple[int, str]:
        code = main(argv)
        _, err = capsys.readouterr()
        return code, err

    return run


OUT_NAMES = ["pic.png", "pic.jpg", "pic.gif", "folder", "deep/er/pic.webp", "a-file", "a-file/x"]
WORDS = st.text(st.characters(codec="ascii", categories=["L"]), min_size=1, max_size=8)


@SETTINGS
@given(data=st.data())
def test_generate_arguments_exit_0_or_2_never_a_traceback(cli, tmp_path, data):
    (tmp_path / "a-file").write_text("x")
    if data.draw(st.booleans(), label="valid"):
        # Valid flags, a folder --out: the images must be written, one per prompt and seed.
        prompts = [data.draw(WORDS)]
        flags = data.draw(GOOD_GENERATE_FLAGS)
        flags += [] if "--steps" in flags else ["--steps", "2"]  # not the default 80
        out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        code, err = cli(["generate", *prompts, *flags, "--no-progress", "--out", str(out)])
        assert code == 0, err
        per_prompt = int(flags[flags.index("--num-images") + 1]) if "--num-images" in flags else 1
        assert len(list(out.glob("*.png"))) == len(prompts) * per_prompt
        return
    prompts = data.draw(st.lists(TEXT, min_size=0, max_size=2))
    out = str(tmp_path / data.draw(st.sampled_from(OUT_NAMES)))
    argv = ["generate", *prompts, *data.draw(ANY_GENERATE_FLAGS), "--no-progress", "--out", out]
    if "--steps" not in argv:
        argv += ["--steps", "2"]
    code, err = cli(argv)
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert "error:" in err


@SETTINGS
@given(data=st.data())
def test_ask_and_chat_arguments_exit_0_or_2_never_a_traceback(cli, tmp_path, data):
    image = tmp_path / "in.png"
    if not image.exists():
        Image.fromarray(IMAGE).save(image)
    command = data.draw(st.sampled_from(["ask", "chat"]))
    flags = data.draw(TEXT_FLAGS)
    if not any(a == "--max-new-tokens" for a in flags):
        flags += ["--max-new-tokens", "2"]
    question = data.draw(TEXT)
    if command == "ask":
        images = data.draw(st.sampled_from([[str(image)], [str(image)] * 2, ["missing.png"]]))
        argv = ["ask", *images, "-q", question, *flags]
    else:
        argv = ["chat", question, *flags]
    code, err = cli(argv)
    assert code in (0, 2), err
    assert "Traceback" not in err
