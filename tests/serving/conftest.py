"""A live server on a free loopback port, on the embedded model, for the serving tests."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn  # noqa: E402

from cheers.loading import default_model_path  # noqa: E402
from cheers.pipeline import CheersPipeline  # noqa: E402
from cheers.serving import ServerConfig, create_app  # noqa: E402

#: Few steps keep every image request cheap; the server takes them as an extension.
STEPS = 4

#: Small limits so that going over them costs little; a window wide enough for concurrent
#: requests to meet in one batch.
TEST_CONFIG = ServerConfig(
    max_body_bytes=2 * 1024 * 1024,
    max_image_pixels=1024 * 1024,
    max_steps=50,
    max_new_tokens=64,
    admission_window_s=0.05,
)


class LiveServer:
    """uvicorn serving ``app`` in a thread, on a port the OS picked."""

    def __init__(self, app) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def batcher(self):
        return self.app.state.serving.batcher

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()


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


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def decode_b64_png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")
