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

The oldest turns are dropped to fit the model's context (:func:`cheers.conversation.fit_history`).
With ``stream: true`` the events are the API's: ``response.created``, text deltas (one per token),
``response.image_generation_call.generating`` after each model evaluation (with the extension
fields ``step`` and ``total``), ``response.completed``. Stored responses are bounded, private to
the API key that made them, and expire (:mod:`cheers.serving.store`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image
from pydantic import BaseModel, ValidationError

from cheers.conversation import Fitted, fit_history, image_count
from cheers.draw_requests import DrawRequest
from cheers.llm_inputs import IMAGE_IN_PROMPT
from cheers.samplers import DEFAULTS
from cheers.serving.batching import END_OF_EVENTS, Job
from cheers.serving.chat import join_parts
from cheers.serving.errors import APIError, validation_message
from cheers.serving.images import image_from_data_url, png_base64
from cheers.serving.images_api import sampling_settings
from cheers.serving.response_schemas import (
    ImageGenerationTool,
    InputImage,
    InputMessage,
    ItemReference,
    ResponsesRequest,
    image_item,
    message_item,
    response_body,
)
from cheers.serving.runner import TEXT_KEY, ImageSettings
from cheers.serving.state import ClientGone, ServerState
from cheers.serving.store import StoredResponse, new_id, owner_of
from cheers.text_requests import TextAnswer, TextRequest

router = APIRouter()

Message = dict[str, str]


@dataclass
class Plan:
    """What one response does: the fitted conversation, then text and/or a drawing."""

    ident: str
    body: ResponsesRequest
    owner: str
    system: int  # 1 when the fitted messages start with the instructions
    fitted: Fitted
    text: TextRequest | None
    draw_key: ImageSettings | None
    action: str  # "generate" or "edit"
    source: Image.Image | None
    seed: int
    named: dict[str, Image.Image] = field(default_factory=dict)


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


def stored(state: ServerState, request: Request, ident: str, param: str) -> StoredResponse:
    record = state.responses.get(ident, owner_of(request.headers.get("authorization")))
    if record is None:
        config = state.config
        raise APIError(
            404,
            f"no response {ident!r}: it was never made with this API key, was deleted, or has "
            f"expired (responses are kept {config.response_ttl_s:g} s, the latest "
            f"{config.max_stored_responses}); start a new conversation without "
            "previous_response_id",
            param=param,
            code="response_not_found",
        )
    return record


# --------------------------------------------------------------------------------- plan
async def plan_response(state: ServerState, request: Request, body: ResponsesRequest) -> Plan:
    """Check everything a request asks before any model work: a 4xx names the problem."""
    state.check_model(body.model)
    tool = image_tool(body.tools)
    choice = body.tool_choice
    forced = choice == "required" or not isinstance(choice, str)
    if forced and tool is None:
        raise APIError(
            400,
            "tool_choice asks for the image_generation tool but tools does not list it; add "
            "tools=[{'type': 'image_generation'}]",
            param="tool_choice",
        )
    owner = owner_of(request.headers.get("authorization"))
    messages: list[Message] = []
    images: list[Image.Image] = []
    named: dict[str, Image.Image] = {}
    if body.previous_response_id is not None:
        previous = stored(state, request, body.previous_response_id, "previous_response_id")
        messages, images, named = previous.messages, previous.images, previous.named
    new, new_images = await asyncio.to_thread(read_input, state, body.input, named)
    system = []
    if body.instructions is not None:
        system = [
            {"role": "system", "content": state.check_text(body.instructions, "instructions")}
        ]
    budget = body.max_output_tokens or state.config.max_new_tokens
    state.check_range(budget, "max_output_tokens", 1, state.config.max_new_tokens, "the limit")
    action = "edit" if tool is not None and tool.action == "edit" else "generate"
    drawing = tool is not None and choice != "none"
    source = None
    if drawing and action == "edit":
        if not images and not new_images:
            raise APIError(
                400,
                "the image_generation tool's action is 'edit' but the conversation holds no "
                "image; attach one as an input_image, draw one first, or use action 'generate'",
                param="tools",
                code="no_image_to_edit",
            )
        source = new_images[-1] if new_images else images[-1]
        if not new_images:  # the edit's turn shows its source, as pipe.edit's prompt does
            last = new[-1]
            new[-1] = {"role": "user", "content": f"{IMAGE_IN_PROMPT}\n{last['content']}"}
            new_images = [source]
    room = state.tokens_per_image if forced else budget
    fitted = fit_history(
        state.pipeline, system + messages, images, new, new_images, room, drawing=forced
    )
    seed = state.seed(body.seed)
    text = None
    if not forced:
        text = TextRequest(
            fitted.messages,
            fitted.images,
            max_new_tokens=budget,
            temperature=0.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=seed,
            may_draw=drawing,
        )
    key = None
    if drawing:
        steps, guidance = sampling_settings(state, tool.num_inference_steps, tool.guidance_scale)
        strength = None
        if action == "edit":
            strength = DEFAULTS.edit_strength if tool.strength is None else tool.strength
        key = ImageSettings("draw", steps, guidance, strength=strength)
        state.check_size(None if tool.size == "auto" else tool.size)
    return Plan(
        new_id("resp"), body, owner, len(system), fitted, text, key, action, source, seed, named
    )


def image_tool(tools: list[dict[str, Any]]) -> ImageGenerationTool | None:
    """The image_generation tool of ``tools``, checked; any other tool is a 400."""
    found = None
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "image_generation":
            raise APIError(
                400,
                f"tools[{i}] is a {kind!r} tool, which this model does not have; it has only "
                "the image_generation tool",
                param=f"tools[{i}]",
                code="unsupported_tool",
            )
        if found is not None:
            raise APIError(400, "tools lists image_generation twice; list it once", param="tools")
        found = _validated(ImageGenerationTool, tool, f"tools[{i}]")
    return found


def read_input(
    state: ServerState, items: str | list[dict[str, Any]], named: dict[str, Image.Image]
) -> tuple[list[Message], list[Image.Image]]:
    """The input as ChatML messages with image markers, and the decoded images in order."""
    if isinstance(items, str):
        return [{"role": "user", "content": state.check_text(items, "input")}], []
    if not items:
        raise APIError(400, "input is empty; send some text", param="input")
    if len(items) > state.config.max_messages:
        raise APIError(
            400,
            f"input has {len(items)} items, over the limit of {state.config.max_messages}",
            param="input",
        )
    messages: list[Message] = []
    images: list[Image.Image] = []
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "item_reference":
            ref = _validated(ItemReference, item, where)
            if ref.id not in named:
                raise APIError(
                    400,
                    f"{where} references {ref.id!r}, which is no image of this conversation; "
                    "reference the id of an image_generation_call of an earlier response",
                    param=where,
                )
            images.append(named[ref.id])
            messages.append({"role": "user", "content": IMAGE_IN_PROMPT})
            continue
        if kind != "message":
            raise APIError(
                400,
                f"{where} has type {kind!r}; this server takes messages (with input_text and "
                "input_image parts) and item_reference items",
                param=where,
            )
        message = _validated(InputMessage, {**item, "type": "message"}, where)
        if message.role in ("system", "developer"):
            raise APIError(
                400,
                f"{where} is a {message.role} message; pass it as instructions",
                param=where,
            )
        parts = [message.content] if isinstance(message.content, str) else message.content
        pieces: list[tuple[bool, str]] = []
        for j, part in enumerate(parts):
            param = f"{where}.content" + ("" if isinstance(message.content, str) else f"[{j}]")
            if isinstance(part, str):
                pieces.append((False, state.check_text(part, param, False)))
            elif isinstance(part, InputImage):
                if message.role != "user" or part.image_url is None:
                    raise APIError(
                        400,
                        f"{param} must be an image in a user message, given inline as "
                        "image_url='data:image/png;base64,…' (file ids are not supported)",
                        param=param,
                    )
                url = part.image_url
                images.append(image_from_data_url(url, state.config.max_image_pixels, param))
                pieces.append((True, IMAGE_IN_PROMPT))
            else:
                pieces.append((False, state.check_text(part.text, f"{param}.text", False)))
        messages.append({"role": message.role, "content": join_parts(pieces)})
    if len(images) > state.config.max_images_per_request:
        raise APIError(
            400,
            f"input holds {len(images)} images, over the limit of "
            f"{state.config.max_images_per_request} per request",
            param="input",
        )
    if messages[-1]["role"] != "user":
        raise APIError(400, "input must end with a user message", param="input")
    return messages, images


def _validated(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = validation_message(list(exc.errors()))
        raise APIError(
            400, f"{where}: {message}", param=f"{where}.{param}" if param else where
        ) from exc


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
