"""Is cheers.pipeline.memory's estimate an upper bound of what a call allocates, and how close?

    python benchmarks/memory_estimate.py --device cuda [--json OUT]   # the released size
    python benchmarks/memory_estimate.py --preset measurement --dtype float32 --device cpu
    python benchmarks/memory_estimate.py --preset tiny --device cpu   # a check of the script

Builds a preset (``official``: 2.57 B parameters; ``measurement``: the 128-px config of
benchmarks/engine.py; ``tiny``) with random weights, then for text-to-image calls of 1, 4 and 16
images (guidance 9.5, 2 steps, PIL output) and for image questions of 1 and 8 rows (16 new
tokens) prints the peak memory the call allocated beyond what was allocated before it, the
estimate of :mod:`cheers.pipeline.memory` and their ratio. The peak is the allocator's on CUDA
(``torch.cuda.max_memory_allocated``) and, on a CPU, the growth of the process's resident peak
(VmHWM, reset before each call through ``/proc/self/clear_refs``), with glibc told to map
every block over 64 KiB on its own and to return freed memory at once (``mallopt``), so that
the resident size follows what is allocated rather than what the heap keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A photo of a red bicycle leaning against a yellow wall."
QUESTION = "Describe this image in detail."


def build(preset: str, device: str, dtype: torch.dtype):
    from cheers.config import CheersConfig
    from cheers.model import Cheers
    from cheers.pipeline import CheersPipeline
    from cheers.tokenizer import CheersTokenizer

    if preset == "measurement":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from engine import measurement_config

        cfg = measurement_config()
    else:
        cfg = CheersConfig.tiny(image_size=64) if preset == "tiny" else CheersConfig.official()
    cfg.dummy_image_prefix = True  # as the released model is run
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = Cheers(cfg)
    finally:
        torch.set_default_dtype(default)
    model = model.to_empty(device=device)
    model.tie_weights()
    for t in [*model.parameters(), *model.buffers()]:
        t.data.zero_()
    torch.manual_seed(0)
    model.init_weights()
    tokenizer = CheersTokenizer.from_folder(ROOT / "src" / "cheers" / "default_model")
    return CheersPipeline(model.eval(), tokenizer)


def _follow_allocations() -> None:
    """Make glibc map large blocks one by one and give freed memory back (CPU peaks)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 0)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def peak(device: torch.device, call) -> int:
    """Bytes ``call()`` allocated at its peak beyond what was allocated before it."""
    if device.type != "cuda":
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status_kb("VmRSS")
        call()
        return (_status_kb("VmHWM") - before) * 1024
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    call()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def main(argv: list[str] | None = None) -> int:
    from cheers.pipeline import memory

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=["official", "measurement", "tiny"], default="official")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--images", default="1,4,16")
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cpu":
        _follow_allocations()
    pipe = build(args.preset, args.device, getattr(torch, args.dtype))
    device, config, dtype = pipe.device, pipe.model.config, pipe.model.dtype
    pipe.memory = memory.MemoryBudget(free=lambda _device: None)  # measure, never refuse
    results = []
    prompt_tokens = len(pipe.inputs.generation_ids(PROMPT)) + config.tokens_per_image  # dummy
    peak(device, lambda: pipe(PROMPT, num_inference_steps=2, generator=0))  # warm-up
    for n in [int(x) for x in args.images.split(",")]:
        need = memory.image_call(config, dtype, n, guided=True, prompt_tokens=prompt_tokens)
        used = peak(device, lambda n=n: pipe([PROMPT] * n, num_inference_steps=2, generator=0))
        results.append({"call": f"text-to-image x{n}", "measured": used, "estimate": need.total,
                        "parts": need.parts})  # fmt: skip
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (pipe.resolution, pipe.resolution, 3), dtype=np.uint8)
    question_tokens = len(pipe.inputs.chat_ids([{"role": "user", "content": QUESTION}]))
    for rows in [int(x) for x in args.rows.split(",")]:
        need = memory.text_call(
            config, dtype, rows, prompt_tokens=question_tokens + config.tokens_per_image,
            new_tokens=args.tokens, images=rows,
        )  # fmt: skip
        used = peak(
            device,
            lambda rows=rows: pipe.understand(
                [image] * rows, [QUESTION] * rows, max_new_tokens=args.tokens
            ),
        )
        results.append({"call": f"image question x{rows}", "measured": used,
                        "estimate": need.total, "parts": need.parts})  # fmt: skip
    print(f"{'call':24s} {'measured MiB':>13s} {'estimate MiB':>13s} {'estimate/measured':>18s}")
    for r in results:
        measured = "-" if r["measured"] is None else f"{r['measured'] / 2**20:.1f}"
        ratio = "-" if not r["measured"] else f"{r['estimate'] / r['measured']:.2f}"
        print(f"{r['call']:24s} {measured:>13s} {r['estimate'] / 2**20:13.1f} {ratio:>18s}")
    if args.json:
        record = {"device": str(device), "preset": args.preset, "dtype": args.dtype,
                  "results": results}  # fmt: skip
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
