"""Int8 weight-only quantization against float32, side by side, on two models.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/quantize.py [--models measurement,embedded]
        [--repeats 3] [--json OUT]

Both precisions of a model are loaded in this process, float32 with
``CheersPipeline.from_pretrained(folder)`` and int8 with ``from_pretrained(folder,
quantize="int8")`` (the LLM's, the ViT's and the flow heads' linear layers), and timed turn by
turn (best of ``--repeats``), so a busy machine slows both alike. Models:

- ``measurement``: the engine issue's measurement config (random weights, 128 px; see
  benchmarks/engine.py), text-to-image with guidance 9.5, 10 steps, shift 0.5;
  image-to-text: "Describe this image." on a random image, 32 greedy tokens (EOS ignored);
- ``embedded``: the embedded default model (64 px, trained), the same requests, plus
  shapes-vqa and shapes-gen scores.

Figures: weight memory (parameters and buffers); image-to-text tokens/s (decoding) and
first-token seconds; text-to-image seconds; the deviation from float32: max |Δ logit| of the
first answer token (over ``--images`` requests), greedy token agreement (share of the 32
tokens equal to float32's, and the first position that differs), PSNR of the generated images
against float32's from the same noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from engine import PROMPT, build_model_folder
from gpu_engine import greedy_answer

from cheers.evaluation.shapes_gen import evaluate_generation
from cheers.evaluation.shapes_vqa import evaluate_understanding
from cheers.loading import DEFAULT_MODEL_DIR
from cheers.pipeline import CheersPipeline
from cheers.transforms.quantize import weight_bytes

T2I = {"measurement": 10, "embedded": 20}  # steps; guidance 9.5, shift 0.5 for both


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
    pipes = {
        "float32": CheersPipeline.from_pretrained(folder, dtype="float32"),
        "int8": CheersPipeline.from_pretrained(folder, dtype="float32", quantize="int8"),
    }
    ref = pipes["float32"]
    cfg = ref.model.config
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(args.images, cfg.latent_channels, cfg.grid_size, cfg.grid_size, generator=g)
    inputs = images(ref, args.images)
    res: dict = {k: {"weights_mb": weight_bytes(p.model) / 2**20} for k, p in pipes.items()}
    for r in res.values():
        r.update(first_token_s=[], tokens_per_s=[], t2i_s=[])
    answers: dict = {}
    pictures: dict = {}
    for _ in range(args.repeats):  # interleaved: a busy machine slows both alike
        for key, pipe in pipes.items():
            first, decoding, _, ids = greedy_answer(pipe, inputs[0], args.tokens)
            res[key]["first_token_s"].append(first)
            res[key]["tokens_per_s"].append((args.tokens - 1) / decoding)
            answers[key] = ids
            start = time.perf_counter()
            pictures[key] = text_to_image(pipe, T2I[name], noise[:1])
            res[key]["t2i_s"].append(time.perf_counter() - start)
    for r in res.values():
        r["first_token_s"] = min(r["first_token_s"])
        r["tokens_per_s"] = max(r["tokens_per_s"])
        r["t2i_s"] = min(r["t2i_s"])
    # Deviation over all the requests (one image each).
    diffs, agree, first_diff = [], [], []
    for image in inputs:
        outs = [greedy_answer(p, image, args.tokens)[2:] for p in pipes.values()]
        (l32, ids32), (l8, ids8) = outs
        diffs.append(float((l32 - l8).abs().max()))
        same = (ids32 == ids8).tolist()
        agree.append(float(np.mean(same)))
        first_diff.append(same.index(False) if False in same else len(same))
    imgs = [text_to_image(p, T2I[name], noise) for p in pipes.values()]
    dev = {
        "max_logit_diff": max(diffs),
        "token_agreement": float(np.mean(agree)),
        "first_differing_token": min(first_diff),
        "psnr_db": [psnr(a, b) for a, b in zip(*imgs, strict=True)],
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
    print(f"\n{name}: float32 vs int8 (best of {args.repeats}, interleaved)")
    rows = [
        ("weights MiB", "weights_mb", "{:.1f}"),
        ("image → text tokens/s", "tokens_per_s", "{:.1f}"),
        ("first token s", "first_token_s", "{:.3f}"),
        (f"text → image s ({T2I[name]} steps)", "t2i_s", "{:.2f}"),
        ("shapes-vqa overall", "shapes_vqa", "{:.3f}"),
        ("shapes-gen overall", "shapes_gen", "{:.3f}"),
    ]
    print(f"{'figure':34} {'float32':>10} {'int8':>10} {'int8/f32':>9}")
    for label, key, fmt in rows:
        if key in f["float32"]:
            a, b = f["float32"][key], f["int8"][key]
            ratio = b / a if a else float("nan")
            print(f"{label:34} {fmt.format(a):>10} {fmt.format(b):>10} {ratio:9.2f}")
    print(
        f"max |Δ logit| {d['max_logit_diff']:.4f}; greedy tokens equal "
        f"{d['token_agreement']:.3f} (first difference at token {d['first_differing_token']}"
        f" of {args.tokens}); PSNR vs float32 "
        + ", ".join(f"{p:.1f}" for p in d["psnr_db"])
        + " dB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--models", default="measurement,embedded")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per answer")
    parser.add_argument("--images", type=int, default=4, help="requests for the deviation")
    parser.add_argument("--vqa", type=int, default=64, help="shapes-vqa questions")
    parser.add_argument("--gen", type=int, default=4, help="shapes-gen prompts per category")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
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
