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

Many prompts: --prompts-file FILE (one prompt a line) writes image k of the
prompt on line L to OUT/<L:05d>-<k:02d>.png, each image from its own seed,
in batches of --batch-size prompts. Running it again draws only the missing
images; under torchrun the processes share the batches (same images).

examples:
  cheers generate "a red fox in the snow" --model ./Cheers --seed 0
  cheers generate "a cat" "a dog" --num-images 2 --steps 40 --out pets/
  cheers generate "a lighthouse at dusk" --out lighthouse.png
  torchrun --nproc-per-node 4 -m cheers generate --prompts-file prompts.txt --out images/"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompts", nargs="*", metavar="PROMPT", help="what the image should show")
    batch = p.add_argument_group("many prompts")
    batch.add_argument(
        "--prompts-file",
        metavar="FILE",
        help="a text file of prompts, one a line, instead of PROMPTs; --out is then a folder "
        "(see above)",
    )
    batch.add_argument(
        "--batch-size",
        type=int,
        default=4,
        metavar="N",
        help="with --prompts-file: prompts per model call (default: %(default)s)",
    )
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
    flags.add_size_flags(p)
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    flags.check_image_flags(args)
    if args.num_images < 1:
        raise CheersError(f"--num-images must be at least 1, got {args.num_images}")
    size = flags.image_size(args)
    if args.prompts_file is not None:
        if size != {"height": None, "width": None}:
            raise CheersError(
                "--size/--height/--width apply to PROMPTs; drop them with --prompts-file"
            )
        return _run_file(args)
    if not args.prompts:
        raise CheersError("give the prompts (PROMPT …) or --prompts-file FILE")
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
            **size,
            progress=not args.no_progress,
        ).images
    for image, path in zip(images, paths, strict=True):
        print(save_image(image, path))
    if recorder is not None and gate_dir is not None:
        from cheers.evaluation.gates import write_gate_maps

        for path in write_gate_maps(recorder.maps(images=len(images)), gate_dir, images):
            print(path)
    return 0


def _run_file(args: argparse.Namespace) -> int:
    """``--prompts-file``: the prompt-file export, resumable and sharded under torchrun."""
    from cheers.distributed import Shard
    from cheers.evaluation.benchmark import run_benchmark
    from cheers.evaluation.command import folder_target
    from cheers.evaluation.exports import finish_export
    from cheers.evaluation.geneval import PromptFileExport, read_prompt_lines
    from cheers.evaluation.settings import Settings

    if args.prompts:
        raise CheersError("give either PROMPTs or --prompts-file, not both")
    if args.gate_maps:
        raise CheersError("--gate-maps records one call; drop it with --prompts-file")
    if args.batch_size < 1:
        raise CheersError(f"--batch-size must be at least 1, got {args.batch_size}")
    # Every image has its own seed drawn from this one (0 when not given): reruns and other
    # processes must agree on it, so it is never drawn at random here.
    seed = 0 if args.seed is None else args.seed
    sampling = Settings(args.steps, flags.guidance(args), args.shift, args.num_images, seed)
    bench = PromptFileExport(
        read_prompt_lines(args.prompts_file),
        Path(args.out),
        sampling,
        args.batch_size,
        sampler=args.sampler,
    )
    target = folder_target(args.out)
    shard = Shard.from_env()
    try:
        args.device = shard.device(args.device)
        pipe = flags.pipeline(args)
        progress = not args.no_progress and shard.main
        result = run_benchmark(bench, pipe, progress=progress, shard=shard)
        if shard.main:
            finish_export(result, target, args)
    finally:
        shard.close()
    return 0
