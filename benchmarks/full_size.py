"""The full-size model on this machine: load memory and CPU speed of the official preset.

    python benchmarks/full_size.py [--folder /work/full-size-tmp] [--tokens 4] [--json OUT]
    python benchmarks/full_size.py --tiny        # a seconds-long check of this script

Builds the ``official`` preset (2.57 B parameters) with random weights in bfloat16 (as the
release stores them; empty tensors filled in place, no float32 detour), saves it in the
released format (2 GB safetensors shards + index) and then, one fresh process at a time (so
the machine's memory serves one model at a time and each peak is that process's own):

- loads it in float32, bfloat16 and int8 (``load_model(..., quantize="int8")``, float32
  compute) and reports the peak RSS (VmHWM) of the load against the loaded weights' bytes,
  and the RSS once every weight has been read (a tensor kept as stored is memory-mapped, so
  its pages only become resident when used: the bfloat16 load is almost free until then);
- in each mode, times one image-to-text answer (a 512² image, ``--tokens`` greedy
  tokens, EOS ignored) and one text-to-image step (guidance 9.5: the second of two model
  evaluations, timed between the sampler's callbacks).

The folder is deleted at the end (``--keep`` keeps it). Threads: ``--threads`` (default 2).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A photo of a red bicycle leaning against a yellow wall."
QUESTION = "Describe this image."
SHARD_BYTES = 2 * 2**30
MODES = {  # name → (dtype, quantize, generate)
    "float32": ("float32", None, True),
    "bfloat16": ("bfloat16", None, True),
    "int8": ("float32", "int8", True),
}


def rss_mb(key: str = "VmHWM") -> float:
    """This process's peak (VmHWM; not ru_maxrss, which survives exec) or current (VmRSS)
    resident set."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def build(folder: Path, tiny: bool) -> dict:
    """Random weights in bfloat16, saved in the released format."""
    import torch

    from cheers.checkpoint import save_model
    from cheers.config import CheersConfig
    from cheers.model import Cheers

    cfg = CheersConfig.tiny(image_size=64) if tiny else CheersConfig.official()
    cfg.dummy_image_prefix = True  # as the released model is run
    start = time.perf_counter()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("meta"):
            model = Cheers(cfg)
    finally:
        torch.set_default_dtype(default)
    # Empty bfloat16 storage, zeroed (so a tensor init_weights does not visit is 0, not
    # garbage), then the model's own initialisation in place: no float32 copy ever exists.
    model = model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives the tied head storage of its own
    for t in [*model.parameters(), *model.buffers()]:
        t.data.zero_()
    torch.manual_seed(0)
    model.init_weights()
    built = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    save_model(model, folder, max_shard_bytes=SHARD_BYTES)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "src" / "cheers" / "default_model" / name, folder / name)
    disk = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return {
        "params": params,
        "build_s": built,
        "save_s": time.perf_counter() - start - built,
        "disk_gb": disk / 1e9,
        "peak_rss_mb": rss_mb(),
    }


def measure(folder: Path, mode: str, tokens: int, generation: bool = True) -> dict:
    """Load in one mode; peak RSS of the load, then the two timings."""
    from gpu_engine import time_i2t

    from cheers.pipeline import CheersPipeline
    from cheers.transforms.quantize import weight_bytes

    dtype, quantize, generate = MODES[mode]
    import torch

    base = rss_mb("VmRSS")  # the interpreter, torch and cheers, before any weight
    start = time.perf_counter()
    pipe = CheersPipeline.from_pretrained(folder, dtype=dtype, quantize=quantize)
    out = {
        "load_s": time.perf_counter() - start,
        "base_rss_mb": base,
        "load_peak_rss_mb": rss_mb(),
        "weights_mb": weight_bytes(pipe.model) / 2**20,
    }
    # Tensors kept as stored are mapped lazily: their pages become resident when first read.
    # Reading every weight once shows the resident size the model runs with.
    with torch.no_grad():
        for t in [*pipe.model.parameters(), *pipe.model.buffers()]:
            t.sum()
    out["touched_rss_mb"] = rss_mb("VmRSS")
    if not (generate and generation):
        return out
    firsts, rates = time_i2t(pipe, tokens, repeats=1)  # prefill, then greedy, EOS ignored
    out["i2t_first_token_s"] = firsts[0]
    out["i2t_s"] = firsts[0] + (tokens - 1) / rates[0]
    stamps: list[float] = []
    start = time.perf_counter()
    pipe(
        PROMPT,
        num_inference_steps=2,
        guidance_scale=9.5,
        generator=0,
        output_type="latent",
        callback=lambda _k, _n: stamps.append(time.perf_counter()),
    )
    out["t2i_call_s"] = time.perf_counter() - start  # prompt + dummy image + 2 steps
    out["t2i_step_s"] = stamps[1] - stamps[0]
    out["peak_rss_mb"] = rss_mb()
    return out


def decoding(folder: Path, mode: str, tokens: int, repeats: int = 3) -> dict:
    """Text-only greedy decoding of ``tokens`` tokens after a short prompt (no image), the
    memory-bound part: decoding tokens/s per repeat."""
    from gpu_engine import greedy_answer

    from cheers.pipeline import CheersPipeline

    dtype, quantize, _ = MODES[mode]
    pipe = CheersPipeline.from_pretrained(folder, dtype=dtype, quantize=quantize)
    rates = []
    for _ in range(repeats):
        _, seconds, _, _ = greedy_answer(pipe, None, tokens, question=PROMPT)
        rates.append((tokens - 1) / seconds)
    return {"decode_tokens_per_s": rates}


def run(task: str, args: argparse.Namespace) -> dict:
    """``task`` in a fresh process (its own peak RSS), one at a time."""
    out = args.folder.parent / f".{args.folder.name}-{task}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", task, "--out", str(out)]
    cmd += ["--folder", str(args.folder), "--tokens", str(args.tokens)]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--loads-only"] if args.loads_only else []
    cmd += ["--decode-tokens", str(args.decode_tokens)]
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE"}
    subprocess.run(cmd, env=env, check=True)
    result = json.loads(out.read_text())
    out.unlink()
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}
    print(f"{task}: {json.dumps(shown)}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--folder", type=Path, default=Path("/work/full-size-tmp"))
    parser.add_argument("--tokens", type=int, default=4, help="answer tokens (image → text)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="the tiny preset (script check)")
    parser.add_argument("--keep", action="store_true", help="keep the saved model folder")
    parser.add_argument("--loads-only", action="store_true", help="no generation timings")
    parser.add_argument(
        "--decode-tokens",
        type=int,
        default=0,
        help="also time text-only greedy decoding of N tokens in float32 and int8, in the "
        "order float32, int8, int8, float32 (fresh processes), 3 repeats each",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        task = args.worker
        if task == "build":
            result = build(args.folder, args.tiny)
        elif task.startswith("decode-"):
            result = decoding(args.folder, task.removeprefix("decode-"), args.decode_tokens)
        else:
            result = measure(args.folder, task, args.tokens, not args.loads_only)
        args.out.write_text(json.dumps(result))
        return 0
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    if args.folder.exists():
        parser.error(f"{args.folder} exists; pass a new folder (it is deleted at the end)")
    free = shutil.disk_usage(args.folder.parent).free
    if not args.tiny and free < 8e9:
        parser.error(f"{args.folder.parent} has {free / 1e9:.1f} GB free; the model needs 5.2")
    results: dict = {}
    try:
        results["build"] = run("build", args)
        for mode in modes:
            results[mode] = run(mode, args)
        if args.decode_tokens:
            for mode in ("float32", "int8", "int8", "float32"):  # ABBA: drift hits both alike
                rates = run(f"decode-{mode}", args)["decode_tokens_per_s"]
                results.setdefault(f"decode-{mode}", []).extend(rates)
    finally:
        if not args.keep:
            shutil.rmtree(args.folder, ignore_errors=True)
    b = results["build"]
    print(
        f"\n{'official' if not args.tiny else 'tiny'} preset, {b['params'] / 1e9:.3f} B "
        f"parameters, {b['disk_gb']:.2f} GB on disk (bfloat16), {args.threads} threads"
    )
    print(
        f"{'mode':10} {'weights MB':>11} {'base RSS MB':>12} {'load peak RSS MB':>17} "
        f"{'(peak-base)/weights':>20} {'RSS used MB':>12} {'load s':>7} {'I2T s':>7} "
        f"{'T2I step s':>11}"
    )
    for mode in modes:
        r = results[mode]
        i2t = f"{r['i2t_s']:7.1f}" if "i2t_s" in r else f"{'':7}"
        step = f"{r['t2i_step_s']:11.1f}" if "t2i_step_s" in r else f"{'':11}"
        print(
            f"{mode:10} {r['weights_mb']:11.0f} {r['base_rss_mb']:12.0f} "
            f"{r['load_peak_rss_mb']:17.0f} "
            f"{(r['load_peak_rss_mb'] - r['base_rss_mb']) / r['weights_mb']:20.2f} "
            f"{r['touched_rss_mb']:12.0f} {r['load_s']:7.1f} {i2t} {step}"
        )
    for mode in ("float32", "int8"):
        if f"decode-{mode}" in results:
            rates = results[f"decode-{mode}"]
            print(
                f"text decoding ({args.decode_tokens} tokens), {mode}: median "
                f"{statistics.median(rates):.2f} tokens/s (runs: "
                + ", ".join(f"{r:.2f}" for r in rates)
                + ")"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
