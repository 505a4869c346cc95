"""The server under a memory limit: a batch too large is split (same images), one image or
conversation that cannot fit alone is a 400 naming the limit and the fix."""

from __future__ import annotations

import httpx
import pytest
from live_server import STEPS, assert_same_image, decode_b64_png

from cheers.pipeline import memory
from cheers.pipeline.memory import MemoryBudget

openai = pytest.importorskip("openai")


@pytest.fixture
def limit(pipe):
    saved = pipe.memory

    def set_limit(n: int) -> None:
        pipe.memory = MemoryBudget(limit=n)

    yield set_limit
    pipe.memory = saved


def test_a_request_over_the_memory_limit_is_split_not_failed(client, live, pipe, limit):
    prompt = "a blue square"
    tokens = len(pipe.inputs.generation_ids(prompt))
    guided = memory.image_call(pipe.model.config, pipe.model.dtype, 2, guided=True,
                               prompt_tokens=tokens)  # fmt: skip
    limit(guided.total)  # two images a call, the request asks for five
    splits = httpx.get(f"{live.url}/health").json()["memory_splits"]
    result = client.images.generate(
        prompt=prompt, n=5, response_format="b64_json",
        extra_body={"seed": 11, "num_inference_steps": STEPS},
    )  # fmt: skip
    assert len(result.data) == 5
    assert httpx.get(f"{live.url}/health").json()["memory_splits"] > splits
    for i, item in enumerate(result.data):
        alone = pipe(prompt, num_inference_steps=STEPS, generator=11 + i).images[0]
        assert_same_image(decode_b64_png(item.b64_json), alone)


def test_what_cannot_fit_alone_is_a_clear_400(client, limit):
    limit(1000)
    with pytest.raises(openai.BadRequestError) as err:
        client.images.generate(prompt="a red circle", extra_body={"num_inference_steps": STEPS})
    message = err.value.body["message"]
    assert "1 image(s) of 64x64 with guidance need about" in message
    assert "the memory limit is 0.0 MiB" in message and "not even one image fits" in message
    with pytest.raises(openai.BadRequestError, match="not even one fits"):
        client.chat.completions.create(
            model="cheers", messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
