"""``cheers eval geneval`` and ``cheers eval dpg``: write the folders of the official scorers.

    cheers eval geneval --metadata evaluation_metadata.jsonl --out DIR [--settings geneval-long]
    cheers eval dpg --prompts dpg_bench/prompts --out DIR

The sampling flags default to the row of :data:`~cheers.evaluation.settings.SETTINGS` named by
``--settings``; any flag given overrides it. The settings used are written to
``DIR/cheers_settings.json`` next to the images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cheers.errors import CheersError
from cheers.evaluation.common import out_folder
from cheers.evaluation.geneval import (
    read_dpg_prompts,
    read_geneval_metadata,
    write_dpg,
    write_geneval,
)
from cheers.evaluation.settings import SETTINGS, Settings, settings
from cheers.loading import LORA_FLAG_HELP


def _flags(p: argparse.ArgumentParser, source: str, source_help: str, default: str) -> None:
    p.add_argument(source, required=True, metavar="PATH", help=source_help)
    p.add_argument("--out", required=True, metavar="DIR", help="folder the scorer reads")
    p.add_argument("--model", metavar="DIR", help="model folder (default: the embedded model)")
    p.add_argument(
        "--settings",
        default=default,
        choices=list(SETTINGS),
        help=f"row of the settings table (docs/evaluation.md; default: {default})",
    )
    p.add_argument("--steps", type=int, metavar="N", help="denoising steps (overrides)")
    p.add_argument("--guidance", type=float, metavar="SCALE", help="guidance (overrides)")
    p.add_argument("--shift", type=float, metavar="ALPHA", help="time shift α (overrides)")
    p.add_argument("--seed", type=int, metavar="N", help="base seed (overrides)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="prompts per call")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="precision of the weights")
    p.add_argument("--device", metavar="{cpu,cuda,cuda:N}", help="where to run the model")
    p.add_argument("--lora", metavar="DIR[:SCALE]", help=LORA_FLAG_HELP)


def _geneval_flags(p: argparse.ArgumentParser) -> None:
    _flags(p, "--metadata", "GenEval's evaluation_metadata.jsonl (or its long variant)", "geneval")
    p.add_argument("--images-per-prompt", type=int, metavar="N", help="samples (overrides)")


def _dpg_flags(p: argparse.ArgumentParser) -> None:
    _flags(p, "--prompts", "DPG-Bench's prompts/ folder of <name>.txt files", "dpg")


def resolved_settings(args: argparse.Namespace) -> Settings:
    """The ``--settings`` row with the flags given on the command line applied."""
    s = settings(args.settings)
    override = {
        "steps": args.steps,
        "guidance": args.guidance,
        "time_shift": args.shift,
        "seed": args.seed,
        "images_per_prompt": getattr(args, "images_per_prompt", None),
    }
    s = dataclasses.replace(s, **{k: v for k, v in override.items() if v is not None})
    if s.steps < 2 or s.images_per_prompt < 1 or s.seed < 0 or args.batch_size < 1:
        raise CheersError(
            "--steps must be at least 2, --images-per-prompt and --batch-size at least 1, "
            f"--seed 0 or more (got {s.steps}, {s.images_per_prompt}, {args.batch_size}, "
            f"{s.seed})"
        )
    if not s.time_shift > 0:
        raise CheersError(f"--shift must be a positive number, got {s.time_shift}")
    return s


@dataclass(frozen=True)
class Export:
    """One export command: help, flags, how its prompts are read and written."""

    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    read: Callable[[argparse.Namespace], list]
    write: Callable[..., dict[str, int]]


EXPORTS: dict[str, Export] = {
    "geneval": Export(
        "write GenEval's folder layout (score it with GenEval's evaluate_images.py)",
        _geneval_flags,
        lambda args: read_geneval_metadata(args.metadata),
        write_geneval,
    ),
    "dpg": Export(
        "write DPG-Bench's 2×2 grids (score them with its compute_dpg_bench.py)",
        _dpg_flags,
        lambda args: read_dpg_prompts(args.prompts),
        write_dpg,
    ),
}


def run_export(args: argparse.Namespace, *, pipe: Any = None) -> int:
    """Write the images of ``args.eval_benchmark``; prints the output folder. Returns 0."""
    export = EXPORTS[args.eval_benchmark]
    s = resolved_settings(args)
    items = export.read(args)  # bad input fails here, before the model loads
    out = out_folder(args.out)
    if pipe is None:
        from cheers.loading import load_pipeline

        pipe = load_pipeline(args.model, args.dtype, args.device, args.lora)
    counts = export.write(pipe, items, out, s, args.batch_size, not args.no_progress)
    record = {"benchmark": args.eval_benchmark, "settings": args.settings, **s.to_dict()}
    (out / "cheers_settings.json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"{counts['written']} prompt(s) written, {counts['skipped']} already there",
        file=sys.stderr,
    )
    print(out)
    return 0


__all__ = ["EXPORTS", "resolved_settings", "run_export"]
