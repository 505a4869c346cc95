"""Linear probes along the understanding path: where does a model lose what an object looks like?

Renders single-object Shapes scenes, runs them through the model's understanding path
(VAE latent → decoder projector → ViT patch embeddings → ViT → 2×2 merge + projector = the LLM's
image tokens) and fits a linear classifier for the object's shape and colour on each stage's
output. Held-out accuracy tells how much of the object a stage still shows in linearly readable
form; the rendered pixels are the reference.

    python recipes/default/probe.py                      # the embedded default model
    python recipes/default/probe.py --model DIR --out build/probe.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cheers.image import preprocess_generation
from cheers.shapes.render import COLORS, SHAPES, Scene, ShapeObject, render, size_range


def single_object_scenes(n: int, canvas: int, seed: int) -> list[ShapeObject]:
    """``n`` objects of random shape, colour, size and place, each fully on the canvas."""
    rng = np.random.default_rng(seed)
    lo, hi = size_range(canvas)
    objects = []
    for _ in range(n):
        size = int(rng.integers(lo, hi + 1))
        margin = size / 2 + 2
        cx, cy = rng.uniform(margin, canvas - margin, size=2)
        shape, color = str(rng.choice(SHAPES)), str(rng.choice(COLORS))
        objects.append(ShapeObject(shape, color, float(cx), float(cy), float(size)))
    return objects


@torch.no_grad()
def stage_features(model, pixels: torch.Tensor, batch: int = 250) -> dict[str, torch.Tensor]:
    """Each stage's output on clean images (t = 1, as understanding sees them), flattened."""
    parts: dict[str, list[torch.Tensor]] = {}
    for i in range(0, len(pixels), batch):
        latent = model.encode_latent(pixels[i : i + batch])
        out = model.image_tokens(latent)
        stages = {
            "pixels": pixels[i : i + batch],
            "latent": latent,
            "decoder_projector": out.pixel_hat,
            "patch_embeddings": out.patch_embeds,
            "vit_output": out.vit_hidden,
            "llm_image_tokens": out.tokens,
        }
        for name, value in stages.items():
            if value is not None:  # no decoder projector when the ViT reads latents
                parts.setdefault(name, []).append(value.flatten(1).float())
    return {name: torch.cat(chunks) for name, chunks in parts.items()}


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, n_train: int, steps: int = 300) -> float:
    """Held-out accuracy of an L2-regularised linear classifier fitted on the first ``n_train``."""
    mean, std = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = (x - mean) / std
    classes = int(y.max()) + 1
    weight = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.Adam([weight, bias], lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = x[:n_train] @ weight + bias
        loss = F.cross_entropy(logits, y[:n_train]) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = (x[n_train:] @ weight + bias).argmax(1)
    return (predicted == y[n_train:]).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: the embedded default model)")
    parser.add_argument("--n-train", type=int, default=2000, help="scenes the probes fit")
    parser.add_argument("--n-test", type=int, default=1000, help="held-out scenes they score")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, help="also write the accuracies as JSON here")
    args = parser.parse_args(argv)
    for flag, value, least in (("--n-train", args.n_train, 2), ("--n-test", args.n_test, 1)):
        if value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)

    from cheers.checkpoint import load_model
    from cheers.loading import default_model_path

    model = load_model(args.model or default_model_path()).eval()
    canvas = model.config.image_size
    objects = single_object_scenes(args.n_train + args.n_test, canvas, args.seed)
    pixels = torch.stack(
        [preprocess_generation(render(Scene((o,), canvas)), canvas) for o in objects]
    )
    labels = {
        "shape": torch.tensor([SHAPES.index(o.shape) for o in objects]),
        "colour": torch.tensor([COLORS.index(o.color) for o in objects]),
    }
    results = {}
    print(f"{'stage':20s} {'features':>9s}  shape  colour   (chance {1 / 3:.2f} / {1 / 6:.2f})")
    for name, x in stage_features(model, pixels).items():
        scores = {k: probe_accuracy(x, y, args.n_train) for k, y in labels.items()}
        results[name] = {"features": x.shape[1], **scores}
        print(
            f"{name:20s} {x.shape[1]:9d}  {scores['shape']:.3f}  {scores['colour']:.3f}", flush=True
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"model": str(args.model or "default"), **results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
