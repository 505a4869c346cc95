"""Int8 weight-only quantization against float32 on the embedded model, side by side.

    python benchmarks/quantize.py [--model DIR] [--questions 64] [--repeats 3]

Prints weight memory, image-to-text speed (interleaved repeats, best of each), the deviation
of the quantized model (max logit difference on the questions' first answer token, greedy
answer agreement, answers right against the truth) and the PSNR of a generated image against
float32 from the same noise.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cheers.loading import DEFAULT_MODEL_DIR
from cheers.pipeline import CheersPipeline
from cheers.shapes.dataset import benchmark_questions
from cheers.shapes.questions import score_answer
from cheers.transforms.quantize import quantize_int8, weight_bytes


def answers(pipe, records, max_new_tokens=8):
    images = [[r.image] for r in records]
    return pipe.understand(
        images, [r.question.text for r in records], max_new_tokens=max_new_tokens
    )


def first_logits(pipe, records):
    """Logits of the first answer token of every question (one prefill, no decoding)."""
    captured = []
    lm_head = pipe.model.lm_head
    hook = lm_head.register_forward_hook(lambda m, i, o: captured.append(o.detach().float()))
    try:
        answers(pipe, records, max_new_tokens=1)
    finally:
        hook.remove()
    return torch.cat([c.reshape(-1, c.shape[-1]) for c in captured])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    full = CheersPipeline.from_pretrained(args.model, dtype="float32")
    int8 = CheersPipeline.from_pretrained(args.model, dtype="float32")
    names = quantize_int8(int8.model)
    records = benchmark_questions(0, args.questions)
    print(f"quantized {len(names)} linear layers")
    b_full, b_int8 = weight_bytes(full.model), weight_bytes(int8.model)
    print(
        f"weights: float32 {b_full / 2**20:.1f} MiB, int8 {b_int8 / 2**20:.1f} MiB "
        f"({b_int8 / b_full:.2f}×)"
    )

    times = {"float32": [], "int8": []}
    for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
        for name, pipe in (("float32", full), ("int8", int8)):
            start = time.perf_counter()
            got = answers(pipe, records)
            times[name].append(time.perf_counter() - start)
            if name == "float32":
                a_full = got
            else:
                a_int8 = got
    best = {k: min(v) for k, v in times.items()}
    print(
        f"image → text, {len(records)} questions: float32 {best['float32']:.2f} s, int8 "
        f"{best['int8']:.2f} s ({best['float32'] / best['int8']:.2f}× speed)"
    )
    diff = (first_logits(full, records) - first_logits(int8, records)).abs().max()
    agree = np.mean([a == b for a, b in zip(a_full, a_int8, strict=True)])
    right = [
        np.mean([score_answer(a, r.question.answer) for a, r in zip(ans, records, strict=True)])
        for ans in (a_full, a_int8)
    ]
    print(
        f"max |Δ logit| {float(diff):.4f}; greedy answers equal {agree:.3f}; right: float32 "
        f"{right[0]:.3f}, int8 {right[1]:.3f}"
    )
    noise = torch.randn(
        4,
        full.model.config.latent_channels,
        full.model.grid_size,
        full.model.grid_size,
        generator=torch.Generator().manual_seed(0),
    )
    prompts = ["a red circle", "two squares", "a blue triangle", "a circle above a square"]
    kwargs = {"num_inference_steps": 20, "guidance_scale": 9.5, "latents": noise}
    imgs = [[np.asarray(i) for i in p(prompts, **kwargs).images] for p in (full, int8)]
    print(
        "PSNR of generated images vs float32 (same noise): "
        + ", ".join(f"{psnr(a, b):.1f} dB" for a, b in zip(*imgs, strict=True))
    )


if __name__ == "__main__":
    main()
