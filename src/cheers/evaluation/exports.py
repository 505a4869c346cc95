"""``cheers eval geneval`` and ``cheers eval dpg``: write the folders of the official scorers.

    cheers eval geneval --metadata evaluation_metadata.jsonl --out DIR [--settings geneval-long]
    cheers eval dpg --prompts dpg_bench/prompts --out DIR

The sampling flags default to the row of :data:`~cheers.evaluation.settings.SETTINGS` named by
``--settings``; any flag given overrides it. The settings used are written to
``DIR/cheers_settings.json`` next to the images.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cheers._files import atomic_write
from cheers.evaluation import flags
from cheers.evaluation.command import EvalCommand, OutTarget, folder_target
from cheers.evaluation.geneval import (
    DpgExport,
    GenEvalExport,
    read_dpg_prompts,
    read_geneval_metadata,
)

SETTINGS_NAME = "cheers_settings.json"


def _geneval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metadata",
        required=True,
        metavar="PATH",
        help="GenEval's evaluation_metadata.jsonl, or a file of the same lines with rewritten "
        "(long) prompts (then use --settings geneval-long)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder the scorer reads")
    flags.add_sampling_flags(p, "geneval", per_prompt=True, sampler=False)
    flags.add_run_flags(p, 4, "prompts per model call")


def _dpg_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prompts",
        required=True,
        metavar="DIR",
        help="DPG-Bench's prompts/ folder of <name>.txt files",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder the scorer reads")
    flags.add_sampling_flags(p, "dpg", per_prompt=False, sampler=False)
    flags.add_run_flags(p, 4, "prompts per model call")


def _build_geneval(args: argparse.Namespace) -> GenEvalExport:
    s = flags.sampling_settings(args)
    flags.check_counts(args, "batch_size")
    prompts = read_geneval_metadata(args.metadata)  # bad input fails here, before the model
    return GenEvalExport(prompts, Path(args.out), s, args.batch_size, args.settings)


def _build_dpg(args: argparse.Namespace) -> DpgExport:
    s = flags.sampling_settings(args)
    flags.check_counts(args, "batch_size")
    prompts = read_dpg_prompts(args.prompts)
    return DpgExport(prompts, Path(args.out), s, args.batch_size, args.settings)


def finish_export(
    result: dict[str, Any],
    target: OutTarget,
    args: argparse.Namespace,  # noqa: ARG001 - the Command.finish interface
) -> None:
    """Record the settings beside the images; print the counts (stderr) and the folder."""
    record = {"benchmark": result["task"], **result["settings"]}
    text = (json.dumps(record, indent=2) + "\n").encode("utf-8")
    atomic_write(target.folder / SETTINGS_NAME, lambda f: f.write(text))
    counts = result["counts"]
    print(
        f"{counts['written']} prompt(s) written, {counts['skipped']} already there",
        file=sys.stderr,
    )
    print(target.folder)


GENEVAL = EvalCommand(
    "geneval",
    "write GenEval's folder layout (score it with GenEval's evaluate_images.py)",
    _geneval_flags,
    _build_geneval,
    folder_target,
    finish_export,
)
DPG = EvalCommand(
    "dpg",
    "write DPG-Bench's 2×2 grids (score them with its compute_dpg_bench.py)",
    _dpg_flags,
    _build_dpg,
    folder_target,
    finish_export,
)

__all__ = ["DPG", "GENEVAL", "finish_export"]
