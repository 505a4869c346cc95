"""The engine on one GPU: the official preset, random weights, bfloat16, eager vs compiled.

    python benchmarks/gpu_engine.py                 # on a CUDA machine (needs ~10 GB)
    python benchmarks/gpu_engine.py --tiny          # a seconds-long CPU check of this script

Reports seconds per 512² image (80 steps, guidance 9.5, the reference Euler sampler),
image-to-text tokens/s (prefill of one 512² image + question, then ``--tokens`` greedy tokens
that never stop at EOS) and peak GPU memory. The modes build on one model in turn:

- ``eager``: the model as loaded;
- ``nhwc``: its autoencoder and decoder-projector convolutions in channels-last order
  (:mod:`cheers.transforms.channels_last`);
- ``compiled``: also ``torch.compile`` applied regionally (:mod:`cheers.transforms.compile`:
  each LLM decoder layer, ViT layer, flow-head block and decoder-projector block on its own;
  one graph serves every layer of a shape), which covers the denoising step and decoding;
- ``graphs``: also text decoding with static shapes over a cache kept between requests, its
  step compiled whole with ``mode="reduce-overhead"`` (CUDA graphs, recorded once;
  ``pipe.enable_static_decoding``, :mod:`cheers.pipeline.static_decoding`).

The first run of each mode is a warm-up (compilation) and is not timed. ``--profile MODE``
profiles one short text-to-image call and a short decode after that mode's figures: the
wall time against the GPU's busy time (how much is launch overhead) and the top kernels.

Two small-hardware modes (issue 13), each on a freshly built model after the others are freed:
``int8`` (weight-only int8 linear layers of the LLM, the ViT and the flow heads, eager) and
``offload`` (``pipe.enable_model_cpu_offload``: the large components wait on the CPU and visit
the GPU one at a time, eager). Their peak GPU memory is the figure that matters.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cheers.config import CheersConfig
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline
from cheers.pipeline.loops import decode_from
from cheers.sequence import left_pad
from cheers.tokenizer import CheersTokenizer
from cheers.transforms.channels_last import convolutions_channels_last
from cheers.transforms.compile import compile_regions
from cheers.transforms.quantize import quantize_int8

ROOT = Path(__file__).resolve().parents[1]
MODES = ("eager", "nhwc", "compiled", "graphs", "int8", "offload")
#: How the ``graphs`` mode compiles its static-shape decoding step: CUDA graphs.
GRAPHS = {"mode": "reduce-overhead"}
PROMPT = "A photo of a red bicycle leaning against a yellow wall."
QUESTION = "Describe this image."


def build(tiny: bool, device: torch.device, dtype: torch.dtype) -> CheersPipeline:
    cfg = CheersConfig.tiny(image_size=64) if tiny else CheersConfig.official()
    cfg.dummy_image_prefix = True  # as the released model is run
    torch.manual_seed(0)
    with torch.device(device):
        model = Cheers(cfg).init_weights()
    model = model.to(dtype).eval()
    return CheersPipeline(model, CheersTokenizer.from_folder(ROOT / "src/cheers/default_model"))


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_t2i(pipe: CheersPipeline, steps: int, guidance: float, repeats: int) -> list[float]:
    out = []
    for r in range(repeats):
        sync(pipe.device)
        start = time.perf_counter()
        pipe(
            PROMPT,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=r,
            output_type="pt",
        )
        sync(pipe.device)
        out.append(time.perf_counter() - start)
    return out


@torch.inference_mode()
def greedy_answer(
    pipe: CheersPipeline,
    image: np.ndarray | None,
    tokens: int,
    question: str = QUESTION,
) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """One image-to-text request (text only when ``image`` is None) decoded greedily for
    exactly ``tokens`` tokens (EOS ignored): ``(first-token seconds, decoding seconds, first
    logits (1, V), token ids (tokens,))``, decoded as ``pipe.text_decoding`` decodes."""
    sync(pipe.device)
    start = time.perf_counter()
    if image is None:
        images, content = [], question
    else:
        images = [pipe.model.understanding_tokens(pipe.inputs.pixels([image]))[0]]
        content = "<im_start><image><im_end>\n" + question
    ids = pipe.inputs.chat_ids([{"role": "user", "content": content}])
    batch = left_pad(pipe.inputs.sequences([ids], [images], [None]))
    _, state = pipe.text_decoding(pipe.model, batch, tokens)
    logits = state.logits
    sync(pipe.device)
    first = time.perf_counter()
    out = decode_from(pipe.model, state, tokens, eos_id=-1, pad_id=0)
    sync(pipe.device)
    return first - start, time.perf_counter() - first, logits.float(), out.tokens[0]


def time_i2t(pipe: CheersPipeline, tokens: int, repeats: int) -> tuple[list[float], list[float]]:
    """(first-token seconds, decode tokens/s) per repeat, EOS ignored so every run is full."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (pipe.resolution, pipe.resolution, 3), dtype=np.uint8)
    firsts, rates = [], []
    for _ in range(repeats):
        first, decoding, _, _ = greedy_answer(pipe, image, tokens)
        firsts.append(first)
        rates.append((tokens - 1) / decoding)
    return firsts, rates


def measure(pipe: CheersPipeline, args: argparse.Namespace) -> dict[str, float]:
    device = pipe.device
    time_t2i(pipe, min(args.steps, 3), args.guidance, 1)  # warm-up (and compilation)
    # As many tokens as the timed runs: a compiled decoder layer meets every cache length
    # (and the cache's own size) before the clock starts, so no recompilation is timed.
    time_i2t(pipe, args.tokens, 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t2i = time_t2i(pipe, args.steps, args.guidance, args.repeats)
    t2i_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    firsts, rates = time_i2t(pipe, args.tokens, args.repeats)
    i2t_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return {
        "t2i_s_per_image": statistics.median(t2i),
        "t2i_peak_gib": t2i_mem,
        "i2t_first_token_s": statistics.median(firsts),
        "i2t_tokens_per_s": statistics.median(rates),
        "i2t_peak_gib": i2t_mem,
    }


def profile(
    pipe: CheersPipeline, args: argparse.Namespace, steps: int = 4, tokens: int = 16
) -> str:
    """A short text-to-image call and a short decode under the profiler: wall time, the GPU's
    busy time (the sum of kernel times; the rest of the wall time is host overhead) and the
    kernels that take the most time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU]
    if pipe.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    lines = []
    for name, run in (
        (f"text-to-image, {steps} steps", lambda: time_t2i(pipe, steps, args.guidance, 1)),
        (f"image-to-text, {tokens} tokens", lambda: time_i2t(pipe, tokens, 1)),
    ):
        with profiler(activities=activities) as prof:
            start = time.perf_counter()
            run()
            wall = time.perf_counter() - start
        events = prof.key_averages()
        busy = sum(e.self_device_time_total for e in events) / 1e6
        lines.append(f"profile: {name}: wall {wall:.3f} s, GPU busy {busy:.3f} s")
        sort = "self_cuda_time_total" if pipe.device.type == "cuda" else "self_cpu_time_total"
        lines.append(events.table(sort_by=sort, row_limit=15, max_name_column_width=70))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny config (CPU-friendly check of the script itself)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 on CUDA, else float32")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--guidance", type=float, default=9.5)
    parser.add_argument("--tokens", type=int, default=128, help="decoded tokens per request")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", default="eager,compiled", help=f"of {', '.join(MODES)}")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--profile", choices=MODES, help="profile after this mode's figures")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if args.profile and args.profile not in modes:
        parser.error(f"--profile {args.profile}: that mode is not in --modes")
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; use some of {', '.join(MODES)}")
    import torch._dynamo as dynamo

    # Every layer is its own region; decoding's growing cache length is one dynamic shape.
    dynamo.config.cache_size_limit = 64
    results = {}
    shared = {"eager", "nhwc", "compiled", "graphs"}
    pipe = build(args.tiny, device, dtype) if shared & set(modes) else None
    compiled = False
    for mode in [m for m in MODES if m in modes]:  # eager before compiled; fresh models last
        if mode in ("nhwc", "compiled", "graphs"):
            convolutions_channels_last(pipe.model)
        if mode in ("compiled", "graphs") and not compiled:
            compile_regions(pipe.model)
            compiled = True
        elif mode in ("int8", "offload"):
            # Free the previous model first (compiled graphs hold it too): its weights would
            # count in this mode's peak.
            pipe = None
            dynamo.reset()
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            pipe = build(args.tiny, device, dtype)
            if mode == "int8":
                quantize_int8(pipe.model)
            else:
                pipe.enable_model_cpu_offload(device)
        if mode == "graphs":
            pipe.enable_static_decoding(max_length=1024, compile_options=GRAPHS)
        results[mode] = measure(pipe, args)
        # Each mode's figures as soon as they exist: a run cut short keeps the modes it finished.
        print(json.dumps({mode: results[mode]}), flush=True)
        if mode == args.profile:
            print(profile(pipe, args), flush=True)
        if args.json:
            args.json.write_text(
                json.dumps(
                    {"device": device_name(device), "dtype": str(dtype), **results}, indent=2
                )
            )
    name = device_name(device)
    res = 64 if args.tiny else 512
    print(
        f"device {name}, {dtype}, {'tiny' if args.tiny else 'official'} preset, {res} px, "
        f"{args.steps} steps, guidance {args.guidance}"
    )
    print(f"{'figure':28}" + "".join(f"{m:>12}" for m in results))
    for key in (
        "t2i_s_per_image",
        "t2i_peak_gib",
        "i2t_first_token_s",
        "i2t_tokens_per_s",
        "i2t_peak_gib",
    ):
        print(f"{key:28}" + "".join(f"{r[key]:12.3f}" for r in results.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
