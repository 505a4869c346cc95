"""``cheers train``: train (or resume) the run a TOML recipe describes."""

from __future__ import annotations

import argparse
import os

NAME = "train"
HELP = "train or fine-tune a model from a TOML recipe"
DESCRIPTION = """\
Run the training stages of a config file: data (released JSONL format), model
initialisation, stages and run settings (see docs/training.md). Checkpoints go
to <output_dir>/checkpoints; metrics to <output_dir>/metrics.csv.

examples:
  cheers train configs/finetune.toml
  cheers train configs/finetune.toml --resume
  torchrun --nproc-per-node 8 -m cheers train configs/finetune.toml"""


def add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="CONFIG", help="the training config (a TOML file)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in the config's output_dir from its latest checkpoint",
    )
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    """Prints the final model folder (on the first process only under torchrun)."""
    from cheers.training.recipe import TrainConfig
    from cheers.training.trainer import Trainer

    config = TrainConfig.from_toml(args.config)
    if args.no_progress:
        config.run.progress = False
    final = Trainer(config, resume=args.resume).run()
    if int(os.environ.get("RANK", "0")) == 0:
        print(final)
    return 0
