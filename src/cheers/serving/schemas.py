"""Requests and responses in the OpenAI API's shapes (the official ``openai`` client works as is).

Requests are strict: a wrong type is an error, not a silent conversion, and a parameter this
server does not implement is refused by name instead of ignored (``extra="forbid"``). Range
limits that depend on the server's settings (``n``, steps, tokens) are checked by the routes
against :class:`~cheers.serving.config.ServerConfig`.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Seeds the API accepts; image i of a request uses seed + i, which must stay below 2**64.
MAX_SEED = 2**63


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


# ------------------------------------------------------------------------------------- chat
class TextPart(_Request):
    type: Literal["text"]
    text: str


class ImageURL(_Request):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Request):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``. Left-out ``temperature`` means greedy decoding (the
    pipeline's default), not OpenAI's 1.0."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, lt=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = None
    user: str | None = None


# ----------------------------------------------------------------------------------- images
class _ImageFields(BaseModel):
    """The fields both image endpoints take: OpenAI's, and the ``seed``,
    ``num_inference_steps`` and ``guidance_scale`` extensions."""

    prompt: str
    model: str | None = None
    n: int = 1
    size: str | None = None
    response_format: str | None = None
    seed: int | None = Field(None, ge=0, lt=MAX_SEED)
    num_inference_steps: int | None = None
    guidance_scale: float | None = Field(None, ge=0.0)
    user: str | None = None


class ImageGenerationRequest(_Request, _ImageFields):
    """``POST /v1/images/generations``; ``seed``, ``num_inference_steps``, ``guidance_scale``
    and ``negative_prompt`` are extensions (the openai client passes them in ``extra_body``)."""

    negative_prompt: str | None = None


class ImageEditForm(_ImageFields):
    """The fields of ``POST /v1/images/edits`` (multipart form: text fields are parsed)."""

    model_config = ConfigDict(extra="forbid")

    strength: float | None = Field(None, gt=0.0, le=1.0)


# -------------------------------------------------------------------------------- responses
class ImageData(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


class ImagesResponse(BaseModel):
    created: int = Field(default_factory=lambda: int(time.time()))
    data: list[ImageData]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "cheers"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict of a response model (``None`` fields kept, as OpenAI writes them)."""
    return model.model_dump(mode="json")
