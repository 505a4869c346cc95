"""``cheers eval``: run a Shapes benchmark on a model and write its report.

    cheers eval shapes-gen  --model DIR --out runs/gen  [--seed 0] [--n 10] [--steps 20]
    cheers eval shapes-vqa  --model DIR --out runs/vqa  [--n 200] [--batch-size 16]
    cheers eval shapes-edit --model DIR --out runs/edit [--n 60] [--steps 20] [--guidance 9.5]

Each writes ``report.json`` and ``grid.png`` into ``--out``, prints the score table and then
the two paths. The main ``cheers`` command line registers this with :func:`add_eval_parser`
(or :func:`add_eval_flags` on a parser it made) and dispatches to :func:`run_eval`; bad input
raises :class:`~cheers.errors.CheersError`, which that command line turns into
``error: ...`` and exit code 2. ``python -m cheers.evaluation`` runs it on its own.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cheers.errors import CheersError
from cheers.evaluation import report as report_mod
from cheers.evaluation import shapes_edit, shapes_gen, shapes_vqa
from cheers.evaluation.common import out_folder
from cheers.evaluation.exports import EXPORTS, run_export
from cheers.loading import LORA_FLAG_HELP, default_model_path, load_pipeline, resolve_device
from cheers.samplers import DEFAULTS, SAMPLERS

EXIT_USAGE = 2


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples as written and appends defaults that are not ``None``/``False``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default is None
            or action.default is False
            or action.default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


# ------------------------------------------------------------------------------------ flags
def _common_flags(
    p: argparse.ArgumentParser, n_default: int, n_help: str, batch: int, batch_help: str
) -> None:
    p.add_argument(
        "--model",
        metavar="DIR",
        help="the model folder (config.json, weights, tokenizer) or a Hub id "
        "(default: the model embedded in the package, if there is one)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        required=True,
        help="folder for report.json and grid.png (created; existing files are replaced)",
    )
    p.add_argument(
        "--seed", type=int, default=0, metavar="N", help="picks the benchmark set and the noise"
    )
    p.add_argument("--n", type=int, default=n_default, metavar="N", help=n_help)
    p.add_argument("--batch-size", type=int, default=batch, metavar="N", help=batch_help)
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
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="precision of the weights (default: bfloat16 on CUDA, float32 on CPU)",
    )
    p.add_argument(
        "--device",
        metavar="{cpu,cuda,cuda:N}",
        help="where to run the model (default: cuda if a GPU is available, else cpu)",
    )
    p.add_argument("--lora", metavar="DIR[:SCALE]", help=LORA_FLAG_HELP)


def _sampling_flags(p: argparse.ArgumentParser, steps: int, guidance: float, shift: float) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--steps", type=int, default=steps, metavar="N", help="denoising steps")
    exclusive = g.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--guidance",
        type=float,
        default=guidance,
        metavar="SCALE",
        help="classifier-free guidance scale",
    )
    exclusive.add_argument(
        "--no-guidance", action="store_true", help="turn classifier-free guidance off"
    )
    g.add_argument("--shift", type=float, default=shift, metavar="ALPHA", help="time shift α")
    g.add_argument(
        "--sampler",
        choices=sorted(SAMPLERS),
        default=DEFAULTS.sampler,
        help="ODE solver (cheers.samplers): euler is the reference",
    )
    g.add_argument(
        "--step-cache",
        type=int,
        default=0,
        metavar="K",
        help="shapes-gen: evaluate the model every K-th step only and extrapolate the velocity "
        "in between (TaylorSeer-style; 0 = off)",
    )


def _heldout_flags(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--n-heldout",
        type=int,
        metavar="N",
        help=f"held-out {what} (default: the same as --n)",
    )
    p.add_argument("--no-heldout", action="store_true", help="skip the held-out compositions")


def _gen_flags(p: argparse.ArgumentParser) -> None:
    _common_flags(
        p,
        shapes_gen.DEFAULT_N_PER_CATEGORY,
        "prompts per category (six categories)",
        shapes_gen.DEFAULT_BATCH_SIZE,
        "images per model call, rounded down to whole prompts",
    )
    p.add_argument(
        "--images-per-prompt",
        type=int,
        default=shapes_gen.DEFAULT_IMAGES_PER_PROMPT,
        metavar="N",
        help="images generated and judged for every prompt",
    )
    _heldout_flags(p, "prompts per category (colors, color_attr)")
    p.add_argument(
        "--no-dummy-image",
        action="store_true",
        help=(
            "do not put a noise image in front of the prompts (by default the model config's "
            "dummy_image_prefix decides: on for the released model, off for models trained here)"
        ),
    )
    _sampling_flags(
        p, shapes_gen.DEFAULT_STEPS, shapes_gen.DEFAULT_GUIDANCE, shapes_gen.DEFAULT_TIME_SHIFT
    )


def _vqa_flags(p: argparse.ArgumentParser) -> None:
    _common_flags(
        p, shapes_vqa.DEFAULT_N, "questions", shapes_vqa.DEFAULT_BATCH_SIZE, "questions per call"
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=shapes_vqa.DEFAULT_MAX_NEW_TOKENS,
        metavar="N",
        help="the longest answer, in tokens (answers are greedy)",
    )
    _heldout_flags(p, "questions")


def _edit_flags(p: argparse.ArgumentParser) -> None:
    _common_flags(
        p, shapes_edit.DEFAULT_N, "edits", shapes_edit.DEFAULT_BATCH_SIZE, "edits per model call"
    )
    p.add_argument(
        "--strength",
        type=float,
        default=shapes_edit.DEFAULT_STRENGTH,
        metavar="S",
        help="editing strength in (0, 1]; int(S · steps) must be at least 2",
    )
    _sampling_flags(
        p, shapes_edit.DEFAULT_STEPS, shapes_edit.DEFAULT_GUIDANCE, shapes_edit.DEFAULT_TIME_SHIFT
    )


def _guidance(args: argparse.Namespace) -> float | None:
    return None if args.no_guidance else args.guidance


def _heldout(args: argparse.Namespace) -> dict[str, Any]:
    return {"heldout": not args.no_heldout, "n_heldout": args.n_heldout}


def _run_gen(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    return shapes_gen.evaluate_generation(
        pipe,
        seed=args.seed,
        n_per_category=args.n,
        images_per_prompt=args.images_per_prompt,
        num_inference_steps=args.steps,
        guidance_scale=_guidance(args),
        time_shift=args.shift,
        sampler=args.sampler,
        step_cache=args.step_cache,
        batch_size=args.batch_size,
        canvas=args.canvas,
        dummy_image=False if args.no_dummy_image else None,
        progress=not args.no_progress,
        **_heldout(args),
    )


def _run_vqa(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    return shapes_vqa.evaluate_understanding(
        pipe,
        seed=args.seed,
        n=args.n,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        canvas=args.canvas,
        progress=not args.no_progress,
        **_heldout(args),
    )


def _run_edit(pipe: Any, args: argparse.Namespace) -> dict[str, Any]:
    return shapes_edit.evaluate_editing(
        pipe,
        seed=args.seed,
        n=args.n,
        num_inference_steps=args.steps,
        guidance_scale=_guidance(args),
        time_shift=args.shift,
        strength=args.strength,
        sampler=args.sampler,
        batch_size=args.batch_size,
        canvas=args.canvas,
        progress=not args.no_progress,
    )


@dataclass(frozen=True)
class Benchmark:
    """One ``cheers eval`` benchmark: help, flags and the function that scores a pipeline."""

    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    evaluate: Callable[[Any, argparse.Namespace], dict[str, Any]]


BENCHMARKS: dict[str, Benchmark] = {
    "shapes-gen": Benchmark(
        "text-to-image on Shapes prompts, judged by the detector (GenEval style)",
        _gen_flags,
        _run_gen,
    ),
    "shapes-vqa": Benchmark(
        "one-word questions about Shapes scenes, exact-match accuracy", _vqa_flags, _run_vqa
    ),
    "shapes-edit": Benchmark(
        "instruction edits of Shapes scenes, judged against the target scene",
        _edit_flags,
        _run_edit,
    ),
}

_DESCRIPTION = (
    "Score a model on a benchmark of the Shapes world (procedural scenes judged by a fixed\n"
    "detector). Writes report.json and grid.png into --out and prints the score table.\n\n"
    "examples:\n"
    "  cheers eval shapes-gen --model ./model --out runs/gen --n 10 --steps 20\n"
    "  cheers eval shapes-vqa --model ./model --out runs/vqa --n 200\n"
    "  cheers eval shapes-edit --model ./model --out runs/edit --n 60"
)


def add_eval_flags(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` (the ``eval`` command's) one subcommand per benchmark."""
    benchmarks = parser.add_subparsers(
        dest="eval_benchmark", metavar="BENCHMARK", title="benchmarks"
    )
    benchmarks.required = True
    for name, bench in BENCHMARKS.items():
        sub = benchmarks.add_parser(
            name, help=bench.help, description=bench.help, formatter_class=_Formatter
        )
        bench.add_flags(sub)
    for name, export in EXPORTS.items():
        sub = benchmarks.add_parser(
            name, help=export.help, description=export.help, formatter_class=_Formatter
        )
        export.add_flags(sub)
    parser.set_defaults(func=run_eval)


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` command to ``subparsers`` (from ``parser.add_subparsers()``).

    Returns the new parser; its namespace gets ``eval_benchmark`` and ``func=run_eval``.
    """
    parser = subparsers.add_parser(
        "eval",
        help="score a model on the Shapes benchmarks (generation, understanding, editing)",
        description=_DESCRIPTION,
        formatter_class=_Formatter,
    )
    add_eval_flags(parser)
    return parser


# --------------------------------------------------------------------------------- running
def _check_args(args: argparse.Namespace) -> None:
    """Fail on bad numbers before the (slow) model load."""
    if args.seed < 0:
        raise CheersError(f"--seed must be 0 or more, got {args.seed}")
    for flag in ("n", "batch_size", "grid_cells", "images_per_prompt", "max_new_tokens"):
        value = getattr(args, flag, 1)
        if value < 1:
            raise CheersError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if getattr(args, "n_heldout", None) is not None and args.n_heldout < 1:
        raise CheersError(f"--n-heldout must be at least 1, got {args.n_heldout}")
    if args.canvas not in (32, 64, 128):
        raise CheersError(f"--canvas must be 32, 64 or 128, got {args.canvas}")
    if hasattr(args, "steps"):
        if args.steps < 2:
            raise CheersError(f"--steps must be at least 2, got {args.steps}")
        if not math.isfinite(args.guidance):
            raise CheersError(f"--guidance must be a finite number, got {args.guidance}")
        if not (math.isfinite(args.shift) and args.shift > 0):
            raise CheersError(f"--shift must be a positive number, got {args.shift}")
    if hasattr(args, "strength"):
        if not 0.0 < args.strength <= 1.0:
            raise CheersError(f"--strength must be in (0, 1], got {args.strength}")
        if int(args.strength * args.steps + 1e-9) < 2:
            raise CheersError(
                f"--strength {args.strength} with --steps {args.steps} leaves fewer than 2 "
                f"denoising steps; use --steps {math.ceil(2 / args.strength - 1e-9)} or more"
            )


def run_eval(args: argparse.Namespace, *, pipe: Any = None) -> int:
    """Run the benchmark named by ``args.eval_benchmark``; returns 0.

    Loads ``--model`` (or, when it is left out, :func:`cheers.loading.default_model_path`) unless
    a ready ``pipe`` is given, writes ``report.json`` and ``grid.png`` into ``--out``, prints
    the score table and the two paths to stdout (loading messages and progress go to stderr).

    Raises:
        CheersError: on bad flags, a missing model or an unwritable ``--out``.
    """
    name = getattr(args, "eval_benchmark", None)
    if name in EXPORTS:
        return run_export(args, pipe=pipe)
    if name not in BENCHMARKS:
        raise CheersError(f"choose a benchmark: {', '.join([*BENCHMARKS, *EXPORTS])}")
    _check_args(args)
    out = out_folder(args.out)
    source: str | None = None
    device = None
    if pipe is None:
        source = args.model if args.model is not None else str(default_model_path())
        device = resolve_device(args.device)
        pipe = load_pipeline(source, args.dtype, device, args.lora)
    result = BENCHMARKS[name].evaluate(pipe, args)
    result["model"] = {"source": source, "device": device, "dtype": _dtype_name(pipe)}
    report_path, grid_path = report_mod.write_report(result, out, max_cells=args.grid_cells)
    print(report_mod.format_table(result))
    print(report_path)
    if grid_path is not None:
        print(grid_path)
    return 0


def _dtype_name(pipe: Any) -> str | None:
    try:
        return str(next(pipe.model.parameters()).dtype).removeprefix("torch.")
    except (AttributeError, StopIteration, TypeError):
        return None


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser: ``python -m cheers.evaluation BENCHMARK ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m cheers.evaluation",
        description=_DESCRIPTION,
        formatter_class=_Formatter,
    )
    add_eval_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: run a benchmark; ``error: ...`` and exit code 2 on bad input."""
    args = build_parser().parse_args(argv)
    try:
        return run_eval(args)
    except CheersError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
