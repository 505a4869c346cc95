"""``cheers generate``: text-to-image, one PNG per image, paths printed to stdout."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from cheers._files import output_folder
from cheers.cli import flags
from cheers.cli.output import output_paths, save_image, slugify
from cheers.errors import CheersError
from cheers.samplers import DEFAULTS

NAME = "generate"
HELP = "make images from a text description"
DESCRIPTION = """\
Generate images from text prompts and save them as PNG files; the paths are
printed. Each prompt gets --num-images images.

examples:
  cheers generate "a red fox in the snow" --model ./Cheers --seed 0
  cheers generate "a cat" "a dog" --num-images 2 --steps 40 --out pets/
  cheers generate "a lighthouse at dusk" --out lighthouse.png"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", nargs="+", metavar="PROMPT", help="what the image should show")
    p.add_argument(
        "--num-images",
        type=int,
        default=1,
        metavar="N",
        help="images per prompt (each from other noise)",
    )
    flags.add_out_flag(
        p,
        "outputs",
        "a folder for the images, named NN-prompt-words.png (existing files of the same name "
        "are replaced), or one file name when one image is made (.png; .jpg, .webp, .bmp "
        "and .tif are written in their format)",
    )
    p.add_argument(
        "--gate-maps",
        metavar="DIR",
        help="also record the gate value of every image token at every step and write "
        "DIR/gates.png (a heat-map strip) and DIR/gates.safetensors (see docs/evaluation.md)",
    )
    flags.add_image_flags(p, steps=DEFAULTS.num_inference_steps)
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    flags.check_image_flags(args)
    if args.num_images < 1:
        raise CheersError(f"--num-images must be at least 1, got {args.num_images}")
    names = [
        f"{i:02d}-{slugify(prompt)}.png"
        for i, prompt in enumerate(p for p in args.prompts for _ in range(args.num_images))
    ]
    paths = output_paths(args.out, names)
    gate_dir = None
    if args.gate_maps:
        gate_dir = output_folder(Path(args.gate_maps), f"--gate-maps {args.gate_maps}")
    pipe = flags.pipeline(args)
    # Only --gate-maps needs the recorder (forward hooks on the gate; cheers.evaluation.gates).
    recorder = None
    if gate_dir is not None:
        from cheers.evaluation.gates import GateRecorder

        recorder = GateRecorder(pipe)
    with recorder or contextlib.nullcontext():
        images = pipe.text_to_image(
            args.prompts,
            num_inference_steps=args.steps,
            guidance_scale=flags.guidance(args),
            time_shift=args.shift,
            sampler=args.sampler,
            num_images_per_prompt=args.num_images,
            generator=flags.seed(args),
            progress=not args.no_progress,
        ).images
    for image, path in zip(images, paths, strict=True):
        print(save_image(image, path))
    if recorder is not None and gate_dir is not None:
        from cheers.evaluation.gates import write_gate_maps

        for path in write_gate_maps(recorder.maps(images=len(images)), gate_dir, images):
            print(path)
    return 0
