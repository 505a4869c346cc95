"""Fixtures of the serving tests: the embedded model, and a live server on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from live_server import TEST_CONFIG, LiveServer

from cheers.loading import default_model_path
from cheers.pipeline import CheersPipeline
from cheers.serving import create_app


@pytest.fixture(autouse=True)
def _threads():
    """One torch thread (overrides the suite's two): the server's worker shares this process
    with the event loop and the test's clients, and on a loaded 2-core machine a second
    intra-op thread spinning at every barrier made each model call ~10x slower (measured)."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def pipe() -> CheersPipeline:
    return CheersPipeline.from_pretrained(default_model_path())


@pytest.fixture(scope="session")
def live(pipe) -> Iterator[LiveServer]:
    server = LiveServer(create_app(pipe, TEST_CONFIG)).start()
    yield server
    server.stop()


@pytest.fixture
def client(live):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0) as c:
        yield c
