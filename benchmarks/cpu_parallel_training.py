"""Does a CPU train the default model faster in one process or in several under torchrun?

    python benchmarks/cpu_parallel_training.py [--cores 2] [--steps 40] [--batch 32]

Runs the same short `cheers train` stage twice on the embedded default model and the same
Shapes samples: once as one process with ``--cores`` threads, once as ``--cores`` DDP processes
(gloo) of one thread each, and prints samples/s of each (steps after the first five, so
start-up and warm-up are left out), their ratio, and how far the final losses differ (the
global batch is the same, so they should agree to float rounding).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cheers.shapes.dataset import write_split

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src" / "cheers" / "default_model"
SKIP = 5  # steps left out of the rate


def recipe(data: Path, out: Path, steps: int, batch: int) -> str:
    return f"""
[model]
from_pretrained = "{DEFAULT_MODEL}"

[data]
files = [{{ path = "{data}" }}]
max_length = 256

[[stages]]
name = "joint"
trainable = "all"
steps = {steps}
batch_size = {batch}
lr = 1e-4
warmup = 0.0
schedule = "constant"

[run]
output_dir = "{out}"
seed = 0
save_every = {steps}
keep_last = 1
"""


def run(command: list[str], threads: int, config: Path, out: Path) -> dict[str, float]:
    """Train ``config`` (whose output_dir is ``out``); its rate past SKIP steps and last loss."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run([*command, str(config), "--no-progress"], env=env, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr.decode()[-3000:]}")
    with (out / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    first, last = rows[SKIP - 1], rows[-1]
    seconds = float(last["elapsed_s"]) - float(first["elapsed_s"])
    rate = (int(last["samples"]) - int(first["samples"])) / seconds
    return {"samples_per_s": rate, "loss": float(last["loss"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=1024, help="Shapes samples to write")
    args = parser.parse_args(argv)
    if args.steps <= SKIP:
        parser.error(f"--steps must be more than {SKIP}")
    if args.batch % args.cores:
        parser.error("--batch must be a multiple of --cores (every process takes a share)")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = write_split(work / "data", "train", args.samples, seed=0)
        layouts = {
            f"1 process × {args.cores} threads": (
                [sys.executable, "-m", "cheers", "train"],
                args.cores,
            ),
            f"{args.cores} processes × 1 thread (DDP)": (
                [
                    sys.executable,  # torchrun of this interpreter, whatever is on PATH
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    f"--nproc-per-node={args.cores}",
                    "-m",
                    "cheers",
                    "train",
                ],
                1,
            ),
        }
        results = {}
        for i, (name, (command, threads)) in enumerate(layouts.items()):
            config, out = work / f"run{i}.toml", work / f"run{i}"
            config.write_text(recipe(data, out, args.steps, args.batch))
            results[name] = run(command, threads, config, out)
            print(f"{name:34s} {results[name]['samples_per_s']:6.1f} samples/s", flush=True)
    single, ddp = results.values()
    print(f"DDP / single process: {ddp['samples_per_s'] / single['samples_per_s']:.2f}×")
    print(f"final loss difference: {abs(ddp['loss'] - single['loss']):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
