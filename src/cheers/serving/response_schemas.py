"""The Responses API's request and output shapes, as far as this server implements them.

Requests are strict like the other endpoints' (:mod:`cheers.serving.schemas`): an unknown
parameter is refused by name. Tools are checked by hand so that a tool this model does not have
gets its own message rather than a schema error. Outputs are plain dicts in the API's layout.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field

from cheers.serving.schemas import MAX_SEED, _Request


class InputText(_Request):
    type: Literal["input_text"]
    text: str


class OutputText(_Request):
    """Text of an assistant message sent back as input (stateless conversations)."""

    type: Literal["output_text"]
    text: str
    annotations: list[Any] = Field(default_factory=list)


class InputImage(_Request):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None


ContentPart = Annotated[InputText | OutputText | InputImage, Field(discriminator="type")]


class InputMessage(_Request):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: str | None = None


class ItemReference(_Request):
    """An earlier output item, by id: here an ``image_generation_call`` of the conversation,
    whose image the user shows again (e.g. to edit that one rather than the last)."""

    type: Literal["item_reference"]
    id: str


class ImageGenerationTool(_Request):
    """The ``image_generation`` tool. ``action``: "generate" draws (seeing the conversation),
    "edit" edits the conversation's last image, "auto" generates. ``num_inference_steps``,
    ``guidance_scale`` and ``strength`` (of edits) are extensions."""

    type: Literal["image_generation"]
    action: Literal["generate", "edit", "auto"] = "auto"
    size: str | None = None
    output_format: Literal["png"] | None = None
    partial_images: int | None = Field(None, ge=0, le=0)
    quality: Literal["auto"] | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = Field(None, ge=0.0)
    strength: float | None = Field(None, gt=0.0, le=1.0)


class ToolChoiceType(_Request):
    type: Literal["image_generation"]


class ResponsesRequest(_Request):
    """``POST /v1/responses``. ``seed`` is an extension (``extra_body``); a left-out
    ``temperature`` means greedy decoding."""

    model: str
    input: str | list[dict[str, Any]]  # messages and item references, checked one by one
    instructions: str | None = None
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: Literal["auto", "none", "required"] | ToolChoiceType = "auto"
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=MAX_SEED)
    stream: bool = False
    store: bool = True
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None


# ------------------------------------------------------------------------------------ output
def message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "message",
        "id": ident,
        "role": "assistant",
        "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def image_item(
    ident: str, action: str, size: str, result: str | None, status: str = "completed"
) -> dict[str, Any]:
    return {
        "type": "image_generation_call",
        "id": ident,
        "status": status,
        "action": action,
        "size": size,
        "output_format": "png",
        "result": result,
        "revised_prompt": None,
    }


def response_body(
    ident: str,
    body: ResponsesRequest,
    model: str,
    output: list[dict[str, Any]],
    status: str,
    usage: tuple[int, int] | None,
    incomplete: str | None = None,
) -> dict[str, Any]:
    """The response object; ``usage`` is (input tokens, output tokens)."""
    tool_choice = body.tool_choice
    return {
        "id": ident,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "output": output,
        "previous_response_id": body.previous_response_id,
        "instructions": body.instructions,
        "tools": body.tools,
        "tool_choice": tool_choice if isinstance(tool_choice, str) else tool_choice.model_dump(),
        "parallel_tool_calls": False,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "max_output_tokens": body.max_output_tokens,
        "store": body.store,
        "metadata": body.metadata or {},
        "error": None,
        "incomplete_details": None if incomplete is None else {"reason": incomplete},
        "usage": None
        if usage is None
        else {
            "input_tokens": usage[0],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage[1],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage[0] + usage[1],
        },
    }
