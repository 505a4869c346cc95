"""``cheers serve``: the OpenAI-compatible server with batching and the web UI."""

from __future__ import annotations

import argparse
import sys
import time

from cheers.cli import flags
from cheers.errors import CheersError

NAME = "serve"
HELP = "serve the model over an OpenAI-compatible HTTP API, with a web UI"
DESCRIPTION = """\
Load the model once and serve it: /v1/chat/completions (text and images,
streaming), /v1/images/generations, /v1/images/edits, /v1/models and /health,
in the OpenAI API's shapes, and a web UI at /. Concurrent requests are batched.
Needs the serve extra: pip install "cheers[serve]". See docs/serving.md.

With --replicas N (or --autoscale MIN:MAX) the same API and UI are served by N
replicas on Ray Serve, each loading the model and batching on its own; Ray
restarts a replica that dies. Needs pip install "cheers[serve-ray]".

examples:
  cheers serve
  cheers serve --model ./Cheers --host 0.0.0.0 --port 8000 --max-queue 128
  cheers serve --replicas 2
  cheers serve --model ./Cheers --ray-address auto --autoscale 1:8 --gpus-per-replica 1"""


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
    ray = p.add_argument_group("replicas (Ray Serve)")
    ray.add_argument("--replicas", type=int, metavar="N", help="serve with N replicas on Ray Serve")
    ray.add_argument(
        "--autoscale",
        metavar="MIN:MAX",
        help="let Ray Serve keep between MIN and MAX replicas, by load (instead of --replicas)",
    )
    ray.add_argument(
        "--gpus-per-replica",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs each replica reserves (1: one GPU each; 0: CPU replicas; default: 0)",
    )
    ray.add_argument(
        "--cpus-per-replica",
        type=float,
        default=1.0,
        metavar="C",
        help="CPU cores each replica reserves and its torch threads (default: 1)",
    )
    ray.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster to join (`auto` on a node where `ray start` ran); default: "
        "start a local one",
    )
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise CheersError(f"--port must be in 0..65535, got {args.port}")
    from cheers.serving import ServerConfig, serve  # a CheersError if the extra is missing

    options = {} if args.max_queue is None else {"max_queue": args.max_queue}
    config = ServerConfig(**options)  # checks the values before the (slow) model load
    if args.replicas is None and args.autoscale is None:
        serve(flags.pipeline(args), config, host=args.host, port=args.port)
        return 0
    return _run_replicas(args, config)


def _autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, sep, high = text.partition(":")
    if not (sep and low.isdigit() and high.isdigit()):
        raise CheersError(f"--autoscale must be MIN:MAX (e.g. 1:4), got {text!r}")
    return int(low), int(high)


def _run_replicas(args: argparse.Namespace, config) -> int:
    """Serve on Ray Serve until interrupted (Ctrl-C stops the replicas and a local Ray)."""
    if args.replicas is not None and args.autoscale is not None:
        raise CheersError("give --replicas or --autoscale, not both")
    from cheers.serving import replicas  # a CheersError if Ray Serve is missing

    settings = replicas.ReplicaSettings(
        model=args.model,
        dtype=args.dtype,
        device=args.device,
        lora=args.lora,
        quantize=args.quantize,
        offload=args.offload,
        compile=args.compile,
        server=config,
        replicas=1 if args.replicas is None else args.replicas,
        autoscale=_autoscale(args.autoscale),
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
    )
    try:  # an interrupt while the replicas start stops them too
        replicas.start(settings, host=args.host, port=args.port, address=args.ray_address)
        print(f"serving on http://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        replicas.stop()
    return 0
