"""``cheers eval BENCHMARK``: one command over the benchmark runner.

    cheers eval shapes-gen  --out runs/gen  [--n 10] [--settings shapes-gen] [--steps 20]
    cheers eval shapes-vqa  --out runs/vqa  [--n 200]
    cheers eval shapes-edit --out runs/edit [--n 60] [--strength 0.9]
    cheers eval geneval --metadata evaluation_metadata.jsonl --out runs/geneval
    cheers eval dpg --prompts dpg_bench/prompts --out runs/dpg

Every benchmark is an :class:`~cheers.evaluation.command.EvalCommand` listed in
:data:`COMMANDS` and run the same way by :func:`run_eval`: flags checked and inputs read, then
``--out`` checked, then the model loaded, then
:func:`~cheers.evaluation.benchmark.run_benchmark`, then the outputs written. Bad input raises
:class:`~cheers.errors.CheersError` before the model loads. ``python -m cheers.evaluation``
runs it on its own.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from cheers.distributed import Shard
from cheers.errors import CheersError
from cheers.evaluation import exports, shapes_edit, shapes_gen, shapes_vqa
from cheers.evaluation.benchmark import run_benchmark
from cheers.evaluation.command import EvalCommand
from cheers.evaluation.journal import Journal
from cheers.loading import default_model_path, load_from_args, parse_device_flag

EXIT_USAGE = 2

#: The benchmarks, in the order ``cheers eval --help`` lists them. Add new ones here.
COMMANDS: tuple[EvalCommand, ...] = (
    shapes_gen.COMMAND,
    shapes_vqa.COMMAND,
    shapes_edit.COMMAND,
    exports.GENEVAL,
    exports.DPG,
)

DESCRIPTION = (
    "Score a model on a Shapes benchmark (procedural scenes judged by a fixed detector; writes\n"
    "report.json and grid.png into --out), or write the folders GenEval's and DPG-Bench's\n"
    "official scorers read.\n\n"
    "examples:\n"
    "  cheers eval shapes-gen --out runs/gen --n 10 --steps 20\n"
    "  cheers eval shapes-vqa --model ./model --out runs/vqa --n 200\n"
    "  cheers eval geneval --metadata evaluation_metadata.jsonl --out runs/geneval"
)


def add_eval_flags(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` (the ``eval`` command's) one subcommand per benchmark."""
    benchmarks = parser.add_subparsers(
        dest="eval_benchmark", metavar="BENCHMARK", title="benchmarks"
    )
    benchmarks.required = True
    for command in COMMANDS:
        sub = benchmarks.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            formatter_class=parser.formatter_class,
        )
        command.add_flags(sub)
    parser.set_defaults(func=run_eval)


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` command to ``subparsers`` (from ``parser.add_subparsers()``)."""
    parser = subparsers.add_parser(
        "eval",
        help="score a model on a benchmark",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_eval_flags(parser)
    return parser


def run_eval(args: argparse.Namespace, *, pipe: Any = None) -> int:
    """Run the benchmark named by ``args.eval_benchmark``; returns 0.

    Loads ``--model`` (the embedded model when it is left out) unless a ready ``pipe`` is
    given; prints the outputs' paths to stdout (loading messages and progress go to stderr).
    Under ``torchrun`` every process loads its own model (``cuda:LOCAL_RANK`` on GPUs), runs its
    share of the batches (:class:`~cheers.distributed.Shard`) and rank 0 writes the outputs.

    Raises:
        CheersError: on bad flags or input files, an unusable ``--out`` or a missing model,
            each before the benchmark runs.
    """
    by_name = {command.name: command for command in COMMANDS}
    command = by_name.get(getattr(args, "eval_benchmark", None) or "")
    if command is None:
        raise CheersError(f"choose a benchmark: {', '.join(by_name)}")
    bench = command.build(args)
    target = command.target(args.out)
    shard = Shard.from_env()
    try:
        source = device = None
        if pipe is None:
            source = args.model if args.model is not None else str(default_model_path())
            args.device = shard.device(args.device)
            device = parse_device_flag(args.device)
            pipe = load_from_args(args)
        progress = not args.no_progress and shard.main
        journal = Journal(target.partial, bench, shard) if command.journal else None
        result = run_benchmark(bench, pipe, progress=progress, shard=shard, journal=journal)
        result["model"] = {"source": source, "device": device, "dtype": _dtype_name(pipe)}
        if shard.main:
            command.finish(result, target, args)
            if journal is not None:
                journal.remove_folder()  # every rank is past the gathering: none reads it
    finally:
        shard.close()
    return 0


def _dtype_name(pipe: Any) -> str | None:
    try:
        return str(pipe.model.dtype).removeprefix("torch.")
    except (AttributeError, TypeError):
        return None


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser: ``python -m cheers.evaluation BENCHMARK ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m cheers.evaluation",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
