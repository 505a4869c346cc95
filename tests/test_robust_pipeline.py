"""The pipeline refuses bad requests before any model work, with a CheersError naming the
argument, and never answers silently from broken numbers (issue 15; docs/robustness.md)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from cheers import CheersPipeline
from cheers.errors import (
    CheckpointError,
    CheersError,
    ContextLengthError,
    NumericalError,
    PromptError,
    SamplerError,
)
from cheers.pipeline.arguments import MAX_NEW_TOKENS
from cheers.pipeline.conversation import Conversation

MODEL = "src/cheers/default_model"
IMAGE = np.zeros((8, 8, 3), np.uint8)


@pytest.fixture(scope="module")
def pipe() -> CheersPipeline:
    return CheersPipeline.from_pretrained(MODEL)


@pytest.fixture
def no_model_work(pipe, monkeypatch):
    """Fail the test if the language model runs: the request must be refused before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model ran before the bad argument was caught")

    monkeypatch.setattr(pipe.model, "transformer", refuse)
    return pipe


# (call, error type, fragment of the message): each refused before the transformer runs.
SAMPLING = {
    "time_shift 0": (lambda p: p("a", num_inference_steps=2, time_shift=0), "time_shift"),
    "time_shift nan": (lambda p: p("a", time_shift=float("nan")), "time_shift"),
    "time_shift inf": (lambda p: p("a", time_shift=float("inf")), "time_shift"),
    "time_shift < 0": (lambda p: p("a", time_shift=-0.5), "time_shift"),
    "guidance < 0": (lambda p: p("a", guidance_scale=-1.0), "guidance_scale must be ≥ 0"),
    "guidance nan": (lambda p: p("a", guidance_scale=float("nan")), "guidance_scale"),
    "guidance str": (lambda p: p("a", guidance_scale="9.5"), "guidance_scale"),
    "sampler list": (lambda p: p("a", sampler=["euler"]), "sampler must be"),
    "sampler typo": (lambda p: p("a", sampler="eulr"), "unknown sampler 'eulr'"),
    "interval str": (lambda p: p("a", guidance_interval="ab"), "guidance_interval"),
    "interval order": (lambda p: p("a", guidance_interval=(0.9, 0.1)), "guidance_interval"),
    "callback": (lambda p: p("a", callback=3), "callback must be a function"),
    "step-end callback": (lambda p: p("a", callback_on_step_end="x"), "callback_on_step_end"),
    "step cache": (lambda p: p("a", step_cache=3), "step_cache must be"),
    "steps huge": (lambda p: p("a", num_inference_steps=10**20), "[2, 10000]"),
    "steps 2.5": (lambda p: p("a", num_inference_steps=2.5), "num_inference_steps"),
    "steps '4'": (lambda p: p("a", num_inference_steps="4"), "num_inference_steps"),
    "latents nan": (
        lambda p: p("a", latents=torch.full((1, 32, 8, 8), float("nan"))),
        "latents contain NaN",
    ),
    "edit strength str": (lambda p: p.edit(IMAGE, "red", strength="0.5"), "strength"),
    "edit time_shift 0": (lambda p: p.edit(IMAGE, "red", time_shift=0), "time_shift"),
    "edit guidance < 0": (lambda p: p.edit(IMAGE, "red", guidance_scale=-2), "guidance_scale"),
}


@pytest.mark.parametrize("name", list(SAMPLING))
def test_bad_sampling_argument_is_refused_before_the_model_runs(no_model_work, name):
    call, fragment = SAMPLING[name]
    with pytest.raises(CheersError, match=re.escape(fragment)):
        call(no_model_work)


TEXT = {
    "chat None": (lambda p: p.chat(None), PromptError, "chat() takes a prompt"),
    "chat empty message": (
        lambda p: p.chat([{"role": "user", "content": "  "}]),
        PromptError,
        "empty last user message",
    ),
    "stream": (lambda p: p.chat("hi", stream=3), CheersError, "stream must be a function"),
    "max_new_tokens 0": (lambda p: p.chat("hi", max_new_tokens=0), CheersError, "max_new_tokens"),
    "max_new_tokens 2.0": (
        lambda p: p.chat("hi", max_new_tokens=2.0),
        CheersError,
        "max_new_tokens",
    ),
    "understand no image": (
        lambda p: p.understand([], "what is it?"),
        PromptError,
        "use chat() for a text-only question",
    ),
    "understand fewer images": (
        lambda p: p.understand(IMAGE, "<im_start><image><im_end><im_start><image><im_end>?"),
        PromptError,
        "2 image placeholder(s) but 1 image(s)",
    ),
    "chat image placeholder": (
        lambda p: p.chat("<im_start><image><im_end> what is this?"),
        PromptError,
        "1 image placeholder(s) but 0 image(s)",
    ),
}


@pytest.mark.parametrize("name", list(TEXT))
def test_bad_text_request_is_refused_before_the_model_runs(no_model_work, name):
    call, kind, fragment = TEXT[name]
    with pytest.raises(kind, match=re.escape(fragment)):
        call(no_model_work)


# -- NaN weights: an error naming the cause, not an empty answer with exit 0 ----------------------


@pytest.fixture
def nan_pipe() -> CheersPipeline:
    pipe = CheersPipeline.from_pretrained(MODEL)
    with torch.no_grad():
        pipe.model.model.language_model.norm.weight.fill_(float("nan"))
    return pipe


def test_nan_weights_are_an_error_for_text(nan_pipe):
    with pytest.raises(NumericalError, match=r"NaN or infinity.*weights are broken"):
        nan_pipe.chat("hello")
    with pytest.raises(NumericalError, match="NaN or infinity"):
        nan_pipe.understand(IMAGE, "what is it?")


def test_nan_weights_are_found_before_the_denoising_loop(nan_pipe):
    steps = []
    with pytest.raises(NumericalError, match="prompt's hidden states"):
        nan_pipe("a red circle", num_inference_steps=4, callback=lambda k, n: steps.append(k))
    assert steps == []  # refused after the prefill, before the first sampling step


def test_nan_decoder_is_an_error_for_every_output_type():
    pipe = CheersPipeline.from_pretrained(MODEL)
    with torch.no_grad():
        for weight in pipe.model.model.vae_model.decoder.parameters():
            weight.fill_(float("nan"))
    for output_type in ("pil", "np", "pt"):
        with pytest.raises(NumericalError, match="decoded images"):
            pipe("a", num_inference_steps=2, guidance_scale=None, output_type=output_type)


# -- the room reserved for an answer -----------------------------------------------------------


def test_answer_room_left_out_takes_what_the_context_leaves(pipe):
    context = pipe.model.config.text_config.max_position_embeddings
    # 16 images of 16 tokens each leave less than the default 256 tokens of room.
    images = [IMAGE] * 16
    question = "how many shapes?"
    with pytest.raises(ContextLengthError) as info:
        pipe.understand(images, question, max_new_tokens=MAX_NEW_TOKENS)
    left = int(re.search(r"at most (\d+) tokens are left", str(info.value)).group(1))
    assert 0 < left < MAX_NEW_TOKENS
    assert f"of the model's {context} positions" in str(info.value)
    # The stated room is exact: it fits, one more does not, and leaving it out works.
    assert isinstance(pipe.understand(images, question, max_new_tokens=left), str)
    with pytest.raises(ContextLengthError, match=f"at most {left} tokens"):
        pipe.understand(images, question, max_new_tokens=left + 1)
    assert pipe.understand(images, question) == pipe.understand(
        images, question, max_new_tokens=left
    )


def test_a_prompt_that_fills_the_context_says_so(pipe):
    with pytest.raises(ContextLengthError, match="leaving no room for an answer"):
        pipe.understand([IMAGE] * 30, "how many?")


# -- a conversation never gets stuck on a full context --------------------------------------------


@pytest.fixture
def short_context() -> CheersPipeline:
    pipe = CheersPipeline.from_pretrained(MODEL)
    pipe.model.config.text_config.max_position_embeddings = 96
    return pipe


def test_conversation_drops_the_oldest_turns_instead_of_failing(short_context):
    chat = Conversation(short_context, system="be brief", max_new_tokens=8)
    dropped = 0
    for turn in range(7):
        reply = chat.send(f"turn {turn}: what colour is the circle?")
        dropped += reply.dropped_turns
        assert chat.messages[0] == {"role": "system", "content": "be brief"}
        assert chat.messages[-2]["content"] == f"turn {turn}: what colour is the circle?"
        assert chat.messages[-1] == {"role": "assistant", "content": reply.answer}
    assert dropped > 0  # the context did fill up, and the chat went on
    assert chat.turns + dropped == 7
    # What is kept is exactly what the last answer was computed from.
    assert short_context.chat(chat.messages[:-1], max_new_tokens=8) == chat.messages[-1]["content"]


def test_conversation_refuses_a_message_too_long_alone_and_keeps_the_history(short_context):
    chat = Conversation(short_context, max_new_tokens=8)
    chat.send("hello")
    before = list(chat.messages)
    with pytest.raises(ContextLengthError, match="even without the earlier turns"):
        chat.send("word " * 200)
    assert chat.messages == before
    assert chat.send("hello again").answer is not None
    chat.reset()
    assert chat.messages == []


def test_conversation_arguments_are_checked(pipe):
    with pytest.raises(CheersError, match="max_new_tokens"):
        Conversation(pipe, max_new_tokens=0)
    with pytest.raises(PromptError, match="non-empty text"):
        Conversation(pipe).send("   ")


# -- loading and saving ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name_or_path": None}, "must be a path"),
        ({"name_or_path": ""}, "must be a path"),
        ({"name_or_path": MODEL, "dtype": torch.int8}, "not a floating-point type"),
        ({"name_or_path": MODEL, "dtype": "int8"}, "unknown dtype 'int8'"),
        ({"name_or_path": MODEL, "device": "gpu"}, "device 'gpu' is not a device name"),
        pytest.param(
            {"name_or_path": MODEL, "device": "cuda"},
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_from_pretrained_arguments(kwargs, fragment):
    with pytest.raises(CheckpointError, match=re.escape(fragment)):
        CheersPipeline.from_pretrained(**kwargs)


@pytest.mark.parametrize("bad", [0, -5, "1GB", 2.5, True])
def test_save_pretrained_shard_size(pipe, tmp_path, bad):
    with pytest.raises(CheckpointError, match="max_shard_bytes must be a positive int"):
        pipe.save_pretrained(tmp_path / "out", max_shard_bytes=bad)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_sampler_typo_is_a_sampler_error(pipe):
    with pytest.raises(SamplerError, match="choose one of"):
        pipe("a", sampler="heunn")
