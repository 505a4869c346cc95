"""Error against a converged trajectory versus model evaluations, for every fast-path option.

    python benchmarks/fast_path.py --model embedded    --out docs/results/fast_path
    python benchmarks/fast_path.py --model measurement --out docs/results/fast_path

The reference trajectory is 250-step Euler (the default sampler; guidance 9.5, shift 0.5).
Each option runs from the same initial noise on the same prompts; the figures are the latent
RMSE against the reference's final latent and the PSNR (dB) of the decoded image against the
reference's decoded image, with the number of model evaluations (NFE: one velocity of the
guided pair each) and the wall time. ``embedded`` is the default model shipped in the package;
``measurement`` the issue's measurement config with random weights (benchmarks/engine.py).
Writes ``<model>.json``, ``<model>.md`` and ``<model>.png`` (error versus NFE, log–log) under
``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from cheers.pipeline import CheersPipeline
from cheers.samplers import StepCache

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED_PROMPTS = ["a red circle", "two blue squares and a green triangle"]
MEASUREMENT_PROMPTS = ["A photo of a red bicycle leaning against a yellow wall."]

#: (label, pipeline options, grid sizes): NFE is counted, not assumed.
OPTIONS: list[tuple[str, dict, list[int]]] = [
    ("euler", {"sampler": "euler"}, [5, 8, 10, 20, 40, 80]),
    ("heun", {"sampler": "heun"}, [3, 4, 5, 6, 11, 21]),
    ("ab2", {"sampler": "ab2"}, [5, 6, 9, 11, 21, 41]),
    ("ab2 + cache", {"sampler": "ab2", "cache": (2, 1)}, [9, 11, 17, 21, 41]),
    ("euler + cache", {"sampler": "euler", "cache": (2, 1)}, [10, 20, 40, 80]),
    (
        "ab2 + guidance (0, 0.7)",
        {"sampler": "ab2", "guidance_interval": (0.0, 0.7)},
        [6, 9, 11, 21],
    ),
]


def load(which: str, folder: Path) -> CheersPipeline:
    if which == "embedded":
        return CheersPipeline.from_pretrained(ROOT / "src/cheers/default_model")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import engine

    return CheersPipeline.from_pretrained(engine.build_model_folder(folder / "model"))


def run(pipe: CheersPipeline, prompts, noise, steps: int, options: dict):
    options = dict(options)
    cache = options.pop("cache", None)
    if cache is not None:
        options["step_cache"] = StepCache(interval=cache[0], order=cache[1])
    calls: list[int] = []
    start = time.perf_counter()
    out = pipe(
        prompts,
        num_inference_steps=steps,
        latents=noise,
        output_type="pt",
        callback=lambda k, _n: calls.append(k),
        **options,
    )
    seconds = time.perf_counter() - start
    nfe = len(calls) if cache is None else options["step_cache"].evaluations
    return out, nfe, seconds


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).pow(2).mean())
    return 99.0 if mse == 0 else 10 * math.log10(1.0 / mse)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Latent RMSE versus NFE, log–log, one line per option (PIL only)."""
    w, h, m = 760, 480, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xs = [r["nfe"] for r in rows]
    ys = [r["rmse"] for r in rows if r["rmse"] > 0]
    x0, x1 = math.log10(min(xs) * 0.8), math.log10(max(xs) * 1.25)
    y0, y1 = math.log10(min(ys) * 0.5), math.log10(max(ys) * 2)

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            m + (math.log10(x) - x0) / (x1 - x0) * (w - 2 * m - 150),
            h - m - (math.log10(max(y, 1e-12)) - y0) / (y1 - y0) * (h - 2 * m),
        )

    d.rectangle([m, m, w - m - 150, h - m], outline="black")
    for e in range(math.floor(x0), math.ceil(x1) + 1):
        for k in (1, 2, 5):
            v = k * 10**e
            if x0 <= math.log10(v) <= x1:
                x, _ = px(v, 10**y0)
                d.line([x, h - m, x, h - m + 5], fill="black")
                d.text((x - 8, h - m + 8), f"{v:g}", fill="black")
    for e in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= e <= y1:
            _, y = px(10**x0, 10**e)
            d.line([m - 5, y, m, y], fill="black")
            d.text((m - 45, y - 6), f"1e{e}", fill="black")
    d.text((w // 2 - 120, h - 30), "model evaluations (NFE), log scale", fill="black")
    d.text((10, 20), f"latent RMSE vs 250-step Euler, {title}", fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    labels = list(dict.fromkeys(r["option"] for r in rows))
    for i, label in enumerate(labels):
        pts = sorted((r["nfe"], r["rmse"]) for r in rows if r["option"] == label)
        c = colours[i % len(colours)]
        line = [px(x, y) for x, y in pts]
        if len(line) > 1:
            d.line(line, fill=c, width=2)
        for x, y in line:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
        d.line([w - m - 140, m + 10 + 18 * i, w - m - 120, m + 10 + 18 * i], fill=c, width=3)
        d.text((w - m - 115, m + 4 + 18 * i), label, fill="black")
    img.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--model", choices=["embedded", "measurement"], default="embedded")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/results/fast_path")
    parser.add_argument("--reference-steps", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pipe = load(args.model, Path(tmp))
        prompts = EMBEDDED_PROMPTS if args.model == "embedded" else MEASUREMENT_PROMPTS
        cfg = pipe.model.config
        shape = (len(prompts), cfg.latent_channels, cfg.grid_size, cfg.grid_size)
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
        ref, ref_nfe, ref_s = run(pipe, prompts, noise, args.reference_steps, {})
        print(f"reference: euler {args.reference_steps} steps, {ref_nfe} NFE, {ref_s:.1f} s")
        rows = []
        for label, options, grid in OPTIONS:
            for steps in grid:
                out, nfe, seconds = run(pipe, prompts, noise, steps, options)
                rmse = float((out.latents - ref.latents).pow(2).mean().sqrt())
                row = {
                    "option": label,
                    "steps": steps,
                    "nfe": nfe,
                    "rmse": rmse,
                    "psnr": psnr(out.images, ref.images),
                    "seconds": seconds,
                }
                rows.append(row)
                print(
                    f"{label:26} steps {steps:3d}  NFE {nfe:3d}  RMSE {rmse:.4f}  "
                    f"PSNR {row['psnr']:5.1f} dB  {seconds:6.2f} s",
                    flush=True,
                )
    name = args.model
    (args.out / f"{name}.json").write_text(
        json.dumps(
            {"reference_steps": args.reference_steps, "prompts": prompts, "rows": rows}, indent=2
        )
    )
    lines = [
        "| option | grid points | NFE | latent RMSE | PSNR (dB) | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['option']} | {r['steps']} | {r['nfe']} | {r['rmse']:.4f} | "
        f"{r['psnr']:.1f} | {r['seconds']:.2f} |"
        for r in rows
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / f"{name}.png", f"{name} model")
    print(f"wrote {args.out / name}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
