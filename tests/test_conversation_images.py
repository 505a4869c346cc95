"""Conversations of text and images (``Conversation``, ``pipe.draw``) on the embedded model,
against the single-turn pipeline calls they must reduce to and hand-written prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cheers.errors import ContextLengthError, PromptError
from cheers.loading import default_model_path
from cheers.pipeline import CheersPipeline
from cheers.pipeline.conversation import Conversation, image_count
from cheers.pipeline.draw_requests import DrawRequest
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextRequest

STEPS = 4
IMAGE_KWARGS = {"num_inference_steps": STEPS}


@pytest.fixture(scope="module")
def pipe() -> CheersPipeline:
    return CheersPipeline.from_pretrained(default_model_path())


def same(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


def test_one_turn_drawings_are_text_to_image_and_edit(pipe):
    user = [{"role": "user", "content": "a red circle"}]
    drawn = pipe.draw([DrawRequest(user, seed=3)], num_inference_steps=STEPS).images[0]
    assert same(drawn, pipe("a red circle", num_inference_steps=STEPS, generator=3).images[0])
    edit = [{"role": "user", "content": f"{IMAGE_IN_PROMPT}\nmake it blue"}]
    request = DrawRequest(edit, [drawn], source=drawn, seed=4)
    edited = pipe.draw([request], num_inference_steps=STEPS).images[0]
    assert same(
        edited, pipe.edit(drawn, "make it blue", num_inference_steps=STEPS, generator=4).images[0]
    )


def test_draw_edit_ask_each_turn_sees_the_earlier_ones(pipe):
    chat = Conversation(pipe, image_kwargs=IMAGE_KWARGS, chat_kwargs={"generator": 7})
    drawn = chat.draw("a red circle").image
    assert drawn.size == (64, 64)
    assert same(drawn, pipe("a red circle", num_inference_steps=STEPS, generator=7).images[0])
    edited = chat.edit("make it blue").image
    # The edit's prompt is the whole conversation, the drawn image shown again before the
    # instruction, and it starts from the drawn image.
    messages = [
        {"role": "user", "content": "a red circle"},
        {"role": "assistant", "content": IMAGE_IN_PROMPT},
        {"role": "user", "content": f"{IMAGE_IN_PROMPT}\nmake it blue"},
    ]
    request = DrawRequest(messages, [drawn, drawn], source=drawn, seed=7)
    assert same(edited, pipe.draw([request], num_inference_steps=STEPS).images[0])
    plain = pipe.edit(drawn, "make it blue", num_inference_steps=STEPS, generator=7).images[0]
    assert not same(edited, plain)  # the earlier turn changed the edit
    reply = chat.send("What color is the shape?")
    messages += [
        {"role": "assistant", "content": IMAGE_IN_PROMPT},
        {"role": "user", "content": "What color is the shape?"},
    ]
    alone = pipe.answer([TextRequest(messages, [drawn, drawn, edited], seed=7)])[0]
    assert reply.answer == alone.text and reply.image is None
    assert chat.images == [drawn, drawn, edited] and chat.turns == 3


def test_an_attached_image_is_asked_about_as_understand_does(pipe):
    image = pipe("a green square", num_inference_steps=STEPS, generator=1).images[0]
    chat = Conversation(pipe, max_new_tokens=16)
    reply = chat.send("What color is the shape?", images=[image])
    assert reply.answer == pipe.understand(image, "What color is the shape?", max_new_tokens=16)
    # A named image is edited: image 0 of the conversation.
    chat.image_kwargs = IMAGE_KWARGS
    assert chat.edit("make it red", image=0).image is not None and len(chat.images) == 3


def test_the_model_may_open_an_image_itself(pipe):
    chat = Conversation(
        pipe, image_kwargs=IMAGE_KWARGS, chat_kwargs={"generator": 2}, may_draw=True
    )
    reply = chat.send("a red circle")  # the embedded model answers a caption with <im_start>
    assert reply.image is not None
    assert same(reply.image, pipe("a red circle", num_inference_steps=STEPS, generator=2).images[0])
    assert chat.messages[-1] == {"role": "assistant", "content": IMAGE_IN_PROMPT}
    assert Conversation(pipe, max_new_tokens=4).send("a red circle").image is None


def test_old_turns_are_dropped_with_their_images():
    pipe = CheersPipeline.from_pretrained(default_model_path())
    pipe.model.config.text_config.max_position_embeddings = 120
    chat = Conversation(pipe, system="draw", image_kwargs=IMAGE_KWARGS, max_new_tokens=8)
    dropped = 0
    for turn in range(6):
        reply = chat.draw(f"a red circle {turn}") if turn % 2 == 0 else chat.edit("make it blue")
        dropped += reply.dropped_turns
        assert chat.messages[0] == {"role": "system", "content": "draw"}
        assert sum(image_count(m) for m in chat.messages) == len(chat.images)
        assert chat.images[-1] is reply.image
    assert dropped > 0 and chat.turns + dropped == 6


def test_bad_turns_are_refused_and_the_conversation_is_intact(pipe):
    chat = Conversation(pipe, image_kwargs=IMAGE_KWARGS, max_new_tokens=4)
    with pytest.raises(PromptError, match="no image in the conversation to edit"):
        chat.edit("make it blue")
    chat.send("hello")
    before = (list(chat.messages), list(chat.images))
    with pytest.raises(PromptError, match="no image in the conversation"):
        chat.edit("make it blue")
    chat.draw("a red circle")
    before = (list(chat.messages), list(chat.images))
    with pytest.raises(PromptError, match="there is no image 5"):
        chat.edit("make it blue", image=5)
    with pytest.raises(PromptError, match="image marker"):
        chat.send(f"{IMAGE_IN_PROMPT} what is it?")
    with pytest.raises(ContextLengthError, match="even without the earlier turns"):
        chat.draw("word " * 600)
    assert (chat.messages, chat.images) == before
    with pytest.raises(PromptError, match="chat_kwargs does not take stream"):
        Conversation(pipe, chat_kwargs={"stream": print})
    with pytest.raises(PromptError, match="all have a source"):
        pipe.draw([DrawRequest([{"role": "user", "content": "x"}]),
                   DrawRequest([{"role": "user", "content": f"{IMAGE_IN_PROMPT}\ny"}],
                               [chat.images[0]], source=chat.images[0])])  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    assert Conversation(pipe, chat_kwargs={"generator": gen}).send("hi").answer is not None
