"""The paper's design choices at toy scale: the default model's architecture with one switch
flipped, each trained with the same budget from the same start, then measured side by side.

    python recipes/ablations/run.py                       # every variant (resumable)
    python recipes/ablations/run.py --variants baseline no_merge
    python recipes/ablations/run.py --report-only         # print the table of what is done
    python recipes/ablations/run.py --task understanding  # (b), (c) on understanding data only

Variants (``CheersConfig`` switches): ``baseline`` (the paper), ``no_injection``
(``detail_injection = false``: no gated patch detail in the generation head), ``no_merge``
(``token_merge = 1``: no 4× token compression), ``latents_to_vit`` (``vit_input = "latents"``:
the ViT reads the latent grid instead of the decoder projector's pixels).

Every variant starts from the autoencoder of the shipped default model (trained in its recipe's
first stages, frozen here; the decoder projector, where there is one, is its decoder copy, as
after the default recipe's autoencoder stages) and fresh weights elsewhere (seed 0), then runs
``joint.toml`` on the default model's training data. Measured: training throughput, losses on a
fixed validation set (same t and noise for every variant), shapes-gen and shapes-vqa. Results go
to ``--out`` (JSON) and a markdown table on stdout. See docs/ablations.md.

``--task understanding`` trains on the understanding samples of the same data only (the
comparisons that concern the understanding path, at a budget where answers leave the prior) and
skips shapes-gen.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib.util
import json
import time
from pathlib import Path

import torch

from cheers.checkpoint import load_model, save_model
from cheers.config import ABLATIONS, CheersConfig
from cheers.evaluation import evaluate_generation, evaluate_understanding
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline
from cheers.shapes.dataset import write_split
from cheers.tokenizer import CheersTokenizer
from cheers.training.validation import validation_losses

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
N_VAL, VAL_SEED = 512, 1  # the validation split's size and seed
PROJECTOR_SUFFIX = "+projector"  # results of runs that also train the decoder projector


def _default_recipe():
    spec = importlib.util.spec_from_file_location(
        "default_build", ROOT / "recipes/default/build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def initial_model(config: CheersConfig, autoencoder_from: Path) -> Cheers:
    """Fresh weights (seed 0) with the trained autoencoder (and decoder projector) copied in."""
    torch.manual_seed(0)
    model = Cheers(config).init_weights()
    source = load_model(autoencoder_from, dtype=torch.float32).state_dict()
    state = model.state_dict()
    copied = [
        k for k in state if k.startswith(("model.vae_model.", "model.vae_decoder_projector."))
    ]
    model.load_state_dict({**state, **{k: source[k] for k in copied}})
    return model


def train_variant(
    name: str,
    work: Path,
    data: Path,
    tokenizer: Path,
    base: Path,
    steps: int | None,
    train_projector: bool = False,
) -> Path:
    """Train one variant (continuing from its latest checkpoint); returns its final model."""
    from cheers.training.recipe import TrainConfig
    from cheers.training.trainer import Trainer, latest_checkpoint

    folder = work / (f"{name}{PROJECTOR_SUFFIX}" if train_projector else name)
    init = folder / "init"
    if not (init / "config.json").is_file():
        config = dataclasses.replace(CheersConfig.from_json(base), **ABLATIONS[name]).validate()
        save_model(initial_model(config, base), init)
        CheersTokenizer.from_folder(tokenizer).save(init)
    recipe = (HERE / "joint.toml").read_text()
    for key, value in {"@INIT@": init, "@DATA@": data, "@OUT@": folder / "run"}.items():
        recipe = recipe.replace(key, str(value))
    (folder / "joint.toml").write_text(recipe)
    config = TrainConfig.from_toml(folder / "joint.toml")
    if steps is not None:
        config.stages[0].steps = steps
    if train_projector:
        config.stages[0].trainable = [*config.stages[0].trainable, "decoder_projector"]
    resume = latest_checkpoint(Path(config.run.output_dir) / "checkpoints") is not None
    return Trainer(config, resume=resume).run()


def understanding_only(source: Path, target: Path) -> Path:
    """The understanding records of the JSONL ``source`` (image paths made absolute) as
    ``target``."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    with source.open() as handle:
        for line in handle:
            record = json.loads(line)
            if "<image_gen>" in record["conversations"][-1]["value"] or "image" not in record:
                continue
            names = record["image"].split(",")
            record["image"] = ", ".join(str(source.parent.resolve() / n.strip()) for n in names)
            lines.append(json.dumps(record))
    partial = target.with_suffix(".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(target)
    return target


def throughput(run: Path) -> float:
    """Samples/s of the run's last (or only) session, from its metrics.csv."""
    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return float(rows[-1]["samples_per_s"])


def measure(
    name: str, final: Path, run: Path, val: Path, n_per_category: int, n_questions: int
) -> dict[str, object]:
    """Throughput, validation losses and the benchmarks (shapes-gen skipped when
    ``n_per_category`` is 0)."""
    tokenizer = CheersTokenizer.from_folder(final)
    model = load_model(final, dtype=torch.float32)
    started = time.time()
    result: dict[str, object] = {
        "variant": name,
        "switches": ABLATIONS[name.removesuffix(PROJECTOR_SUFFIX)],
        "parameters": sum(p.numel() for p in model.parameters()),
        "llm_tokens_per_image": model.tokens_per_image,
        "train_samples_per_s": throughput(run),
    }
    # The default seed fixes t and noise, the same for every variant (and in the curve script).
    losses = validation_losses(model, tokenizer, val)
    other = validation_losses(model, tokenizer, val, shift_images=True)
    result |= {
        "val_text_loss": losses.text,
        "val_image_loss": losses.flow,
        # every question with another question's image: equal losses = the image is not used
        "val_text_loss_other_images": other.text,
    }
    pipe = CheersPipeline(model, tokenizer)
    if n_per_category:
        gen = evaluate_generation(pipe, n_per_category=n_per_category, heldout=False)
        result["shapes_gen"] = gen["scores"]
    vqa = evaluate_understanding(pipe, n=n_questions, heldout=False)
    result["shapes_vqa"] = vqa["scores"]
    result["eval_seconds"] = round(time.time() - started, 1)
    return result


def table(results: list[dict]) -> str:
    rows = [
        "| variant | LLM tokens / image | train samples/s | val text loss "
        "| … with other images | val flow loss | shapes-gen | shapes-vqa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        gen = r.get("shapes_gen", {}).get("overall")
        flow = r["val_image_loss"]
        other = r.get("val_text_loss_other_images")
        rows.append(
            f"| {r['variant']} | {r['llm_tokens_per_image']} | {r['train_samples_per_s']:.1f} "
            f"| {r['val_text_loss']:.3f} | {'–' if other is None else f'{other:.3f}'} "
            f"| {'–' if flow is None else f'{flow:.4f}'} "
            f"| {'–' if gen is None else f'{gen:.3f}'} | {r['shapes_vqa']['overall']:.3f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", choices=sorted(ABLATIONS), default=list(ABLATIONS))
    parser.add_argument("--task", choices=("all", "understanding"), default="all")
    parser.add_argument("--work", type=Path, help="default: build/ablations[_understanding]")
    parser.add_argument(
        "--default-work",
        type=Path,
        default=Path("build/default"),
        help="the default model's working folder (its data and tokenizer are reused)",
    )
    parser.add_argument(
        "--autoencoder-from",
        type=Path,
        default=ROOT / "src/cheers/default_model",
        help="model folder whose VAE (and decoder projector) every variant starts from",
    )
    parser.add_argument(
        "--out", type=Path, help="default: docs/results/ablations[_understanding].json"
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--steps", type=int, help="override the budget (for a quick check)")
    parser.add_argument(
        "--train-decoder-projector",
        action="store_true",
        help="also train the decoder projector (frozen in joint.toml, as in the default recipe)",
    )
    parser.add_argument("--n-per-category", type=int, default=10, help="shapes-gen prompts")
    parser.add_argument("--n-questions", type=int, default=200, help="shapes-vqa questions")
    args = parser.parse_args(argv)
    suffix = "" if args.task == "all" else "_understanding"
    args.work = args.work or Path(f"build/ablations{suffix}")
    args.out = args.out or Path(f"docs/results/ablations{suffix}.json")
    if args.task == "understanding":
        args.n_per_category = 0

    recipe = _default_recipe()
    default_work = args.default_work.resolve()
    data = recipe.build_data(default_work)
    tokenizer = recipe.build_tokenizer(default_work, data)
    work = args.work.resolve()
    val = work / "val"
    if not (val / "val.jsonl").is_file():
        write_split(val, "val", N_VAL, seed=VAL_SEED, canvas=recipe.CANVAS, mix=recipe.MIX)
    val_file = val / "val.jsonl"
    if args.task == "understanding":
        data = understanding_only(data / "train.jsonl", work / "data" / "train.jsonl").parent
        val_file = understanding_only(val_file, work / "val_understanding" / "val.jsonl")

    results = json.loads(args.out.read_text()) if args.out.is_file() else []
    suffix = PROJECTOR_SUFFIX if args.train_decoder_projector else ""
    for variant in args.variants if not args.report_only else []:
        name = variant + suffix
        if any(r["variant"] == name for r in results):
            continue
        final = train_variant(
            variant,
            work,
            data,
            tokenizer,
            args.autoencoder_from,
            args.steps,
            args.train_decoder_projector,
        )
        result = measure(
            name,
            final,
            work / name / "run",
            val_file,
            args.n_per_category,
            args.n_questions,
        )
        print(json.dumps(result), flush=True)
        results = sorted(
            [*results, result],
            key=lambda r: (
                PROJECTOR_SUFFIX in r["variant"],
                list(ABLATIONS).index(r["variant"].removesuffix(PROJECTOR_SUFFIX)),
            ),
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
