"""The Responses API through the official ``openai`` client: draw, edit through
``previous_response_id``, ask about the result; streaming; stored conversations; bad input."""

from __future__ import annotations

import httpx
import pytest
from live_server import STEPS, LiveServer, assert_same_image, data_url, decode_b64_png

from cheers.pipeline.draw_requests import DrawRequest
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextRequest
from cheers.serving import ServerConfig, create_app
from cheers.serving.store import ResponseStore, StoredResponse

openai = pytest.importorskip("openai")

DRAW = {"type": "image_generation", "num_inference_steps": STEPS}
EDIT = {**DRAW, "action": "edit", "strength": 0.8}
FORCE = {"type": "image_generation"}


def images_of(response) -> list:
    return [decode_b64_png(o.result) for o in response.output if o.type == "image_generation_call"]


def test_draw_then_edit_then_ask(client, pipe):
    drawn = client.responses.create(
        model="cheers", input="a red circle", tools=[DRAW], tool_choice=FORCE,
        extra_body={"seed": 5},
    )  # fmt: skip
    assert drawn.status == "completed" and drawn.id.startswith("resp_") and len(drawn.id) > 30
    [call] = drawn.output
    assert call.type == "image_generation_call" and call.action == "generate"
    [image] = images_of(drawn)
    # A first turn draws exactly what text-to-image draws for the prompt and seed.
    assert_same_image(image, pipe("a red circle", num_inference_steps=STEPS, generator=5).images[0])

    edited = client.responses.create(
        model="cheers", input="make it blue", previous_response_id=drawn.id, tools=[EDIT],
        tool_choice=FORCE, extra_body={"seed": 6},
    )  # fmt: skip
    [result] = images_of(edited)
    assert edited.output[0].action == "edit" and edited.previous_response_id == drawn.id
    # The edit saw the conversation: the drawing turn, then the drawn image shown again with
    # the instruction, and started from the drawn image.
    history = [
        {"role": "user", "content": "a red circle"},
        {"role": "assistant", "content": IMAGE_IN_PROMPT},
        {"role": "user", "content": f"{IMAGE_IN_PROMPT}\nmake it blue"},
    ]
    expected = pipe.draw(
        [DrawRequest(history, [image, image], source=image, seed=6)],
        num_inference_steps=STEPS,
        strength=0.8,
    ).images[0]
    assert_same_image(result, expected)

    asked = client.responses.create(
        model="cheers", input="What color is the shape?", previous_response_id=edited.id,
        max_output_tokens=8,
    )  # fmt: skip
    assert [o.type for o in asked.output] == ["message"]
    messages = [*history, {"role": "assistant", "content": IMAGE_IN_PROMPT}]
    messages.append({"role": "user", "content": "What color is the shape?"})
    alone = pipe.answer([TextRequest(messages, [image, image, result], max_new_tokens=8)])[0]
    assert asked.output_text == alone.text
    assert asked.usage.input_tokens == alone.prompt_tokens


def test_auto_lets_the_model_open_an_image(client, pipe):
    # The embedded model answers a caption with <im_start>: it draws without being forced.
    reply = client.responses.create(
        model="cheers", input="a red circle", tools=[DRAW], extra_body={"seed": 2}
    )
    kinds = [o.type for o in reply.output]
    assert kinds == ["message", "image_generation_call"]
    reference = pipe("a red circle", num_inference_steps=STEPS, generator=2).images[0]
    assert_same_image(images_of(reply)[0], reference)
    # Without the tool (or with tool_choice none) the answer is text only.
    text = client.responses.create(
        model="cheers", input="a red circle", tools=[DRAW], tool_choice="none",
        max_output_tokens=4,
    )  # fmt: skip
    assert [o.type for o in text.output] == ["message"]


def test_streamed_text_and_progress_events(client, pipe):
    with client.responses.stream(
        model="cheers", input="Who are you?", max_output_tokens=6, extra_body={"seed": 1}
    ) as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    messages = [{"role": "user", "content": "Who are you?"}]
    alone = pipe.answer([TextRequest(messages, max_new_tokens=6, seed=1)])[0]
    assert len(deltas) == len(alone.token_ids) and "".join(deltas).strip() == alone.text
    assert [e.sequence_number for e in events] == list(range(len(events)))

    drawn = list(
        client.responses.create(
            model="cheers", input="a blue square", tools=[DRAW], tool_choice=FORCE, stream=True
        )
    )
    steps = [e for e in drawn if e.type == "response.image_generation_call.generating"]
    # Guided Euler: one model evaluation per grid point after the first, each reported.
    assert [s.step for s in steps] == list(range(1, len(steps) + 1)) and len(steps) >= STEPS - 1
    final = drawn[-1].response
    assert final.output[0].type == "image_generation_call" and final.output[0].result


def test_stored_responses_are_private_to_their_api_key(live, pipe):
    with (
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="alice", max_retries=0) as alice,
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="bob", max_retries=0) as bob,
    ):
        first = alice.responses.create(model="cheers", input="hello", max_output_tokens=2)
        assert alice.responses.retrieve(first.id).id == first.id
        with pytest.raises(openai.NotFoundError, match="no response"):
            bob.responses.retrieve(first.id)
        with pytest.raises(openai.NotFoundError, match="no response"):
            bob.responses.create(
                model="cheers", input="hi", previous_response_id=first.id, max_output_tokens=2
            )
        alice.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            alice.responses.retrieve(first.id)


def test_the_store_is_bounded_in_number_and_age():
    now = [0.0]
    store = ResponseStore(max_items=2, ttl_s=10.0, clock=lambda: now[0])
    for ident in ("a", "b", "c"):
        store.put(ident, StoredResponse("me", {}, [], []))
    assert store.get("a", "me") is None and store.get("c", "me") is not None  # oldest evicted
    assert store.get("c", "you") is None
    now[0] = 10.5
    assert store.get("c", "me") is None and len(store) == 0  # expired


def test_an_evicted_response_is_404_and_the_server_keeps_serving(pipe):
    server = LiveServer(create_app(pipe, ServerConfig(max_stored_responses=1))).start()
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as c:
            first = c.responses.create(model="cheers", input="one", max_output_tokens=2)
            c.responses.create(model="cheers", input="two", max_output_tokens=2)
            with pytest.raises(openai.NotFoundError, match="expired"):
                c.responses.create(
                    model="cheers", input="x", previous_response_id=first.id, max_output_tokens=2
                )
    finally:
        server.stop()


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"tools": [EDIT], "tool_choice": FORCE}, 400, "holds no image"),
        ({"tools": [{"type": "web_search"}]}, 400, "does not have"),
        ({"tool_choice": FORCE}, 400, "tools does not list it"),
        ({"previous_response_id": "resp_nope"}, 404, "no response"),
        ({"tools": [{**DRAW, "size": "1024x1024"}], "tool_choice": FORCE}, 400, "64x64"),
        ({"tools": [{**DRAW, "size": "96x64"}], "tool_choice": FORCE}, 400, "native size 64x64"),
        ({"tools": [{**DRAW, "quality": "high"}]}, 400, "quality"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
         400, "input[0]"),
        ({"input": [{"type": "item_reference", "id": "ig_x"}]}, 400, "no image of this"),
    ],
)  # fmt: skip
def test_bad_requests_are_clear_4xx(client, kwargs, status, fragment):
    request = {"model": "cheers", "input": "a red circle", **kwargs}
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(**request)
    assert info.value.status_code == status
    assert fragment in info.value.message


def test_a_failed_turn_leaves_the_conversation_intact(client, live):
    first = client.responses.create(model="cheers", input="hello", max_output_tokens=2)
    big = data_url(__import__("PIL.Image").Image.new("RGB", (1100, 1000)))
    with pytest.raises(openai.BadRequestError, match="pixels"):
        client.responses.create(
            model="cheers",
            previous_response_id=first.id,
            input=[{"role": "user", "content": [{"type": "input_image", "image_url": big}]}],
        )
    with pytest.raises(openai.BadRequestError, match="holds no image"):
        client.responses.create(
            model="cheers", input="make it blue", previous_response_id=first.id, tools=[EDIT],
            tool_choice=FORCE,
        )  # fmt: skip
    after = client.responses.create(
        model="cheers", input="again", previous_response_id=first.id, max_output_tokens=2
    )
    assert after.status in ("completed", "incomplete")
    health = httpx.get(f"{live.url}/health").json()
    assert health["status"] == "ok"
