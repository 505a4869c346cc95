"""``cheers eval``: score a model on a benchmark (the work is in :mod:`cheers.evaluation`)."""

from __future__ import annotations

import argparse

from cheers.evaluation.cli import DESCRIPTION, add_eval_flags, run_eval

__all__ = ["DESCRIPTION", "HELP", "NAME", "add_flags", "run"]

NAME = "eval"
HELP = "score a model on a benchmark (Shapes) or write GenEval / DPG-Bench outputs"


def add_flags(p: argparse.ArgumentParser) -> None:
    add_eval_flags(p)


def run(args: argparse.Namespace) -> int:
    return run_eval(args)
