"""Every endpoint through the official ``openai`` client, against the pipeline's own answers."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from live_server import STEPS, assert_same_image, data_url, decode_b64_png, png_bytes

openai = pytest.importorskip("openai")


def test_models_and_health(client, live):
    assert [m.id for m in client.models.list().data] == ["cheers"]
    assert client.models.retrieve("cheers").id == "cheers"
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4")
    health = httpx.get(f"{live.url}/health").json()
    assert health["status"] == "ok" and health["image_size"] == 64


def test_chat_with_an_image(client, pipe):
    source = pipe("a red circle", num_inference_steps=8, generator=0).images[0]
    question = "What color is the shape?"
    reply = client.chat.completions.create(
        model="cheers",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": data_url(source)}},
                    {"type": "text", "text": question},
                ],
            }
        ],
        max_tokens=8,
    )
    expected = pipe.understand(source, question, max_new_tokens=8)
    assert reply.choices[0].message.content == expected
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens >= 1
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_one_chunk_per_token(client, pipe):
    messages = [{"role": "user", "content": "Who are you?"}]
    stream = client.chat.completions.create(
        model="cheers",
        messages=messages,
        max_tokens=12,
        temperature=0.8,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    tokens = chunks[1:-1]
    final = chunks[-1]
    assert final.choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in tokens)
    assert len(tokens) == final.usage.completion_tokens == 12
    text = "".join(c.choices[0].delta.content for c in tokens).strip()
    expected = pipe.chat(messages, max_new_tokens=12, temperature=0.8, generator=7)
    assert text == expected
    whole = client.chat.completions.create(
        model="cheers", messages=messages, max_tokens=12, temperature=0.8, seed=7
    )
    assert whole.choices[0].message.content == expected


def test_images_generate_n2(client, pipe):
    result = client.images.generate(
        model="cheers",
        prompt="a blue square",
        n=2,
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 11, "num_inference_steps": STEPS, "guidance_scale": 4.0},
    )
    assert len(result.data) == 2
    for i, item in enumerate(result.data):
        reference = pipe(
            "a blue square", num_inference_steps=STEPS, guidance_scale=4.0, generator=11 + i
        ).images[0]
        assert_same_image(decode_b64_png(item.b64_json), reference)
    a, b = (np.asarray(decode_b64_png(d.b64_json)) for d in result.data)
    assert not np.array_equal(a, b)  # two seeds, two images


def test_images_edit_n2(client, pipe):
    source = pipe("a red circle", num_inference_steps=8, generator=0).images[0]
    result = client.images.edit(
        image=("source.png", png_bytes(source), "image/png"),
        prompt="make it green",
        n=2,
        extra_body={"seed": 3, "num_inference_steps": 5, "strength": 0.8},
    )
    assert len(result.data) == 2
    for i, item in enumerate(result.data):
        reference = pipe.edit(
            source, "make it green", num_inference_steps=5, strength=0.8, generator=3 + i
        ).images[0]
        assert_same_image(decode_b64_png(item.b64_json), reference)
