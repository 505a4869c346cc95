"""``cheers quantize``: write a model folder with 2- or 4-bit weights (decoupleQ or RTN)."""

from __future__ import annotations

import argparse
import sys

from cheers.transforms.lowbit import BITS, DEFAULT_GROUP_SIZE, DEFAULT_LOWBIT_GROUPS
from cheers.transforms.targets import TARGET_GROUPS

NAME = "quantize"
HELP = "write a copy of a model with 2- or 4-bit weights (decoupleQ or round-to-nearest)"
DESCRIPTION = """\
Quantize the linear layers of a float model folder to 2 or 4 bits (an integer
part and a float16 scale and zero per group of input columns) and write a
folder that every command loads with --model. decoupleQ chooses the integers
and the floats to keep each layer's output on the calibration data, then
refines the floats block by block; rtn rounds to the nearest grid point and
needs no data. See docs/finetuning.md for the format and measured quality.

examples:
  cheers quantize ./Cheers ./Cheers-w4 --bits 4 --method decoupleq --calibration calib.jsonl
  cheers quantize ./Cheers ./Cheers-w2 --bits 2 --calibration data/train.jsonl --samples 128
  cheers quantize ./Cheers ./Cheers-rtn4 --bits 4 --method rtn"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="the float model folder (or Hub id)")
    p.add_argument("out", metavar="OUT", help="the folder to write the quantized model to")
    p.add_argument("--bits", type=int, choices=BITS, default=4, help="bits a weight (default 4)")
    p.add_argument(
        "--method",
        choices=["decoupleq", "rtn"],
        default="decoupleq",
        help="decoupleq (needs --calibration) or rtn, round-to-nearest (default decoupleq)",
    )
    p.add_argument(
        "--calibration",
        metavar="DATA",
        help="a JSONL file of samples in the training format (images relative to it); "
        "required for decoupleq; with rtn it only measures the layers' output errors",
    )
    p.add_argument(
        "--samples", type=int, default=64, metavar="N", help="calibration samples used (64)"
    )
    p.add_argument(
        "--group-size",
        type=int,
        default=DEFAULT_GROUP_SIZE,
        metavar="G",
        help=f"input columns per scale and zero, a multiple of 8; 0: one per output channel "
        f"(default {DEFAULT_GROUP_SIZE})",
    )
    p.add_argument(
        "--groups",
        default=",".join(DEFAULT_LOWBIT_GROUPS),
        metavar="LIST",
        help=f"comma-separated layer groups to quantize, of {', '.join(TARGET_GROUPS)} "
        f"but projectors (default {','.join(DEFAULT_LOWBIT_GROUPS)})",
    )
    p.add_argument(
        "--block-steps",
        type=int,
        default=100,
        metavar="N",
        help="Adam steps refining each block's scales and zeros on its output (decoupleq; "
        "0 skips the refinement; default 100)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def run(args: argparse.Namespace) -> int:
    """Prints the quantized model's folder; the errors it reached go to stderr."""
    from pathlib import Path

    from cheers.errors import CheersError
    from cheers.quantization import QuantizeSettings, quantize_folder

    if args.samples < 1:
        raise CheersError(f"--samples must be ≥ 1, got {args.samples}")
    if args.method == "decoupleq" and not args.calibration:
        raise CheersError(
            "--method decoupleq needs --calibration DATA (a JSONL file in the training "
            "format); or use --method rtn, which needs no data"
        )
    settings = QuantizeSettings(
        method=args.method,
        bits=args.bits,
        group_size=args.group_size,
        groups=tuple(g for g in args.groups.split(",") if g),
        block_steps=args.block_steps,
    )
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise CheersError(f"OUT {args.out} is an existing file; pass a folder path")
    folder, report = quantize_folder(
        args.model,
        args.out,
        settings,
        args.calibration,
        samples=args.samples,
        progress=not args.no_progress,
    )
    if report.summary():
        print(report.summary(), file=sys.stderr)
    print(folder)
    return 0
