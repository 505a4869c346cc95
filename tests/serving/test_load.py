"""8 concurrent clients × several requests: every answer right, and requests batched."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from live_server import STEPS, assert_same_image, data_url, decode_b64_png

openai = pytest.importorskip("openai")

CLIENTS = 8
PROMPTS = ("a red circle", "a green triangle", "two blue squares", "a yellow circle")
QUESTIONS = ("What color is the shape?", "What shape is it?")


def client_session(url: str, c: int, source_url: str) -> list[tuple[str, object, object]]:
    """One client's requests in turn: two image generations and a question about an image."""
    done = []
    with openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0) as client:
        for r in range(2):
            # Four distinct (prompt, seed) requests spread over the clients: each answer is
            # checked, the truth computed once per distinct request.
            prompt, seed = PROMPTS[(c + r) % len(PROMPTS)], (c + r) % len(PROMPTS)
            result = client.images.generate(
                prompt=prompt, extra_body={"seed": seed, "num_inference_steps": STEPS}
            )
            done.append(("image", (prompt, seed), decode_b64_png(result.data[0].b64_json)))
        question = QUESTIONS[c % len(QUESTIONS)]
        reply = client.chat.completions.create(
            model="cheers",
            max_tokens=6,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": source_url}},
                        {"type": "text", "text": question},
                    ],
                }
            ],
        )
        done.append(("text", question, reply.choices[0].message.content))
    return done


def test_concurrent_clients_all_answered_correctly_and_batched(live, pipe):
    source = pipe("a red circle", num_inference_steps=8, generator=0).images[0]
    batches_before = len(live.batcher.stats.batch_jobs)
    with ThreadPoolExecutor(CLIENTS) as pool:
        sessions = list(
            pool.map(lambda c: client_session(live.url, c, data_url(source)), range(CLIENTS))
        )
    sizes = list(live.batcher.stats.batch_jobs)[batches_before:]
    answered = [item for session in sessions for item in session]
    assert len(answered) == CLIENTS * 3
    # Batching: fewer model calls than requests, some holding several requests.
    assert sum(sizes) == len(answered)
    assert max(sizes) > 1 and len(sizes) < len(answered)
    # Independent truth: each request answered alone by the pipeline.
    truth = {}
    for kind, request, served in answered:
        if request not in truth:
            if kind == "image":
                prompt, seed = request
                truth[request] = pipe(prompt, num_inference_steps=STEPS, generator=seed).images[0]
            else:
                truth[request] = pipe.understand(source, request, max_new_tokens=6)
        if kind == "image":
            assert_same_image(served, truth[request])
        else:
            assert served == truth[request]
