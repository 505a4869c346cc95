"""Learning curve of a training run: Shapes scores of saved model folders vs samples seen.

    python recipes/default/curve.py build/default/curve/step-* --out docs/default_model_curve.json

Each argument is a released-format model folder named ``step-NNNNNNN``; the number of samples
is read from the run's metrics.csv when given (``--metrics``), else left out. For the second
run (more.toml), whose steps count from 0 again, ``--offset-step`` and ``--offset-samples`` add
the first run's steps and joint samples:

    python recipes/default/curve.py build/default/curve_more/step-* --stage joint_more \
        --metrics build/default/run_more/metrics.csv --offset-step 4800 \
        --offset-samples 96000 --out docs/results/curve.json

``--val FILE`` adds validation losses on a fixed set (also to points already in ``--out``
that lack them): text, flow, the text loss with every question's image replaced by another
question's, and the flow loss with every text-to-image prompt replaced by another one; and the
mean norms of the LLM image tokens (of the set's first 32 images, half noised) and of the word
embeddings.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from cheers.data.records import read_records
from cheers.evaluation import evaluate_generation, evaluate_understanding
from cheers.image import preprocess_generation
from cheers.pipeline import CheersPipeline
from cheers.training.token_scale import image_token_norm, word_embedding_norm
from cheers.training.validation import validation_losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--metrics", type=Path, help="the run's metrics.csv (samples per step)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stage", default="joint", help="the stage whose samples are counted")
    parser.add_argument("--offset-step", type=int, default=0, help="added to every step")
    parser.add_argument("--offset-samples", type=int, default=0, help="added to every count")
    parser.add_argument("--n-per-category", type=int, default=5)
    parser.add_argument("--n-questions", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument(
        "--val",
        type=Path,
        help="a validation JSONL (build/ablations/val/val.jsonl) for the validation losses",
    )
    args = parser.parse_args(argv)

    samples: dict[int, int] = {}
    if args.metrics is not None:
        with args.metrics.open() as handle:
            total = 0
            for row in csv.DictReader(handle):
                if row["stage"] == args.stage:
                    total = int(row["samples"])
                samples[int(row["step"])] = total
    points = {p["step"]: p for p in json.loads(args.out.read_text())} if args.out.is_file() else {}
    for folder in sorted(args.models):
        run_step = int(folder.name.split("-")[-1])
        step = run_step + args.offset_step
        point = points.get(step)
        needs_val = args.val is not None and (point is None or not point.keys() >= VAL_KEYS)
        if point is not None and not needs_val:
            continue
        pipe = CheersPipeline.from_pretrained(folder)
        if point is None:
            point = {
                "step": step,
                "joint_samples": (
                    None if run_step not in samples else samples[run_step] + args.offset_samples
                ),
            }
            point |= benchmarks(pipe, args)
        if needs_val:
            point |= validation(pipe, args.val, point)
        print(json.dumps(point))
        points[step] = point
        args.out.write_text(json.dumps([points[k] for k in sorted(points)], indent=2) + "\n")
    return 0


def benchmarks(pipe: CheersPipeline, args: argparse.Namespace) -> dict:
    """The small shapes-gen and shapes-vqa sets."""
    gen = evaluate_generation(
        pipe,
        n_per_category=args.n_per_category,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        heldout=False,
    )
    vqa = evaluate_understanding(pipe, n=args.n_questions, heldout=False)
    return {"shapes_gen": gen["scores"], "shapes_vqa": vqa["scores"]["overall"]}


VAL_KEYS = {
    "val_text_loss",
    "val_flow_loss",
    "val_text_loss_other_images",
    "val_flow_loss_other_prompts",
    "image_token_norm",
    "word_embedding_norm",
}


def validation(pipe: CheersPipeline, val: Path, point: dict) -> dict:
    """The validation losses that ``point`` lacks (fixed t and noise: the default seed, as in
    recipes/ablations/run.py). With every question's image replaced by another question's, the
    text loss shows how much the answers rely on the image; with every text-to-image prompt
    replaced by another one, the flow loss shows how much the drawings rely on the prompt."""
    out = {}
    if not {"val_text_loss", "val_flow_loss"} <= point.keys():
        own = validation_losses(pipe.model, pipe.tokenizer, val)
        out |= {"val_text_loss": own.text, "val_flow_loss": own.flow}
    if "val_text_loss_other_images" not in point:
        shifted = validation_losses(pipe.model, pipe.tokenizer, val, shift_images=True)
        out["val_text_loss_other_images"] = shifted.text
    if "val_flow_loss_other_prompts" not in point:
        shifted = validation_losses(pipe.model, pipe.tokenizer, val, shift_prompts=True)
        out["val_flow_loss_other_prompts"] = shifted.flow
    if "image_token_norm" not in point:
        files = [path for record in read_records(val) for path in record.images][:32]
        size = pipe.model.config.image_size
        pixels = torch.stack([preprocess_generation(path, size) for path in files])
        out["image_token_norm"] = image_token_norm(pipe.model, pixels)
        out["word_embedding_norm"] = word_embedding_norm(pipe.model)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
