"""Server throughput: the same requests sent one after another and all at once, side by side.

    python benchmarks/serving.py [--model DIR] [--requests 16] [--steps 20] [--max-tokens 16]

Starts the server (``cheers.serving``, default settings) on a free loopback port in this
process, then for image generations (one image each, seeds 0..N−1) and for questions about an
image: sends N requests sequentially (each after the previous answer) and N concurrently (N
client threads), and prints requests per second of both, their ratio, and the batch sizes the
batcher formed. Same server, same requests, one run.
"""

from __future__ import annotations

import argparse
import base64
import io
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
import uvicorn

from cheers.loading import DEFAULT_MODEL_DIR
from cheers.pipeline import CheersPipeline
from cheers.serving import ServerConfig, create_app


class Server:
    """uvicorn in a thread on a free port."""

    def __init__(self, app) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join()


def measure(send: Callable[[httpx.Client, int], None], n: int, concurrent: bool) -> float:
    """Seconds to answer requests 0..n−1, one client in turn or n clients at once."""
    clients = [httpx.Client(timeout=600) for _ in range(n if concurrent else 1)]
    start = time.perf_counter()
    if concurrent:
        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda i: send(clients[i], i), range(n)))
    else:
        for i in range(n):
            send(clients[0], i)
    seconds = time.perf_counter() - start
    for c in clients:
        c.close()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    pipe = CheersPipeline.from_pretrained(args.model)
    app = create_app(pipe, ServerConfig(max_batch_images=args.requests))
    batcher = app.state.serving.batcher
    png = io.BytesIO()
    pipe("a red circle", num_inference_steps=8, generator=0).images[0].save(png, format="PNG")
    image_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()

    def generate(client: httpx.Client, i: int) -> None:
        body = {"prompt": "a red circle", "seed": i, "num_inference_steps": args.steps}
        response = client.post(f"{server.url}/v1/images/generations", json=body)
        response.raise_for_status()

    def ask(client: httpx.Client, i: int) -> None:
        content = [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": "What color is the shape?"},
        ]
        body = {
            "model": "cheers",
            "messages": [{"role": "user", "content": content}],
            "max_tokens": args.max_tokens,
            "temperature": 0.7,
            "seed": i,
        }
        response = client.post(f"{server.url}/v1/chat/completions", json=body)
        response.raise_for_status()

    n = args.requests
    print(
        f"{n} requests, images {pipe.resolution}px × {args.steps} steps, answers ≤ "
        f"{args.max_tokens} tokens, {torch.get_num_threads()} torch threads"
    )
    print(
        f"{'requests':<22}{'sequential req/s':>18}{'concurrent req/s':>18}{'ratio':>8}"
        f"{'batch sizes (concurrent)':>28}"
    )
    with Server(app) as server:
        for name, send in (("text-to-image", generate), ("image question", ask)):
            send(httpx.Client(timeout=600), 0)  # warm up
            sequential = measure(send, n, concurrent=False)
            before = len(batcher.stats.batch_jobs)
            concurrent = measure(send, n, concurrent=True)
            sizes = list(batcher.stats.batch_jobs)[before:]
            print(
                f"{name:<22}{n / sequential:>18.2f}{n / concurrent:>18.2f}"
                f"{sequential / concurrent:>7.2f}×{sizes!s:>28}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
