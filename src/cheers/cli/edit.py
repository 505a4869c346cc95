"""``cheers edit``: edit one image following an instruction, save it as PNG."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from cheers.cli import flags
from cheers.cli.output import output_paths, save_image, slugify
from cheers.errors import CheersError
from cheers.samplers import DEFAULTS

NAME = "edit"
HELP = "change an image following an instruction"
DESCRIPTION = """\
Edit an image following a text instruction and save the result as PNG; the
path is printed.

examples:
  cheers edit photo.jpg --instruction "make it winter" --model ./Cheers
  cheers edit cat.png -i "turn the cat into a tiger" --strength 0.8 --out tiger.png"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="the image file to edit")
    p.add_argument(
        "--instruction", "-i", required=True, metavar="TEXT", help="what to change in the image"
    )
    p.add_argument(
        "--strength",
        type=float,
        metavar="S",
        default=0.9,
        help="how far from the source the edit may go, in (0, 1]: 1 starts from pure noise, "
        "lower keeps more of the source and runs only that share of --steps",
    )
    flags.add_out_flag(
        p,
        "outputs",
        "a file name (.png; .jpg, .webp, .bmp and .tif are written in their format), or a "
        "folder for <image name>-<instruction words>.png (an existing file of that name is "
        "replaced)",
    )
    flags.add_image_flags(p, steps=DEFAULTS.num_inference_steps)
    flags.add_size_flags(p)
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    flags.check_image_flags(args)
    if not 0.0 < args.strength <= 1.0:
        raise CheersError(f"--strength must be in (0, 1], got {args.strength}")
    if int(args.strength * args.steps + 1e-9) < 2:
        needed = math.ceil(2 / args.strength - 1e-9)
        raise CheersError(
            f"--strength {args.strength} with --steps {args.steps} leaves fewer than 2 "
            f"denoising steps; use --steps {needed} or more"
        )
    size = flags.image_size(args)
    (source,) = flags.load_images([args.image])
    stem = slugify(Path(args.image).stem)
    (path,) = output_paths(args.out, [f"{stem}-{slugify(args.instruction)}.png"])
    pipe = flags.pipeline(args)
    (image,) = pipe.edit(
        source,
        args.instruction,
        num_inference_steps=args.steps,
        guidance_scale=flags.guidance(args),
        time_shift=args.shift,
        strength=args.strength,
        sampler=args.sampler,
        generator=flags.seed(args),
        progress=not args.no_progress,
        **size,
    ).images
    print(save_image(image, path))
    return 0
