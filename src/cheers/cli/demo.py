"""``cheers demo``: generate, answer and edit on the Shapes world; print the HTML page's path."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cheers._files import output_folder
from cheers.cli import flags
from cheers.errors import CheersError
from cheers.loading import is_embedded

NAME = "demo"
HELP = "show every ability of the model on one HTML page (no download needed)"
DESCRIPTION = """\
Generate images for a few prompts, answer questions about a few pictures and
edit one, then write an HTML page with the results and timings; its path is
printed. Without --model it uses the small model embedded in the package,
trained on the procedural Shapes world.

examples:
  cheers demo
  cheers demo --out my-demo --seed 3"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", default="cheers-demo", metavar="DIR", help="folder for index.html and the images"
    )
    p.add_argument("--steps", type=int, default=20, metavar="N", help="denoising steps per image")
    p.add_argument(
        "--guidance", type=float, default=3.0, metavar="SCALE", help="classifier-free guidance"
    )
    flags.add_seed_flag(p, "random seed of the generated images")
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    from cheers.evaluation.demo import run_demo, write_html

    if args.steps < 2:
        raise CheersError(f"--steps must be at least 2, got {args.steps}")
    out = output_folder(Path(args.out), f"--out {args.out}")
    pipe = flags.pipeline(args)
    seed = 0 if args.seed is None else args.seed
    result = run_demo(pipe, seed=seed, steps=args.steps, guidance=args.guidance)
    for name, seconds in result.timings.items():
        print(f"{name}: {seconds:.2f} s", file=sys.stderr)
    right, total = result.score
    print(
        f"{right} of {total} right (judged by the Shapes detector and the true answers)",
        file=sys.stderr,
    )
    embedded = is_embedded(args.model)
    name = "the embedded default model" if embedded else str(args.model)
    print(write_html(result, out, name, shapes_only=embedded))
    return 0
