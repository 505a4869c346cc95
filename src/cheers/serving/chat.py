"""``POST /v1/chat/completions``: conversations with text and images, whole or streamed.

Image parts must be ``data:`` URLs (nothing is fetched). Each message becomes one ChatML turn;
an image part becomes the image marker ``<im_start><image><im_end>`` at its place, with a line
break between an image and a neighbouring text part, so ``[image, text]`` is exactly the prompt
:meth:`~cheers.pipeline.CheersPipeline.understand` builds. With ``stream: true`` the answer
comes as server-sent events, one chunk per generated token, then a chunk with the
``finish_reason`` and ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from PIL import Image

from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextAnswer, TextRequest
from cheers.serving.batching import END_OF_EVENTS, Job
from cheers.serving.errors import APIError
from cheers.serving.images import image_from_data_url
from cheers.serving.runner import TEXT_KEY
from cheers.serving.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    ImagePart,
    Usage,
    completion_id,
    dump,
)
from cheers.serving.state import ClientGone, ServerState

router = APIRouter()


def conversation(
    state: ServerState, messages: list[ChatMessage]
) -> tuple[list[dict[str, str]], list[Image.Image]]:
    """The messages as ChatML turns with image markers, and the decoded images in order."""
    limit = state.config.max_messages
    if len(messages) > limit:
        raise APIError(
            400,
            f"messages has {len(messages)} entries, over the limit of {limit}; drop old turns",
            param="messages",
        )
    turns, images = [], []
    for i, message in enumerate(messages):
        param = f"messages[{i}].content"
        if isinstance(message.content, str):
            turns.append(
                {"role": message.role, "content": state.check_text(message.content, param, False)}
            )
            continue
        pieces: list[tuple[bool, str]] = []  # (is_image, text)
        for j, part in enumerate(message.content):
            where = f"{param}[{j}]"
            if isinstance(part, ImagePart):
                if message.role != "user":
                    raise APIError(
                        400,
                        f"{where} is an image in a {message.role} message; only user messages "
                        "may hold images",
                        param=where,
                    )
                images.append(
                    image_from_data_url(
                        part.image_url.url, state.config.max_image_pixels, f"{where}.image_url.url"
                    )
                )
                pieces.append((True, IMAGE_IN_PROMPT))
            else:
                pieces.append((False, state.check_text(part.text, f"{where}.text", False)))
        turns.append({"role": message.role, "content": join_parts(pieces)})
    if len(images) > state.config.max_images_per_request:
        raise APIError(
            400,
            f"the messages hold {len(images)} images, over the limit of "
            f"{state.config.max_images_per_request} per request",
            param="messages",
        )
    if not images and not any(t["content"].strip() for t in turns):
        raise APIError(
            400, "the messages hold no text and no image; write something", param="messages"
        )
    return turns, images


def join_parts(pieces: list[tuple[bool, str]]) -> str:
    """One message's content from its (is_image, text) parts: images side by side, a line
    break wherever text meets an image or other text."""
    text = ""
    for k, (is_image, piece) in enumerate(pieces):
        if k and not (is_image and pieces[k - 1][0]):
            text += "\n"
        text += piece
    return text


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.serving
    body = await state.read_json(request, ChatCompletionRequest)
    state.check_model(body.model)
    if body.n not in (None, 1):
        raise APIError(
            400,
            f"n must be 1 (one answer per request), got {body.n}; send several requests "
            "instead, they are decoded together",
            param="n",
        )
    budget = body.max_completion_tokens or body.max_tokens or state.config.max_new_tokens
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    state.check_range(budget, param, 1, state.config.max_new_tokens, "the server's limit")
    turns, images = await asyncio.to_thread(conversation, state, body.messages)
    text_request = TextRequest(
        turns,
        images,
        max_new_tokens=budget,
        temperature=0.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        seed=state.seed(body.seed),
    )
    job = Job(TEXT_KEY, text_request, stream=body.stream)
    ident, created = completion_id(), int(time.time())
    try:
        if not body.stream:
            answer: TextAnswer = await state.run(request, job)
            return JSONResponse(dump(completion(ident, created, state.config.model_name, answer)))
        state.batcher.submit(job)
        # Wait for the first token (or the end) before answering, so that an error found while
        # preparing the request is still a 4xx rather than an event in a 200 stream.
        first = await state.next_event(request, job)
        if first is END_OF_EVENTS:
            await job.future  # raises the request's error, if any
    except ClientGone:
        return Response(status_code=499)
    usage = body.stream_options is not None and body.stream_options.include_usage
    events = sse(state, job, first, ident, created, usage)
    return StreamingResponse(events, media_type="text/event-stream")


def completion(ident: str, created: int, model: str, answer: TextAnswer) -> ChatCompletion:
    n = len(answer.token_ids)
    return ChatCompletion(
        id=ident,
        created=created,
        model=model,
        choices=[
            Choice(
                message=AssistantMessage(content=answer.text), finish_reason=answer.finish_reason
            )
        ],
        usage=Usage(
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=n,
            total_tokens=answer.prompt_tokens + n,
        ),
    )


async def sse(
    state: ServerState,
    job: Job,
    first: Any,
    ident: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[str]:
    """The event stream: the role, one chunk per token, the finish reason, ``[DONE]``."""
    model = state.config.model_name

    def chunk(delta: Delta, finish: str | None = None, usage: Usage | None = None) -> str:
        choices = [ChunkChoice(delta=delta, finish_reason=finish)]
        body = ChatCompletionChunk(
            id=ident, created=created, model=model, choices=choices, usage=usage
        )
        return f"data: {json.dumps(dump(body))}\n\n"

    try:
        yield chunk(Delta(role="assistant", content=""))
        event = first
        while event is not END_OF_EVENTS:
            yield chunk(Delta(content=event.text))
            event = await job.events.get()
        try:
            answer: TextAnswer = await job.future
        except Exception as exc:  # failed after streaming began: say so in the stream
            message = (
                str(exc)
                if isinstance(exc, ValueError)
                else f"internal error ({type(exc).__name__})"
            )
            error = {
                "error": {"message": message, "type": "server_error", "param": None, "code": None}
            }
            yield f"data: {json.dumps(error)}\n\n"
        else:
            n = len(answer.token_ids)
            usage = Usage(
                prompt_tokens=answer.prompt_tokens,
                completion_tokens=n,
                total_tokens=answer.prompt_tokens + n,
            )
            yield chunk(Delta(), answer.finish_reason, usage if include_usage else None)
        yield "data: [DONE]\n\n"
    finally:
        if not job.future.done():  # the client went away mid-stream
            state.batcher.drop(job)
