"""``cheers lora merge``: fold a LoRA adapter into its base model (the work is in
:mod:`cheers.adapters`)."""

from __future__ import annotations

import argparse

NAME = "lora"
HELP = "work with LoRA adapters: merge one into its base model"
DESCRIPTION = """\
Fold a LoRA adapter (the adapter folder a training run with [model.lora] writes)
into the model it was trained on, and write the result as a released-format
folder that every command loads with --model. To use an adapter without merging,
pass --lora DIR[:SCALE] to any command that loads a model.

examples:
  cheers lora merge ./Cheers runs/mine/checkpoints/step-0000100/adapter ./Cheers-mine
  cheers lora merge ./Cheers runs/mine/checkpoints/step-0000100/adapter ./half --scale 0.5"""


def add_flags(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="lora_command", metavar="ACTION", required=True)
    merge = sub.add_parser(
        "merge",
        help="write BASE with ADAPTER folded in to OUT",
        description="Write BASE with ADAPTER folded into its weights to the folder OUT.",
    )
    merge.add_argument("base", metavar="BASE", help="the base model folder (or Hub id)")
    merge.add_argument("adapter", metavar="ADAPTER", help="the adapter folder")
    merge.add_argument("out", metavar="OUT", help="the folder to write the merged model to")
    merge.add_argument(
        "--scale",
        type=float,
        default=1.0,
        metavar="S",
        help="multiply the adapter's effect by S before merging",
    )


def run(args: argparse.Namespace) -> int:
    """Prints the merged model's folder."""
    from cheers.adapters import merge_lora_folder, parse_lora_spec

    spec = parse_lora_spec(f"{args.adapter}:{args.scale!r}")
    print(merge_lora_folder(args.base, spec.folder, args.out, scale=spec.scale))
    return 0
