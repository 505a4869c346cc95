"""Throughput of one process against two: torchrun ranks for batch work, Ray Serve replicas for
serving, side by side in one run.

    python benchmarks/scale_out.py ranks    [--n 2] [--steps 20] [--rounds 2]
    python benchmarks/scale_out.py replicas [--requests 32] [--steps 20] [--rounds 2]

``ranks``: ``cheers eval shapes-gen`` (the embedded model, ``--n`` prompts per category, 4
images each, held-out prompts too) in one process of one thread, in one process of two threads,
and under ``torchrun --nproc-per-node 2`` (one thread each); prints the wall time of each
command (process start and model load included) and the images per second of the benchmark's
own clock, and the ratios against one process of one thread. ``replicas``: one local Ray of two
CPUs serving the embedded model with one replica of one thread, one of two threads, and two of
one thread; ``--requests`` concurrent clients each ask once for an image (``--steps`` steps) and
then once for an answer about an image (16 tokens); prints requests per second and the ratios.
Each configuration is measured ``--rounds`` times, the configurations taking turns, and the best
round is kept (a shared machine slows some rounds down).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------- ranks
def run_eval(processes: int, threads: int, args: argparse.Namespace, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT / "src"))
    flags = ["eval", "shapes-gen", "--n", str(args.n), "--steps", str(args.steps), "--no-progress",
             "--out", str(out)]  # fmt: skip
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    cmd = [sys.executable, *(launcher if processes > 1 else []), "-m", "cheers"]
    cmd += ["--", *flags] if processes > 1 else flags
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    timings = json.loads((out / "report.json").read_text())["timings"]
    return {"wall_s": wall, "images_per_s": timings["images"] / timings["total_s"]}


def ranks(args: argparse.Namespace) -> None:
    configs = {"1 process × 1 thread": (1, 1), "1 process × 2 threads": (1, 2),
               "2 ranks × 1 thread": (2, 1)}  # fmt: skip
    best: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, (processes, threads) in configs.items():
                got = run_eval(processes, threads, args, Path(tmp) / f"{r}-{processes}-{threads}")
                if name not in best or got["images_per_s"] > best[name]["images_per_s"]:
                    best[name] = got
    base = best["1 process × 1 thread"]
    print(f"shapes-gen --n {args.n} ({args.n * 8} prompts × 4 images), {args.steps} steps")
    print(f"{'':24s}{'wall s':>8s}{'ratio':>8s}{'images/s':>10s}{'ratio':>8s}")
    for name, got in best.items():
        print(
            f"{name:24s}{got['wall_s']:8.1f}{base['wall_s'] / got['wall_s']:7.2f}×"
            f"{got['images_per_s']:10.2f}{got['images_per_s'] / base['images_per_s']:7.2f}×"
        )


# -------------------------------------------------------------------------------- replicas
def replicas(args: argparse.Namespace) -> None:
    import httpx
    import ray

    from cheers.loading import default_model_path
    from cheers.pipeline import CheersPipeline
    from cheers.serving import ServerConfig, replicas

    pipe = CheersPipeline.from_pretrained(default_model_path())
    png = io.BytesIO()
    pipe("a red circle", num_inference_steps=8, generator=0).images[0].save(png, format="PNG")
    image_url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    def session(i: int) -> None:
        with httpx.Client(timeout=600) as client:
            body = {"prompt": "a red circle", "seed": i, "num_inference_steps": args.steps}
            client.post(f"{url}/v1/images/generations", json=body).raise_for_status()
            content = [{"type": "image_url", "image_url": {"url": image_url}},
                       {"type": "text", "text": "What color is the shape?"}]  # fmt: skip
            chat = {"model": "cheers", "messages": [{"role": "user", "content": content}],
                    "max_tokens": 16, "temperature": 0.7, "seed": i}  # fmt: skip
            client.post(f"{url}/v1/chat/completions", json=chat).raise_for_status()

    configs = {"1 replica × 1 thread": (1, 1.0), "1 replica × 2 threads": (1, 2.0),
               "2 replicas × 1 thread": (2, 1.0)}  # fmt: skip
    best: dict[str, float] = {}
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    rows = max(16, args.requests)
    server = ServerConfig(max_batch_images=rows, max_batch_texts=rows)
    try:
        for r in range(args.rounds):
            for name, (n, cpus) in configs.items():
                settings = replicas.ReplicaSettings(
                    server=server, replicas=n, cpus_per_replica=cpus
                )
                if not ray.is_initialized():
                    replicas.start(settings, port=port, ray_init={"num_cpus": 2, "_temp_dir": temp,
                                   "object_store_memory": 80 * 2**20})  # fmt: skip
                else:  # the old replicas go first: the new ones may need their CPUs
                    from ray import serve

                    serve.delete(replicas.APP_NAME)
                    serve.run(replicas.application(settings), name=replicas.APP_NAME,
                              route_prefix="/")  # fmt: skip
                session(0)  # warm up (every replica gets some of the timed load anyway)
                start = time.perf_counter()
                with ThreadPoolExecutor(args.requests) as pool:
                    list(pool.map(session, range(args.requests)))
                rate = 2 * args.requests / (time.perf_counter() - start)
                best[name] = max(best.get(name, 0.0), rate)
                print(f"round {r + 1}: {name}: {rate:.2f} req/s", file=sys.stderr)
    finally:
        replicas.stop()
    base = best["1 replica × 1 thread"]
    print(f"{args.requests} clients × (1 image of {args.steps} steps + 1 answer of 16 tokens)")
    print(f"{'':24s}{'req/s':>8s}{'ratio':>8s}")
    for name, rate in best.items():
        print(f"{name:24s}{rate:8.2f}{rate / base:7.2f}×")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["ranks", "replicas"])
    parser.add_argument("--n", type=int, default=2, help="ranks: prompts per category")
    parser.add_argument("--requests", type=int, default=32, help="replicas: concurrent clients")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    ranks(args) if args.what == "ranks" else replicas(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
