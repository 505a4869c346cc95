"""Flag groups shared by the commands, their checks, and the model load they lead to.

A command adds the groups it needs (``add_model_flags``, ``add_image_flags``, …) and reads
them back through the helpers here, so a flag means the same in every command.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cheers import loading
from cheers.errors import CheersError
from cheers.pipeline.arguments import MAX_NEW_TOKENS, parse_size
from cheers.samplers import DEFAULTS, SAMPLERS

if TYPE_CHECKING:
    from PIL import Image

    from cheers.pipeline import CheersPipeline

Flags = argparse.ArgumentParser | argparse._ArgumentGroup

# ------------------------------------------------------------------------------------ model
#: ``--model --dtype --device --quantize --offload --lora --compile``, written once beside the
#: load they feed (the evaluation commands use the same group).
add_model_flags = loading.add_model_flags


def pipeline(args: argparse.Namespace) -> CheersPipeline:
    """The pipeline the model flags name (looked up on the module so tests can stand in)."""
    return loading.load_from_args(args)


def load_images(paths: Sequence[str]) -> list[Image.Image]:
    """Read the input images before the (slow) model load so that a typo fails at once."""
    from cheers.image import load_image

    return [load_image(p) for p in paths]


# ------------------------------------------------------------------------------------- seed
def add_seed_flag(parser: Flags, help_text: str) -> None:
    parser.add_argument("--seed", type=int, metavar="N", help=help_text)


def check_seed(args: argparse.Namespace) -> None:
    """A given --seed must fit a generator (checked before the model loads)."""
    if args.seed is not None and not 0 <= args.seed < 2**64:
        raise CheersError(f"--seed must be in [0, 2**64), got {args.seed}; pass a smaller number")


def seed(args: argparse.Namespace) -> int:
    """The seed to use; a drawn one is reported so that a good result can be made again."""
    if args.seed is not None:
        return args.seed
    drawn = random.randrange(2**31)
    print(f"seed: {drawn} (pass --seed {drawn} to reproduce)", file=sys.stderr)
    return drawn


# ----------------------------------------------------------------------------------- images
def add_image_flags(parser: argparse.ArgumentParser, steps: int, seed: bool = True) -> None:
    """The sampling group: steps, guidance, time shift, sampler, seed (unless the command has
    its own), progress bar."""
    group = parser.add_argument_group("sampling")
    group.add_argument(
        "--steps",
        type=int,
        metavar="N",
        default=steps,
        help="denoising steps; fewer is faster but rougher (at least 2)",
    )
    guidance_flags = group.add_mutually_exclusive_group()
    guidance_flags.add_argument(
        "--guidance",
        type=float,
        metavar="SCALE",
        default=DEFAULTS.guidance_scale,
        help="classifier-free guidance scale: higher follows the text more closely",
    )
    guidance_flags.add_argument(
        "--no-guidance",
        action="store_true",
        help="turn classifier-free guidance off (about twice as fast, usually worse images)",
    )
    group.add_argument(
        "--shift",
        type=float,
        metavar="ALPHA",
        default=DEFAULTS.time_shift,
        help="time shift α of the step schedule; below 1 spends more steps on coarse structure",
    )
    group.add_argument(
        "--sampler",
        choices=sorted(SAMPLERS),
        default=DEFAULTS.sampler,
        help="ODE solver: euler (the reference), heun (2 evaluations per step, 2nd order), "
        "ab2 (Adams-Bashforth, 1 evaluation per step, 2nd order)",
    )
    if seed:
        add_seed_flag(
            group,
            "random seed; the same seed and flags give the same image "
            "(default: a random seed, printed to stderr so the result can be reproduced)",
        )
    group.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar over the steps"
    )


def add_size_flags(parser: argparse.ArgumentParser) -> None:
    """The image size: ``--size WxH`` or ``--height`` / ``--width`` (native when left out)."""
    group = parser.add_argument_group("image size (default: the model's native size)")
    group.add_argument(
        "--size",
        metavar="WxH",
        help="width x height in pixels, e.g. 512x384: multiples of the model's latent patch "
        "x token merge (32 px for the released model), any aspect ratio",
    )
    group.add_argument("--height", type=int, metavar="H", help="height in pixels (as --size)")
    group.add_argument("--width", type=int, metavar="W", help="width in pixels (as --size)")


def image_size(args: argparse.Namespace) -> dict[str, int | None]:
    """The size flags as pipeline keyword arguments (checked by the pipeline)."""
    if args.size is not None:
        if args.height is not None or args.width is not None:
            raise CheersError("give either --size WxH or --height/--width, not both")
        height, width = parse_size(args.size)
        return {"height": height, "width": width}
    return {"height": args.height, "width": args.width}


def check_image_flags(args: argparse.Namespace) -> None:
    check_seed(args)
    if args.steps < 2:
        raise CheersError(f"--steps must be at least 2, got {args.steps}")
    if not (math.isfinite(args.guidance) and args.guidance >= 0):
        raise CheersError(
            f"--guidance must be a finite number ≥ 0, got {args.guidance}; use --no-guidance "
            "to turn guidance off"
        )
    if not (math.isfinite(args.shift) and args.shift > 0):
        raise CheersError(f"--shift must be a positive number, got {args.shift}")


def guidance(args: argparse.Namespace) -> float | None:
    return None if args.no_guidance else args.guidance


# ------------------------------------------------------------------------------------- text
def add_text_flags(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """The decoding group: answer length, temperature, top-p, seed."""
    group = parser.add_argument_group("decoding")
    group.add_argument(
        "--max-new-tokens",
        type=int,
        metavar="N",
        help=f"the longest answer, in tokens (default: up to {MAX_NEW_TOKENS}, fewer when the "
        "prompt and images leave less room in the model's context)",
    )
    group.add_argument(
        "--temperature",
        type=float,
        metavar="T",
        default=0.0,
        help="sampling temperature; 0 always picks the most likely token",
    )
    group.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        default=1.0,
        help="nucleus sampling: keep the most likely tokens up to this probability mass "
        "(only used when --temperature > 0; in (0, 1])",
    )
    add_seed_flag(group, seed_help)


def check_text_flags(args: argparse.Namespace) -> None:
    check_seed(args)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise CheersError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        raise CheersError(f"--temperature must be 0 or more, got {args.temperature}")
    if not 0.0 < args.top_p <= 1.0:
        raise CheersError(f"--top-p must be in (0, 1], got {args.top_p}")


def decoding(args: argparse.Namespace) -> dict[str, object]:
    """The decoding flags as pipeline keyword arguments."""
    return {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }


# ----------------------------------------------------------------------------------- output
def add_out_flag(parser: argparse.ArgumentParser, default: str, what: str) -> None:
    parser.add_argument("--out", metavar="PATH", default=default, help=what)
