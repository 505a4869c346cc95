"""The flag groups of ``cheers eval``, shared by its benchmarks, and their checks.

Every benchmark adds the groups it needs (:func:`add_run_flags`, :func:`add_sampling_flags`,
…) and builds itself from the parsed flags; the checks here fail on bad numbers before the
(slow) model load. The sampling flags default to a row of the settings table
(:data:`~cheers.evaluation.settings.SETTINGS`, chosen with ``--settings``): a flag given on the
command line overrides that row.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

from cheers.errors import CheersError
from cheers.evaluation.settings import SETTINGS, Settings, settings
from cheers.loading import add_model_flags
from cheers.samplers import DEFAULTS, SAMPLERS


def add_run_flags(p: argparse.ArgumentParser, batch: int, batch_help: str) -> None:
    """The model flag group (:func:`cheers.loading.add_model_flags`), ``--batch-size`` and
    ``--no-progress``: what every command has."""
    add_model_flags(p)
    p.add_argument("--batch-size", type=int, default=batch, metavar="N", help=batch_help)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_report_flags(p: argparse.ArgumentParser, n_default: int, n_help: str) -> None:
    """The flags of a Shapes benchmark that writes a report: set size, seed, canvas, grid."""
    p.add_argument(
        "--out",
        metavar="PATH",
        required=True,
        help="folder for report.json and grid.png (created; existing files are replaced), or "
        "the report's file name ending in .json (the grid goes beside it, same name, .png)",
    )
    p.add_argument("--n", type=int, default=n_default, metavar="N", help=n_help)
    p.add_argument(
        "--canvas",
        type=int,
        default=64,
        metavar="S",
        help="side of the Shapes canvas images are drawn and judged at",
    )
    p.add_argument(
        "--grid-cells", type=int, default=64, metavar="N", help="most samples drawn in grid.png"
    )


def add_seed_flag(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument(
        "--seed", type=int, metavar="N", help=f"picks the items and the noise ({default_help})"
    )


def add_heldout_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--n-heldout",
        type=int,
        metavar="N",
        help=f"held-out {what} (default: the same as --n)",
    )
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out compositions")


def add_sampling_flags(
    p: argparse.ArgumentParser,
    row: str,
    *,
    per_prompt: bool,
    sampler: bool = True,
    step_cache: bool = False,
) -> None:
    """``--settings`` (default ``row``) and the flags that override it; ``--images-per-prompt``,
    ``--sampler`` and ``--step-cache`` where the benchmark takes them."""
    g = p.add_argument_group("sampling (defaults: the --settings row, docs/evaluation.md)")
    g.add_argument(
        "--settings",
        default=row,
        choices=list(SETTINGS),
        help=f"row of the settings table whose values the flags below default to (default: {row})",
    )
    g.add_argument("--steps", type=int, metavar="N", help="denoising steps")
    exclusive = g.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--guidance", type=float, metavar="SCALE", help="classifier-free guidance scale"
    )
    exclusive.add_argument(
        "--no-guidance", action="store_true", help="turn classifier-free guidance off"
    )
    g.add_argument("--shift", type=float, metavar="ALPHA", help="time shift α")
    add_seed_flag(g, "default: the row's")
    if per_prompt:
        g.add_argument("--images-per-prompt", type=int, metavar="N", help="images per prompt")
    if sampler:
        g.add_argument(
            "--sampler",
            choices=sorted(SAMPLERS),
            default=DEFAULTS.sampler,
            help="ODE solver (cheers.samplers): euler is the reference",
        )
    if step_cache:
        g.add_argument(
            "--step-cache",
            type=int,
            default=0,
            metavar="K",
            help="evaluate the model every K-th step only and extrapolate the velocity in "
            "between (TaylorSeer-style; 0 = off)",
        )


def sampling_settings(args: argparse.Namespace) -> Settings:
    """The ``--settings`` row with the sampling flags given on the command line applied.

    Raises:
        CheersError: on a bad value, naming the flag.
    """
    s = settings(args.settings)
    override = {
        "steps": args.steps,
        "guidance": args.guidance,
        "time_shift": args.shift,
        "seed": args.seed,
        "images_per_prompt": getattr(args, "images_per_prompt", None),
    }
    s = dataclasses.replace(s, **{k: v for k, v in override.items() if v is not None})
    if s.steps < 2:
        raise CheersError(f"--steps must be at least 2, got {s.steps}")
    if not math.isfinite(s.guidance):
        raise CheersError(f"--guidance must be a finite number, got {s.guidance}")
    if not (math.isfinite(s.time_shift) and s.time_shift > 0):
        raise CheersError(f"--shift must be a positive number, got {s.time_shift}")
    if s.images_per_prompt < 1:
        raise CheersError(f"--images-per-prompt must be at least 1, got {s.images_per_prompt}")
    check_seed_flag(s.seed)
    return s


def guidance(args: argparse.Namespace, s: Settings) -> float | None:
    """The guidance scale to use: ``None`` (off) with ``--no-guidance``."""
    return None if args.no_guidance else s.guidance


def check_seed_flag(seed: int) -> None:
    if seed < 0:
        raise CheersError(f"--seed must be 0 or more, got {seed}")


def check_counts(args: argparse.Namespace, *flags: str) -> None:
    """Every named flag (``"n"``, ``"batch_size"``, …) that is set must be at least 1."""
    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise CheersError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def check_canvas(args: argparse.Namespace) -> None:
    if args.canvas not in (32, 64, 128):
        raise CheersError(f"--canvas must be 32, 64 or 128, got {args.canvas}")


def heldout(args: argparse.Namespace) -> dict[str, object]:
    """The held-out flags as benchmark arguments."""
    return {"heldout": not args.no_heldout, "n_heldout": args.n_heldout}


__all__ = [
    "add_heldout_flags",
    "add_report_flags",
    "add_run_flags",
    "add_sampling_flags",
    "add_seed_flag",
    "check_canvas",
    "check_counts",
    "check_seed_flag",
    "guidance",
    "heldout",
    "sampling_settings",
]
