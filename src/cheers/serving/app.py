"""The FastAPI app: OpenAI-shaped endpoints over one pipeline, and the web UI at ``/``.

    >>> from cheers.serving import ServerConfig, create_app, serve      # doctest: +SKIP
    >>> app = create_app(pipe, ServerConfig(max_queue=32))              # doctest: +SKIP
    >>> serve(pipe, host="127.0.0.1", port=8000)                        # doctest: +SKIP

Routes: ``GET /v1/models``, ``GET /health``, ``POST /v1/chat/completions``
(:mod:`~cheers.serving.chat`), ``POST /v1/images/generations`` and ``POST /v1/images/edits``
(:mod:`~cheers.serving.images_api`), ``POST /v1/responses`` with ``GET`` / ``DELETE
/v1/responses/{id}`` (:mod:`~cheers.serving.responses`), ``GET /`` (the UI). The model runs on
the batcher's one worker thread; shutting down finishes every queued and running request first.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from cheers.serving import chat, errors, images_api, responses
from cheers.serving.batching import Batcher
from cheers.serving.config import ServerConfig
from cheers.serving.limits import BodyLimit
from cheers.serving.runner import TEXT_KEY, PipelineRunner
from cheers.serving.schemas import ModelCard, ModelList, dump
from cheers.serving.state import ServerState
from cheers.serving.store import ResponseStore

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline

UI_DIR = Path(__file__).parent / "ui"


def control_tokens(pipeline: CheersPipeline) -> tuple[str, ...]:
    """The text of every special token of the tokenizer (a request may contain none)."""
    added = pipeline.tokenizer.backend.get_added_tokens_decoder().values()
    return tuple(sorted({t.content for t in added if t.special}, key=len, reverse=True))


def create_app(
    pipeline: CheersPipeline,
    config: ServerConfig | None = None,
    *,
    replicas: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> FastAPI:
    """The server app for ``pipeline`` (loaded once, shared by every request).

    ``replicas``, when the app is one of several replicas (:mod:`cheers.serving.replicas`),
    says how many serve; ``/health`` adds it as ``"replicas"``.
    """
    config = ServerConfig() if config is None else config
    runner = PipelineRunner(pipeline)
    batcher = Batcher(
        runner,
        max_queue=config.max_queue,
        admission_window_s=config.admission_window_s,
        max_rows=lambda key: config.max_batch_texts if key == TEXT_KEY else config.max_batch_images,
    )
    state = ServerState(
        config=config,
        batcher=batcher,
        resolution=pipeline.resolution,
        control_tokens=control_tokens(pipeline),
        created=int(time.time()),
        pipeline=pipeline,
        responses=ResponseStore(config.max_stored_responses, config.response_ttl_s),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.close()  # finishes queued and running work

    app = FastAPI(title="cheers", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serving = state
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    errors.install(app, config.max_body_bytes)
    app.include_router(chat.router)
    app.include_router(images_api.router)
    app.include_router(responses.router)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        card = ModelCard(id=config.model_name, created=state.created)
        return JSONResponse(dump(ModelList(data=[card])))

    @app.get("/v1/models/{name}")
    async def model(name: str) -> JSONResponse:
        state.check_model(name)
        return JSONResponse(dump(ModelCard(id=config.model_name, created=state.created)))

    @app.get("/health")
    async def health() -> JSONResponse:
        stats = batcher.stats
        body = {
            "status": "shutting_down" if batcher.closing else "ok",
            "model": config.model_name,
            "image_size": state.resolution,
            "queued": batcher.queued,
            "running": batcher.running,
            "batches": len(stats.batch_rows),
            "completed": stats.completed,
            "dropped": stats.dropped,
            "refused": stats.refused,
            "memory_splits": runner.splits,
        }
        if replicas is not None:
            body["replicas"] = await replicas()
        return JSONResponse(body, status_code=503 if batcher.closing else 200)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(UI_DIR / "index.html")

    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")

    return app


def serve(
    pipeline: CheersPipeline,
    config: ServerConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Serve ``pipeline`` with uvicorn until interrupted (Ctrl-C / SIGTERM finish in-flight
    requests before exiting)."""
    import uvicorn

    uvicorn.run(create_app(pipeline, config), host=host, port=port, log_level=log_level)
