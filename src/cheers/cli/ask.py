"""``cheers ask``: answer one question about one or more images."""

from __future__ import annotations

import argparse

from cheers.cli import flags

NAME = "ask"
HELP = "answer a question about one or more images"
DESCRIPTION = """\
Ask a question about images and print the answer. Several images are all put
into the same prompt, so the question can compare them.

examples:
  cheers ask photo.jpg --question "What is in the picture?" --model ./Cheers
  cheers ask a.png b.png -q "What differs between the two images?\""""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="image file(s), all shown in one prompt"
    )
    p.add_argument(
        "--question", "-q", required=True, metavar="TEXT", help="what to ask about the image(s)"
    )
    flags.add_text_flags(
        p, "random seed for --temperature > 0 sampling (default: none, answers then vary)"
    )
    flags.add_model_flags(p)


def run(args: argparse.Namespace) -> int:
    flags.check_text_flags(args)
    images = flags.load_images(args.images)
    pipe = flags.pipeline(args)
    print(pipe.understand(images, args.question, generator=args.seed, **flags.decoding(args)))
    return 0
