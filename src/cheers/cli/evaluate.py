"""``cheers eval``: score a model on a benchmark (the work is in :mod:`cheers.evaluation`)."""

from __future__ import annotations

import argparse

NAME = "eval"
HELP = "score a model on the Shapes benchmarks (generation, questions, editing)"
DESCRIPTION = """\
Run a CPU benchmark on the procedural Shapes world and write report.json and
grid.png into --out: shapes-gen (GenEval-style prompts judged by a detector),
shapes-vqa (one-word questions) and shapes-edit (instructions).

examples:
  cheers eval shapes-gen --out reports/gen
  cheers eval shapes-vqa --model ./my-model --out reports/vqa --n 200"""


def add_flags(p: argparse.ArgumentParser) -> None:
    from cheers.evaluation.cli import add_eval_flags

    add_eval_flags(p)


def run(args: argparse.Namespace) -> int:
    from cheers.evaluation.cli import run_eval

    return run_eval(args)
