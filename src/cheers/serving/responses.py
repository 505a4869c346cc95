"""``/v1/responses``: conversations of text and images, with the ``image_generation`` tool.

A response continues the stored conversation of ``previous_response_id`` (its messages and
images, drawn ones included) with the new ``input`` and answers with text, an image, or text
then an image:

- ``tool_choice`` ``{"type": "image_generation"}`` (or ``"required"``) draws, seeing the whole
  conversation; the tool's ``action: "edit"`` edits the conversation's last image instead (an
  ``item_reference`` to an earlier ``image_generation_call`` in the input shows that one again,
  making it the last);
- ``"auto"`` with the tool answers in text, and when the model opens an image itself
  (``<im_start>``) draws it; without the tool, or with ``"none"``, the answer is text.

The oldest turns are dropped to fit the model's context
(:func:`cheers.pipeline.conversation.fit_history`).
With ``stream: true`` the events are the API's: ``response.created``, text deltas (one per token),
``response.image_generation_call.generating`` after each model evaluation (with the extension
fields ``step`` and ``total``), ``response.completed``. Stored responses are bounded, private to
the API key that made them, and expire (:mod:`cheers.serving.store`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image

from cheers.pipeline.conversation import image_count
from cheers.pipeline.draw_requests import DrawRequest
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextAnswer
from cheers.serving.batching import END_OF_EVENTS, Job
from cheers.serving.images import png_base64
from cheers.serving.response_plan import Plan, plan_response, stored
from cheers.serving.response_schemas import (
    ResponsesRequest,
    image_item,
    message_item,
    response_body,
)
from cheers.serving.runner import TEXT_KEY
from cheers.serving.state import ClientGone, ServerState
from cheers.serving.store import StoredResponse, new_id, owner_of

router = APIRouter()


# ------------------------------------------------------------------------------- routes
@router.post("/v1/responses")
async def create(request: Request) -> Response:
    state: ServerState = request.app.state.serving
    body = await state.read_json(request, ResponsesRequest)
    plan = await plan_response(state, request, body)
    events = produce(state, request, plan)
    try:
        if not body.stream:
            final: dict[str, Any] = {}
            async for event in events:
                final = event
            return JSONResponse(final["response"])
        # The first event comes once the model has begun (or failed: then a 4xx, not a stream).
        first = await anext(events)
    except ClientGone:
        return Response(status_code=499)
    return StreamingResponse(sse(first, events), media_type="text/event-stream")


@router.get("/v1/responses/{ident}")
async def retrieve(ident: str, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.serving
    return JSONResponse(stored(state, request, ident, "ident").body)


@router.delete("/v1/responses/{ident}")
async def delete(ident: str, request: Request) -> JSONResponse:
    state: ServerState = request.app.state.serving
    stored(state, request, ident, "ident")
    state.responses.delete(ident, owner_of(request.headers.get("authorization")))
    return JSONResponse({"id": ident, "object": "response.deleted", "deleted": True})


# ------------------------------------------------------------------------------- events
def event(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, **fields}


async def produce(state: ServerState, request: Request, plan: Plan) -> AsyncIterator[dict]:
    """The response's events in order (sequence numbers are added by :func:`sse`); the last is
    ``response.completed``, whose response is stored. Nothing is yielded before the model has
    produced its first token or step, so an error found while preparing is still raised."""
    body, model = plan.body, state.config.model_name
    output: list[dict[str, Any]] = []
    started = False
    text, draw, usage_in, usage_out, incomplete = "", None, 0, 0, None
    image: Image.Image | None = None

    def opening() -> list[dict]:
        empty = response_body(plan.ident, body, model, [], "in_progress", None)
        return [
            {"type": "response.created", "response": empty},
            {"type": "response.in_progress", "response": empty},
        ]

    if plan.text is not None:
        job = Job(TEXT_KEY, plan.text, stream=True)
        state.batcher.submit(job)
        got = await state.next_event(request, job)
        if got is END_OF_EVENTS:
            await job.future  # raises the request's error, if any
        for e in opening():
            yield e
        started = True
        item = new_id("msg")
        index = len(output)
        yield event(
            "response.output_item.added",
            output_index=index,
            item=message_item(item, "", "in_progress"),
        )
        yield event(
            "response.content_part.added",
            item_id=item,
            output_index=index,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": []},
        )
        while got is not END_OF_EVENTS:
            yield event(
                "response.output_text.delta",
                item_id=item,
                output_index=index,
                content_index=0,
                delta=got.text,
            )
            got = await state.next_event(request, job)
        answer: TextAnswer = await job.future
        text, usage_in, usage_out = answer.text, answer.prompt_tokens, len(answer.token_ids)
        status = "incomplete" if answer.finish_reason == "length" else "completed"
        incomplete = "max_output_tokens" if answer.finish_reason == "length" else None
        done = message_item(item, text, status)
        yield event(
            "response.output_text.done",
            item_id=item,
            output_index=index,
            content_index=0,
            text=text,
        )
        yield event(
            "response.content_part.done",
            item_id=item,
            output_index=index,
            content_index=0,
            part=done["content"][0],
        )
        yield event("response.output_item.done", output_index=index, item=done)
        output.append(done)
        if answer.finish_reason == "image":  # the model opened an image: draw it
            reply = [{"role": "assistant", "content": text}] if text else []
            draw = DrawRequest([*plan.fitted.messages, *reply], plan.fitted.images)
    elif plan.draw_key is not None:
        draw = DrawRequest(plan.fitted.messages, plan.fitted.images)
    image_id = None
    if draw is not None:
        draw.source = plan.source
        draw.seed = plan.seed
        job = Job(plan.draw_key, draw, stream=True)
        state.batcher.submit(job)
        got = await state.next_event(request, job)
        if got is END_OF_EVENTS:
            await job.future
        if not started:
            for e in opening():
                yield e
        image_id, index = new_id("ig"), len(output)
        size = f"{state.resolution}x{state.resolution}"
        yield event(
            "response.output_item.added",
            output_index=index,
            item=image_item(image_id, plan.action, size, None, "in_progress"),
        )
        yield event(
            "response.image_generation_call.in_progress", item_id=image_id, output_index=index
        )
        while got is not END_OF_EVENTS:
            yield event(
                "response.image_generation_call.generating",
                item_id=image_id,
                output_index=index,
                step=got.step,
                total=got.total,
            )
            got = await state.next_event(request, job)
        image = await job.future
        encoded = await asyncio.to_thread(png_base64, image)
        done = image_item(image_id, plan.action, size, encoded)
        yield event(
            "response.image_generation_call.completed", item_id=image_id, output_index=index
        )
        yield event("response.output_item.done", output_index=index, item=done)
        output.append(done)
        usage_out += state.tokens_per_image
        if not usage_in:
            usage_in = len(state.pipeline.inputs.chat_ids(plan.fitted.messages))
    final = response_body(
        plan.ident, body, model, output, "incomplete" if incomplete else "completed",
        (usage_in, usage_out), incomplete,
    )  # fmt: skip
    if body.store:
        keep(state, plan, final, text, image, image_id)
    yield event("response.completed", response=final)


def keep(
    state: ServerState,
    plan: Plan,
    final: dict[str, Any],
    text: str,
    image: Image.Image | None,
    image_id: str | None,
) -> None:
    """Store the conversation this response ends, for ``previous_response_id``."""
    content = text + (IMAGE_IN_PROMPT if image is not None else "")
    messages = [*plan.fitted.messages[plan.system :], {"role": "assistant", "content": content}]
    images = [*plan.fitted.images, *([image] if image is not None else [])]
    assert sum(image_count(m) for m in messages) == len(images)
    kept = {id(im) for im in images}
    named = {k: im for k, im in plan.named.items() if id(im) in kept}
    if image_id is not None:
        named[image_id] = image
    state.responses.put(plan.ident, StoredResponse(plan.owner, final, messages, images, named))


async def sse(first: dict, events: AsyncIterator[dict]) -> AsyncIterator[str]:
    """Server-sent events, numbered; a failure after the stream began is an ``error`` event."""
    number = 0

    def line(event: dict) -> str:
        nonlocal number
        event = {**event, "sequence_number": number}
        number += 1
        return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"

    try:
        yield line(first)
        async for event in events:
            yield line(event)
    except ClientGone:
        return
    except Exception as exc:  # failed after streaming began: say so in the stream
        message = (
            str(exc) if isinstance(exc, ValueError) else f"internal error ({type(exc).__name__})"
        )
        yield line({"type": "error", "code": None, "message": message, "param": None})
    finally:
        await events.aclose()  # drops the running job if the client went away
