"""What every route shares: the settings, the batcher, and the checks and waits they all use.

The checks turn each limit of :class:`~cheers.serving.config.ServerConfig` into a 400 that names
the parameter, the problem and the fix. :meth:`ServerState.run` queues a job and waits for it
while watching the connection: a client that goes away has its queued work dropped.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from cheers.errors import CheersError
from cheers.pipeline.arguments import check_image_size, parse_size
from cheers.serving.batching import Batcher, Job
from cheers.serving.config import ServerConfig
from cheers.serving.errors import APIError, validation_message
from cheers.serving.store import ResponseStore

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline

M = TypeVar("M", bound=BaseModel)


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


@dataclass
class ServerState:
    """The app's shared state (``app.state.serving``)."""

    config: ServerConfig
    batcher: Batcher
    resolution: int  # the model's native image side (the default size)
    control_tokens: tuple[str, ...]  # special-token text no request may contain
    created: int  # when the model was loaded (Unix time), for /v1/models
    pipeline: CheersPipeline  # read-only here: tokenising, the context length; runs in the batcher
    responses: ResponseStore  # conversations kept for previous_response_id

    @property
    def tokens_per_image(self) -> int:
        return self.pipeline.model.tokens_per_image

    # ------------------------------------------------------------------ bodies
    async def read_json(self, request: Request, model: type[M]) -> M:
        """The JSON body parsed into ``model``; 415 for another content type, 400 if invalid."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise APIError(
                415,
                f"the body must be JSON with Content-Type: application/json, got "
                f"{content_type or 'no Content-Type'!r}",
                code="unsupported_media_type",
            )
        body = await request.body()
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            message, param = validation_message(list(exc.errors()))
            raise APIError(400, message, param=param) from exc

    # ------------------------------------------------------------------ checks
    def check_model(self, name: str | None, required: bool = True) -> None:
        if name is None and not required:
            return
        if name != self.config.model_name:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server serves "
                f"{self.config.model_name!r} (see GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def check_text(self, text: str, param: str, required: bool = True) -> str:
        """A prompt or message: not blank (when required), not too long, no control tokens."""
        if required and not text.strip():
            raise APIError(400, f"{param} is empty; write some text", param=param)
        limit = self.config.max_prompt_chars
        if len(text) > limit:
            raise APIError(
                400,
                f"{param} has {len(text)} characters, over the limit of {limit}; shorten it",
                param=param,
                code="string_above_max_length",
            )
        for token in self.control_tokens:
            if token in text:
                raise APIError(
                    400,
                    f"{param} contains the control token {token!r}; the server writes the chat "
                    "template and image markers itself (send images as image_url parts), so "
                    "remove it from the text",
                    param=param,
                )
        return text

    def check_range(self, value: int, param: str, low: int, high: int, what: str) -> int:
        if not low <= value <= high:
            raise APIError(
                400,
                f"{param} must be between {low} and {high} ({what}), got {value}",
                param=param,
            )
        return value

    def check_size(self, size: str | None) -> tuple[int, int]:
        """The request's ``size`` ("WxH"; left out or "auto": native) as (height, width)."""
        config = self.pipeline.model.config
        try:
            height, width = (None, None) if size in (None, "auto") else parse_size(size)
            return check_image_size(height, width, config)
        except CheersError as err:
            raise APIError(400, f"size {size!r}: {err}", param="size") from err

    def check_response_format(self, response_format: str | None) -> None:
        if response_format not in (None, "b64_json"):
            raise APIError(
                400,
                f"response_format {response_format!r} is not supported: images come back "
                "inline as base64 PNG; pass response_format='b64_json' or leave it out",
                param="response_format",
            )

    @staticmethod
    def seed(seed: int | None) -> int:
        """The request's seed, or a fresh random one (every image is reproducible from it)."""
        return secrets.randbelow(2**31) if seed is None else seed

    # -------------------------------------------------------------------- jobs
    async def run(self, request: Request, job: Job) -> Any:
        """Queue ``job`` and wait for its result; drop it if the client goes away first."""
        self.batcher.submit(job)
        return await self.wait(request, job, job.future)

    async def next_event(self, request: Request, job: Job) -> Any:
        """The next event a streaming job emits (:data:`END_OF_EVENTS` after the last)."""
        return await self.wait(request, job, asyncio.ensure_future(job.events.get()))

    async def wait(self, request: Request, job: Job, awaited: asyncio.Future) -> Any:
        watcher = asyncio.ensure_future(_disconnected(request))
        try:
            done, _ = await asyncio.wait({awaited, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if awaited in done:
                return awaited.result()
            self.batcher.drop(job)  # before any cancel: drop() skips jobs already done
            if awaited is not job.future:
                awaited.cancel()
            raise ClientGone()
        finally:
            watcher.cancel()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: only that can come)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
