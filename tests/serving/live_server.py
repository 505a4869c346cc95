"""What the serving tests share: a live server on a free loopback port, settings, image helpers."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time

import numpy as np
import uvicorn
from PIL import Image

from cheers.serving import ServerConfig

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


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def decode_b64_png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB")


def assert_same_image(served, reference) -> None:
    """Same pixels up to one level of 255: batching reorders float sums (~1e-4 apart)."""
    a = np.asarray(served, dtype=np.int16)
    b = np.asarray(reference, dtype=np.int16)
    assert a.shape == b.shape == (64, 64, 3)
    assert np.abs(a - b).max() <= 1
