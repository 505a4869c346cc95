"""A client that goes away has its queued work dropped; shutdown finishes in-flight requests."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from live_server import STEPS, LiveServer

from cheers.serving import ServerConfig, create_app

GEN = "/v1/images/generations"


class GatedPipeline:
    """The real pipeline, except that image generation waits for ``gate`` (holding the worker
    busy for as long as a test needs) and every call is recorded."""

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.calls: list[list[str]] = []

    def __getattr__(self, name):
        return getattr(self.pipe, name)

    def text_to_image(self, prompts, **options):
        self.calls.append(list(prompts))
        self.entered.set()
        assert self.gate.wait(60)
        return self.pipe.text_to_image(prompts, **options)


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached: {what}")
        time.sleep(0.01)


def generate(url: str, prompt: str, read_timeout: float = 60) -> httpx.Response:
    body = {"prompt": prompt, "num_inference_steps": STEPS, "seed": 0}
    return httpx.post(url + GEN, json=body, timeout=httpx.Timeout(60, read=read_timeout))


@pytest.fixture
def gated(pipe):
    gated = GatedPipeline(pipe)
    server = LiveServer(create_app(gated, ServerConfig(admission_window_s=0.0))).start()
    yield gated, server
    gated.gate.set()
    server.stop()


def test_a_client_that_goes_away_has_its_queued_work_dropped(gated):
    pipeline, server = gated
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(generate, server.url, "a red circle")
        assert pipeline.entered.wait(30)  # the worker now holds the first request
        with pytest.raises(httpx.ReadTimeout):
            generate(server.url, "a blue square", read_timeout=0.5)  # gives up while queued
        wait_until(lambda: server.batcher.stats.dropped == 1, "the queued job dropped")
        assert server.batcher.queued == 0
        pipeline.gate.set()
        assert first.result().status_code == 200
    assert pipeline.calls == [["a red circle"]]  # the abandoned request never ran


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_shutdown_finishes_running_and_queued_requests(gated):
    pipeline, server = gated
    chat = {"model": "cheers", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3}
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(generate, server.url, "a red circle")
        assert pipeline.entered.wait(30)
        queued = pool.submit(httpx.post, server.url + "/v1/chat/completions", json=chat, timeout=60)
        wait_until(lambda: server.batcher.queued == 1, "the chat request queued")
        server.server.should_exit = True  # what SIGTERM / Ctrl-C do
        wait_until(lambda: refuses_connections(server.port), "the server stopped listening")
        pipeline.gate.set()
        image, answer = running.result(), queued.result()
    assert image.status_code == 200 and len(image.json()["data"]) == 1
    assert answer.status_code == 200
    assert answer.json()["usage"]["completion_tokens"] == 3
    server.thread.join(30)
    assert not server.thread.is_alive()


def test_a_full_queue_answers_429_and_the_others_are_still_served(pipe):
    pipeline = GatedPipeline(pipe)
    config = ServerConfig(admission_window_s=0.0, max_queue=1)
    server = LiveServer(create_app(pipeline, config)).start()
    try:
        with ThreadPoolExecutor(2) as pool:
            running = pool.submit(generate, server.url, "a red circle")
            assert pipeline.entered.wait(30)
            queued = pool.submit(generate, server.url, "a blue square")
            wait_until(lambda: server.batcher.queued == 1, "the second request queued")
            refused = generate(server.url, "a green triangle")
            pipeline.gate.set()
            assert running.result().status_code == queued.result().status_code == 200
    finally:
        pipeline.gate.set()
        server.stop()
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "queue_full" and "queue is full" in error["message"]
    assert pipeline.calls == [["a red circle"], ["a blue square"]]
