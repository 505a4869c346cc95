"""Reading a ``/v1/responses`` request into a :class:`Plan`: every check before model work.

The stored conversation of ``previous_response_id`` (private to the caller's API key), the new
input as messages and images, the tool and ``tool_choice`` (draw, edit, or text that may open an
image), and the conversation cut to fit the context. Every problem is a 4xx naming it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from PIL import Image
from pydantic import BaseModel, ValidationError

from cheers.pipeline.conversation import Fitted, fit_history
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextRequest
from cheers.samplers import DEFAULTS
from cheers.serving.chat import join_parts
from cheers.serving.errors import APIError, validation_message
from cheers.serving.images import image_from_data_url
from cheers.serving.images_api import sampling_settings
from cheers.serving.response_schemas import (
    ImageGenerationTool,
    InputImage,
    InputMessage,
    ItemReference,
    ResponsesRequest,
)
from cheers.serving.runner import ImageSettings
from cheers.serving.state import ServerState
from cheers.serving.store import StoredResponse, new_id, owner_of

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
        size = state.check_size(None if tool.size == "auto" else tool.size)
        native = (state.resolution, state.resolution)
        if size != native:
            # Conversations draw at the model's native size only; refuse rather than ignore.
            raise APIError(
                400,
                f"size {tool.size!r}: the image_generation tool draws at the native size "
                f"{state.resolution}x{state.resolution}; leave size out (or 'auto'), or use "
                "/v1/images/generations for other sizes",
                param="size",
            )
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
