"""Shapes-gen scores of a model at its native size and at other sizes (docs/architecture.md §14).

    python benchmarks/image_sizes.py [--n 3] [--sizes 64x64,96x96,96x64]

Each size runs the same prompts and seeds through ``text_to_image(height=, width=)``; a
non-square image is judged on its centred square (the Shapes world is square), every image at
the benchmark's canvas. Scores only: no timing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from cheers.evaluation.benchmark import run_benchmark
from cheers.evaluation.shapes_gen import ShapesGen
from cheers.loading import default_model_path
from cheers.pipeline import CheersPipeline
from cheers.pipeline.arguments import parse_size


class AtSize:
    """The pipeline with every text_to_image made at (height, width), cropped to its square;
    the benchmark's native-sized noise is replaced by noise of the size (seeded from it)."""

    def __init__(self, pipe: CheersPipeline, height: int, width: int) -> None:
        self.pipe, self.height, self.width = pipe, height, width

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def text_to_image(self, prompts: Any, **kwargs: Any) -> Any:
        latents = kwargs.get("latents")
        config = self.pipe.model.config
        if latents is not None and (self.height, self.width) != (config.image_size,) * 2:
            # The benchmark's per-item noise is native-sized: draw this size's noise from a
            # seed read off it, so every item keeps its own reproducible noise.
            stride = config.image_stride
            seed = int(latents.flatten()[:4].abs().sum().item() * 1e6)
            shape = (
                latents.shape[0],
                latents.shape[1],
                self.height // stride,
                self.width // stride,
            )
            kwargs["latents"] = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
        out = self.pipe.text_to_image(prompts, height=self.height, width=self.width, **kwargs)
        side = min(self.height, self.width)
        left, top = (self.width - side) // 2, (self.height - side) // 2
        out.images = [im.crop((left, top, left + side, top + side)) for im in out.images]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3, help="prompts per category")
    parser.add_argument("--sizes", default="64x64,96x96,96x64", help="WxH, comma separated")
    args = parser.parse_args()
    pipe = CheersPipeline.from_pretrained(default_model_path())
    rows = {}
    for text in args.sizes.split(","):
        height, width = parse_size(text)
        bench = ShapesGen(n_per_category=args.n, images_per_prompt=2, heldout=False)
        result = run_benchmark(bench, AtSize(pipe, height, width))
        rows[text] = result["scores"]
        print(text, json.dumps(result["scores"]), flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
