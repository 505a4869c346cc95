"""Reproduce the embedded default model: Shapes data → tokenizer → training → package.

    python recipes/default/build.py              # everything, in ./build/default (resumable)
    python recipes/default/build.py --install    # then copy the model into src/cheers/default_model

Three training runs: ``train.toml`` (autoencoder, then the joint stage from scratch),
``more.toml`` (more joint training, initialised from the first run's final model) and
``shift.toml`` (joint training nearer noise, initialised from the second run's final model).
``--first-run-model FOLDER`` skips the first run and starts the second from FOLDER instead;
``--second-run-model FOLDER`` skips the first two and starts the third from FOLDER.

Re-running continues an interrupted run from its latest checkpoint. See docs/default_model.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from cheers.config import CheersConfig, TextConfig, VAEConfig, VisionConfig
from cheers.shapes.dataset import write_split
from cheers.tokenizer import DEFAULT_SYSTEM_PROMPT, CheersTokenizer, train_compact_tokenizer

HERE = Path(__file__).resolve().parent
PACKAGE_MODEL = HERE.parents[1] / "src" / "cheers" / "default_model"
MIX = {"understanding": 0.35, "generation": 0.5, "editing": 0.15}
N_TRAIN, SEED, CANVAS, VOCAB = 40_000, 0, 64, 512


def architecture(vocab_size: int) -> CheersConfig:
    """Every part of Cheers, small: 64 px images, 8 px patches (16 LLM tokens per image)."""
    return CheersConfig(
        vae_encoder_config=VAEConfig(
            resolution=CANVAS, ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, z_channels=8
        ),
        vae_decoder_config=VAEConfig(
            resolution=CANVAS, ch=32, ch_mult=(1, 1, 1), num_res_blocks=0, z_channels=8
        ),
        vision_representation_config=VisionConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=4,
            num_attention_heads=4,
            image_size=CANVAS,
            patch_size=8,
        ),
        text_config=TextConfig(
            vocab_size=vocab_size,
            hidden_size=192,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=512,
        ),
        semantic_head_layers=2,
        detail_head_layers=2,
        dummy_image_prefix=False,
        extra={"architectures": ["Cheers"], "model_type": "umm"},
    ).validate()


def build_data(work: Path) -> Path:
    data = work / "data"
    if not (data / "train.jsonl").is_file():
        write_split(data, "train", N_TRAIN, seed=SEED, canvas=CANVAS, mix=MIX)
    return data


def build_tokenizer(work: Path, data: Path) -> Path:
    folder = work / "tokenizer"
    if not (folder / "tokenizer.json").is_file():
        texts = [DEFAULT_SYSTEM_PROMPT, "system\n", "user\n", "assistant\n"]
        with (data / "train.jsonl").open() as handle:
            for line in handle:
                texts += [turn["value"] for turn in json.loads(line)["conversations"]]
        train_compact_tokenizer(texts, VOCAB).save(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--work", default="build/default", help="working folder (default: %(default)s)"
    )
    parser.add_argument("--install", action="store_true", help="copy the result into the package")
    parser.add_argument(
        "--first-run-model",
        type=Path,
        help="skip train.toml and start more.toml from this model folder",
    )
    parser.add_argument(
        "--second-run-model",
        type=Path,
        help="skip train.toml and more.toml and start shift.toml from this model folder",
    )
    args = parser.parse_args(argv)
    if args.first_run_model and args.second_run_model:
        parser.error("give --first-run-model or --second-run-model, not both")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)

    data = build_data(work)
    tokenizer = build_tokenizer(work, data)
    architecture(len(CheersTokenizer.from_folder(tokenizer))).save(work)
    fill = {
        "@DATA@": str(data),
        "@TOKENIZER@": str(tokenizer),
        "@CONFIG@": str(work / "config.json"),
        "@OUT@": str(work / "run"),
    }
    if args.second_run_model:
        second = args.second_run_model.resolve()
    else:
        first = (
            args.first_run_model.resolve() if args.first_run_model else train(work, "train", fill)
        )
        second = train(
            work, "more", {**fill, "@INIT@": str(first), "@OUT@": str(work / "run_more")}
        )
    final = train(work, "shift", {**fill, "@INIT@": str(second), "@OUT@": str(work / "run_shift")})
    print(f"trained model: {final}")
    if args.install:
        install(final)
    return 0


def train(work: Path, recipe_name: str, fill: dict[str, str]) -> Path:
    """Run one recipe of this folder (continuing it from its latest checkpoint, if any)."""
    from cheers.training.recipe import TrainConfig
    from cheers.training.trainer import Trainer, latest_checkpoint

    recipe = (HERE / f"{recipe_name}.toml").read_text()
    for key, value in fill.items():
        recipe = recipe.replace(key, value)
    path = work / f"{recipe_name}.toml"
    path.write_text(recipe)
    config = TrainConfig.from_toml(path)
    resume = latest_checkpoint(Path(config.run.output_dir) / "checkpoints") is not None
    return Trainer(config, resume=resume).run()


def install(model_folder: Path) -> None:
    """Copy weights, config and tokenizer into the package, the weights in float32 (the
    snapshots the GPU recipe writes are bfloat16; stored in bfloat16 the package copy would
    make ``cheers lora merge`` write bfloat16 weights too)."""
    from cheers.checkpoint import load_model, save_model

    model = load_model(model_folder)
    staging = PACKAGE_MODEL.with_name(".default_model.new")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(model, staging)
    CheersTokenizer.from_folder(model_folder).save(staging)
    for name in ("vocab.json", "merges.txt"):  # tokenizer.json holds the same, keep one copy
        (staging / name).unlink(missing_ok=True)
    shutil.rmtree(PACKAGE_MODEL, ignore_errors=True)
    staging.rename(PACKAGE_MODEL)
    print(f"installed into {PACKAGE_MODEL}")


if __name__ == "__main__":
    raise SystemExit(main())
