"""``cheers serve``: the OpenAI-compatible server with batching and the web UI."""

from __future__ import annotations

import argparse

from cheers.cli import flags
from cheers.errors import CheersError

NAME = "serve"
HELP = "serve the model over an OpenAI-compatible HTTP API, with a web UI"
DESCRIPTION = """\
Load the model once and serve it: /v1/chat/completions (text and images,
streaming), /v1/images/generations, /v1/images/edits, /v1/models and /health,
in the OpenAI API's shapes, and a web UI at /. Concurrent requests are batched.
Needs the serve extra: pip install "cheers[serve]". See docs/serving.md.

examples:
  cheers serve
  cheers serve --model ./Cheers --host 0.0.0.0 --port 8000 --max-queue 128"""


def add_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("server")
    group.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    group.add_argument(
        "--port", type=int, default=8000, help="port to listen on (default: %(default)s)"
    )
    group.add_argument(
        "--max-queue",
        type=int,
        default=None,
        metavar="N",
        help="requests that may wait for the model; one more is answered 429 (default: 64)",
    )
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CheersError(f"--port must be in 0..65535, got {args.port}")
    from cheers.serving import ServerConfig, serve  # a CheersError if the extra is missing

    options = {} if args.max_queue is None else {"max_queue": args.max_queue}
    config = ServerConfig(**options)  # checks the values before the (slow) model load
    serve(flags.pipeline(args), config, host=args.host, port=args.port)
    return 0
