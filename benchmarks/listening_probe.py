"""Does a model trained with ``cheers train`` draw what it is asked for? A probe on small data.

    python benchmarks/listening_probe.py --data bars --steps 300
    python benchmarks/listening_probe.py --data digits --steps 1000 --size medium \\
        --set flow_prediction=skip --understanding --json build/probe.json
    python benchmarks/listening_probe.py --data digits --steps 1500 --size medium \
        --understanding --generation-first 1000      # a curriculum: drawings alone first

Writes a data set in the released JSONL format, trains a small Cheers from scratch through the
real trainer (an autoencoder stage, then everything but the autoencoder on text-to-image
samples, plus as many understanding samples with ``--understanding``), and measures:

- the **prompt effect**: validation flow loss with every prompt swapped for the next one's,
  minus the flow loss with the right prompts (``validation_losses(shift_prompts=True)``);
- the **spread** of the final latents across the class prompts from the same noise, over
  their std (0: the prompt changes nothing);
- **read as prompted**: the share of generated latents that a classifier of the clean latents
  reads as the prompted class (bars: the nearest class latent; digits: a logistic regression
  fitted on the training images), without guidance and with guidance 3;
- with ``--understanding``, the greedy answer accuracy on held-out images.

Data: ``bars`` — four images, a red bar at one of four places, named by a compass word (the
class needs a position, which the prompt alone decides); ``digits`` — scikit-learn's 1,797
handwritten digits (8×8, upscaled to 32 px; ``pip install scikit-learn``), 1,500 to train,
200 held out. Findings: docs/training.md §7.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "src" / "cheers" / "default_model"
CANVAS = 32
COMPASS = ("north", "east", "south", "west")
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SIZES = {  # ViT width, LLM width, LLM layers, semantic head blocks
    "small": (64, 64, 2, 1),
    "medium": (96, 128, 3, 2),
}


@dataclass
class ProbeData:
    kind: str  # "bars" or "digits"
    folder: Path
    prompts: list[str]  # one per class
    train_images: list[str]  # file names, in the training file's order
    train_labels: np.ndarray  # class of each training image


def _record(i: int, image: str, human: str, gpt: str) -> str:
    turns = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return json.dumps({"id": str(i), "image": image, "conversations": turns})


def write_data(folder: Path, data: str, understanding: bool) -> ProbeData:
    """Images and JSONL files in ``folder``; validation holds text-to-image samples only."""
    folder.mkdir(parents=True, exist_ok=True)
    if data == "bars":
        width = CANVAS // len(COMPASS)
        names, labels = [], []
        for k in range(len(COMPASS)):
            pixels = np.full((CANVAS, CANVAS, 3), 255, np.uint8)
            pixels[:, k * width : (k + 1) * width] = (200, 30, 30)
            Image.fromarray(pixels).save(folder / f"bar{k}.png")
            names.append(f"bar{k}.png")
            labels.append(k)
        names, labels = names * 8, labels * 8
        prompts = [f"a bar to the {w}" for w in COMPASS]
        words, question, n_train = COMPASS, "Where is the bar?", len(names)
        val = list(range(len(names)))
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError as error:
            raise SystemExit(
                "--data digits needs scikit-learn: pip install scikit-learn"
            ) from error
        digits = load_digits()
        names, labels = [], [int(y) for y in digits.target]
        for i, image in enumerate(digits.images):
            ink = (255 - image / 16 * 255).clip(0, 255).astype(np.uint8)
            Image.fromarray(ink).resize((CANVAS, CANVAS), Image.BILINEAR).convert("RGB").save(
                folder / f"d{i}.png"
            )
            names.append(f"d{i}.png")
        prompts = [f"a handwritten {w}" for w in DIGITS]
        words, question, n_train = DIGITS, "Which digit is this?", 1500
        val = list(range(n_train, n_train + 200))
    ask = "<im_start><image><im_end>\n" + question
    draw = "<im_start><image_gen><im_end>"
    drawings = [_record(i, names[i], prompts[labels[i]], draw) for i in range(n_train)]
    (folder / "draw.jsonl").write_text("\n".join(drawings) + "\n")
    if understanding:
        questions = [_record(n_train + i, names[i], ask, words[labels[i]]) for i in range(n_train)]
        (folder / "ask.jsonl").write_text("\n".join(questions) + "\n")
    lines = [_record(i, names[i], prompts[labels[i]], draw) for i in val]
    (folder / "val.jsonl").write_text("\n".join(lines) + "\n")
    held = [{"image": names[i], "question": question, "answer": words[labels[i]]} for i in val]
    (folder / "questions.json").write_text(json.dumps(held))
    return ProbeData(data, folder, prompts, names[:n_train], np.array(labels[:n_train]))


def write_config(folder: Path, size: str, changes: dict[str, str]) -> None:
    from cheers.config import CheersConfig, TextConfig, VAEConfig, VisionConfig

    vit, llm, layers, semantic = SIZES[size]
    vae = {"resolution": CANVAS, "ch": 32, "ch_mult": (1, 1), "z_channels": 8}
    config = CheersConfig(
        vae_encoder_config=VAEConfig(**vae, num_res_blocks=1),
        vae_decoder_config=VAEConfig(**vae, num_res_blocks=0),
        vision_representation_config=VisionConfig(
            hidden_size=vit,
            intermediate_size=2 * vit,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=CANVAS,
            patch_size=4,
        ),
        text_config=TextConfig(
            vocab_size=512,
            hidden_size=llm,
            intermediate_size=2 * llm,
            num_hidden_layers=layers,
            num_attention_heads=4,
            num_key_value_heads=2,
        ),
        semantic_head_layers=semantic,
        detail_head_layers=1,
        dummy_image_prefix=False,
        **changes,
    )
    config.validate().save(folder)


def _joint_stage(name: str, steps: int, args: argparse.Namespace, weights: str) -> str:
    return f"""[[stages]]
name = "{name}"
trainable = "all"
steps = {steps}
lr = {args.lr}
warmup = 0.05
batch_size = 16
guidance_dropout = 0.2
time_shift = {args.time_shift}
image_loss_weight = {args.image_loss_weight}
{weights}"""


def write_recipe(folder: Path, args: argparse.Namespace) -> Path:
    files = '{ path = "draw.jsonl" }'
    if args.understanding:
        files += ', { path = "ask.jsonl" }'
    first = min(args.generation_first, args.steps)
    joint = _joint_stage("draw", first, args, "data_weights = [1.0, 0.0]") if first else ""
    if args.steps > first:
        joint += "\n" + _joint_stage("joint", args.steps - first, args, "")
    recipe = f"""
[model]
config = "config.json"
tokenizer = "{TOKENIZER}"
[data]
files = [{files}]
max_length = 128
[[stages]]
name = "vae"
kind = "vae"
trainable = "vae"
steps = {args.vae_steps}
lr = 2e-3
warmup = 0.0
batch_size = 8
{joint}
[run]
output_dir = "{folder / "run"}"
progress = false
seed = {args.seed}
"""
    path = folder / "recipe.toml"
    path.write_text(recipe)
    return path


def measure(model_dir: Path, data: ProbeData, noises: int = 4) -> dict:
    from cheers.checkpoint import load_model
    from cheers.image import preprocess_generation
    from cheers.pipeline import CheersPipeline
    from cheers.training.validation import validation_losses

    pipe = CheersPipeline.from_pretrained(model_dir)
    model = load_model(model_dir, dtype=torch.float32).eval()
    val = data.folder / "val.jsonl"
    right = validation_losses(model, pipe.tokenizer, val).flow
    swapped = validation_losses(model, pipe.tokenizer, val, shift_prompts=True).flow
    with torch.no_grad():
        images = [
            preprocess_generation(Image.open(data.folder / n), CANVAS) for n in data.train_images
        ]
        clean = (
            torch.cat(
                [
                    model.encode_latent(torch.stack(images[i : i + 100]))
                    for i in range(0, len(images), 100)
                ]
            )
            .flatten(1)
            .numpy()
        )
    read_clean = _classifier(data.kind, clean, data.train_labels)
    out = {"flow_right": right, "flow_swapped": swapped, "prompt_effect": swapped - right}
    for scale in (1.0, 3.0):
        latents = torch.stack(
            [
                pipe.text_to_image(
                    [prompt] * noises,
                    num_inference_steps=20,
                    guidance_scale=scale,
                    generator=torch.Generator().manual_seed(0),
                    output_type="latent",
                ).latents.float()
                for prompt in data.prompts
            ]
        )  # (classes, noises, C, G, G)
        spread = (latents - latents.mean(0, keepdim=True)).pow(2).mean().sqrt() / latents.std()
        predicted = read_clean(latents.flatten(2).numpy().reshape(-1, clean.shape[1]))
        truth = np.repeat(np.arange(len(data.prompts)), noises)
        out[f"spread_g{scale:g}"] = float(spread)
        out[f"read_as_prompted_g{scale:g}"] = float(np.mean(predicted == truth))
    return out


def _classifier(kind: str, features: np.ndarray, labels: np.ndarray):
    """Clean latents → class: the nearest class latent for bars (four images), a logistic
    regression for digits."""
    if kind == "bars":
        classes = sorted(set(labels.tolist()))
        means = np.stack([features[labels == c].mean(0) for c in classes])
        return lambda x: np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=2000).fit(features, labels).predict


def answer_accuracy(model_dir: Path, data: ProbeData) -> float:
    from cheers.pipeline import CheersPipeline

    pipe = CheersPipeline.from_pretrained(model_dir)
    held = json.loads((data.folder / "questions.json").read_text())
    right = [
        pipe.understand(data.folder / q["image"], q["question"], max_new_tokens=4).strip()
        == q["answer"]
        for q in held
    ]
    return float(np.mean(right))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("bars", "digits"), default="bars")
    parser.add_argument("--steps", type=int, default=300, help="joint steps of 16 samples")
    parser.add_argument("--vae-steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config switch: vit_input=latents, flow_prediction=sample",
    )
    parser.add_argument(
        "--understanding", action="store_true", help="one question per training image as well"
    )
    parser.add_argument(
        "--generation-first",
        type=int,
        default=0,
        metavar="STEPS",
        help="with --understanding: train on the drawings alone for this many of the steps first",
    )
    parser.add_argument("--image-loss-weight", type=float, default=1.0)
    parser.add_argument("--time-shift", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/listening_probe"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.generation_first and not args.understanding:
        parser.error("--generation-first needs --understanding (the drawings are all there is)")
    changes = dict(pair.split("=", 1) for pair in args.set if "=" in pair)
    if len(changes) != len(args.set) or not set(changes) <= {"vit_input", "flow_prediction"}:
        parser.error("--set takes vit_input=... or flow_prediction=...")
    from cheers.training.recipe import TrainConfig
    from cheers.training.trainer import Trainer

    folder = args.out.resolve()
    data = write_data(folder, args.data, args.understanding)
    write_config(folder, args.size, changes)
    recipe = write_recipe(folder, args)
    start = time.perf_counter()
    cwd = os.getcwd()
    try:
        os.chdir(folder)  # the recipe's relative paths
        with contextlib.redirect_stdout(io.StringIO()):
            final = Trainer(TrainConfig.from_toml(recipe)).run()
    finally:
        os.chdir(cwd)
    result = {
        "data": args.data,
        "size": args.size,
        "steps": args.steps,
        "set": changes,
        "generation_first": args.generation_first,
        "image_loss_weight": args.image_loss_weight,
        "time_shift": args.time_shift,
        "train_s": round(time.perf_counter() - start, 1),
        **measure(final, data),
    }
    if args.understanding:
        result["held_out_answers"] = answer_accuracy(final, data)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
