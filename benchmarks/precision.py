"""Lower precisions against float32, side by side, on two models.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/precision.py [--models measurement,embedded]
        [--variants bfloat16,bfloat16-nchw,int8] [--repeats 3] [--json OUT]

Every variant of a model is loaded in this process next to float32 and timed turn by turn
(best of ``--repeats``), so a busy machine slows them alike. Variants (:data:`VARIANTS`):

- ``bfloat16``: ``from_pretrained(folder, dtype="bfloat16")``, which puts the convolutions in
  channels-last order (oneDNN's bfloat16 convolutions, AMX on recent x86 CPUs, work in NHWC);
- ``bfloat16-nchw``: the same weights with the convolutions back in NCHW order (what the
  channels-last order buys);
- ``int8``: ``from_pretrained(folder, quantize="int8")``: the LLM's, the ViT's and the flow
  heads' linear weights in int8, float32 compute.

Models:

- ``measurement``: the engine issue's measurement config (random weights, 128 px; see
  benchmarks/engine.py), text-to-image with guidance 9.5, 10 steps, shift 0.5;
  image-to-text: "Describe this image." on a random image, 32 greedy tokens (EOS ignored);
- ``embedded``: the embedded default model (64 px, trained), the same requests, plus
  shapes-vqa and shapes-gen scores.

Figures: weight memory (parameters and buffers); image-to-text tokens/s (decoding) and
first-token seconds; text-to-image seconds; each variant's deviation from float32: max |Δ
logit| of the first answer token (over ``--images`` requests), greedy token agreement (share
of the 32 tokens equal to float32's, and the first position that differs), PSNR of the
generated images against float32's from the same noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from engine import PROMPT, build_model_folder
from gpu_engine import greedy_answer

from cheers.evaluation.shapes_gen import evaluate_generation
from cheers.evaluation.shapes_vqa import evaluate_understanding
from cheers.loading import DEFAULT_MODEL_DIR
from cheers.pipeline import CheersPipeline
from cheers.transforms.channels_last import convolution_modules
from cheers.transforms.quantize import weight_bytes

T2I = {"measurement": 10, "embedded": 20}  # steps; guidance 9.5, shift 0.5 for both


def _nchw(pipe: CheersPipeline) -> CheersPipeline:
    for module in convolution_modules(pipe.model).values():
        module.to(memory_format=torch.contiguous_format)
    return pipe


#: name → how it is loaded from a model folder (float32 is the reference).
VARIANTS: dict[str, Callable[[Path], CheersPipeline]] = {
    "float32": lambda folder: CheersPipeline.from_pretrained(folder, dtype="float32"),
    "bfloat16": lambda folder: CheersPipeline.from_pretrained(folder, dtype="bfloat16"),
    "bfloat16-nchw": lambda folder: _nchw(CheersPipeline.from_pretrained(folder, dtype="bfloat16")),
    "int8": lambda folder: CheersPipeline.from_pretrained(folder, dtype="float32", quantize="int8"),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def images(pipe: CheersPipeline, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    side = pipe.resolution
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(n)]


def text_to_image(pipe: CheersPipeline, steps: int, noise: torch.Tensor) -> np.ndarray:
    out = pipe(
        [PROMPT] * len(noise),
        num_inference_steps=steps,
        guidance_scale=9.5,
        time_shift=0.5,
        latents=noise,
        output_type="np",
    )
    return (out.images * 255).round().astype(np.uint8)


def compare(name: str, folder: Path, args: argparse.Namespace) -> dict:
    pipes = {key: VARIANTS[key](folder) for key in ["float32", *args.variants]}
    ref = pipes["float32"]
    cfg = ref.model.config
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(args.images, cfg.latent_channels, cfg.grid_size, cfg.grid_size, generator=g)
    inputs = images(ref, args.images)
    res: dict = {k: {"weights_mb": weight_bytes(p.model) / 2**20} for k, p in pipes.items()}
    for r in res.values():
        r.update(first_token_s=[], tokens_per_s=[], t2i_s=[])
    for _ in range(args.repeats):  # interleaved: a busy machine slows every variant alike
        for key, pipe in pipes.items():
            first, decoding, _, _ = greedy_answer(pipe, inputs[0], args.tokens)
            res[key]["first_token_s"].append(first)
            res[key]["tokens_per_s"].append((args.tokens - 1) / decoding)
            start = time.perf_counter()
            text_to_image(pipe, T2I[name], noise[:1])
            res[key]["t2i_s"].append(time.perf_counter() - start)
    for r in res.values():
        r["first_token_s"] = min(r["first_token_s"])
        r["tokens_per_s"] = max(r["tokens_per_s"])
        r["t2i_s"] = min(r["t2i_s"])
    # Deviation from float32 over all the requests (one image each).
    answers = {
        k: [greedy_answer(p, image, args.tokens)[2:] for image in inputs] for k, p in pipes.items()
    }
    pictures = {k: text_to_image(p, T2I[name], noise) for k, p in pipes.items()}
    dev = {}
    for key in args.variants:
        diffs, agree, first_diff = [], [], []
        for (l32, ids32), (logits, ids) in zip(answers["float32"], answers[key], strict=True):
            diffs.append(float((l32 - logits).abs().max()))
            same = (ids32 == ids).tolist()
            agree.append(float(np.mean(same)))
            first_diff.append(same.index(False) if False in same else len(same))
        dev[key] = {
            "max_logit_diff": max(diffs),
            "token_agreement": float(np.mean(agree)),
            "first_differing_token": min(first_diff),
            "psnr_db": [
                psnr(a, b) for a, b in zip(pictures["float32"], pictures[key], strict=True)
            ],
        }
    if name == "embedded":
        for key, pipe in pipes.items():
            vqa = evaluate_understanding(pipe, n=args.vqa, heldout=False)
            gen = evaluate_generation(pipe, n_per_category=args.gen, heldout=False)
            res[key]["shapes_vqa"] = vqa["scores"]["overall"]
            res[key]["shapes_gen"] = gen["scores"]["overall"]
    return {"figures": res, "deviation": dev}


def report(name: str, out: dict, args: argparse.Namespace) -> None:
    f, d = out["figures"], out["deviation"]
    print(f"\n{name}: against float32 (best of {args.repeats}, interleaved)")
    rows = [
        ("weights MiB", "weights_mb", "{:.1f}"),
        ("image → text tokens/s", "tokens_per_s", "{:.1f}"),
        ("first token s", "first_token_s", "{:.3f}"),
        (f"text → image s ({T2I[name]} steps)", "t2i_s", "{:.2f}"),
        ("shapes-vqa overall", "shapes_vqa", "{:.3f}"),
        ("shapes-gen overall", "shapes_gen", "{:.3f}"),
    ]
    header = "".join(f" {k:>13} {'/f32':>6}" for k in args.variants)
    print(f"{'figure':34} {'float32':>10}{header}")
    for label, key, fmt in rows:
        if key in f["float32"]:
            a = f["float32"][key]
            cells = "".join(
                f" {fmt.format(f[k][key]):>13} {f[k][key] / a if a else float('nan'):6.2f}"
                for k in args.variants
            )
            print(f"{label:34} {fmt.format(a):>10}{cells}")
    for key, dk in d.items():
        print(
            f"{key}: max |Δ logit| {dk['max_logit_diff']:.4f}; greedy tokens equal "
            f"{dk['token_agreement']:.3f} (first difference at token "
            f"{dk['first_differing_token']} of {args.tokens}); PSNR vs float32 "
            + ", ".join(f"{p:.1f}" for p in dk["psnr_db"])
            + " dB"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="measurement,embedded")
    parser.add_argument(
        "--variants",
        default="bfloat16,bfloat16-nchw,int8",
        type=lambda text: text.split(","),
        help=f"compared with float32, of {', '.join(k for k in VARIANTS if k != 'float32')}",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per answer")
    parser.add_argument("--images", type=int, default=4, help="requests for the deviation")
    parser.add_argument("--vqa", type=int, default=64, help="shapes-vqa questions")
    parser.add_argument("--gen", type=int, default=4, help="shapes-gen prompts per category")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    choices = [k for k in VARIANTS if k != "float32"]
    unknown = [v for v in args.variants if v not in choices]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; use some of {', '.join(choices)}")
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.models.split(","):
        if name == "embedded":
            results[name] = compare(name, DEFAULT_MODEL_DIR, args)
        elif name == "measurement":
            with tempfile.TemporaryDirectory() as tmp:
                results[name] = compare(name, build_model_folder(Path(tmp) / "m"), args)
        else:
            parser.error(f"unknown model {name!r}; use measurement and/or embedded")
        report(name, results[name], args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
