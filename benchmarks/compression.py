"""2-/4-bit weights (RTN, decoupleQ) and the INT4 KV cache against float32, side by side.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/compression.py [--json OUT] [--full-size-only]

On the embedded model (its variants built in this process, timed turn by turn, best of
``--repeats``), for the weights float32, int8, RTN-4, decoupleQ-4, RTN-2, decoupleQ-2 (LLM
attention and MLP, group 64; decoupleQ calibrated on ``--calibration`` Shapes training samples)
and, on float32 weights, the KV caches float, naive INT4 and Hadamard INT4 (SAW-INT4):

- next-token KL to float32 (nats, mean over the answer tokens) on held-out chats: Shapes
  validation conversations (another seed than the calibration data), each prompt prefilled
  into the variant's cache and float32's greedy answer fed token by token (so the KV cache is
  on the path), with the share of positions whose argmax equals float32's;
- shapes-vqa and shapes-gen overall scores;
- image latent error: ‖x − x_f32‖ / ‖x_f32‖ of text-to-image latents from the same noise
  (20 steps, guidance 9.5);
- image → text decoding tokens/s; weight bytes; KV bytes a token.

On the full-size official config (meta device: no weights are made): weight bytes, the peak
memory of a streaming load (the model plus its largest tensor, which is what load_model holds
at most: measured 1.01–1.07× at full size for float32 and int8, docs/finetuning.md) and KV
bytes a token for each option.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from gpu_engine import greedy_answer

from cheers.config import CheersConfig
from cheers.evaluation.shapes_gen import evaluate_generation
from cheers.evaluation.shapes_vqa import evaluate_understanding
from cheers.loading import DEFAULT_MODEL_DIR
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline
from cheers.pipeline.loops import start_decoding
from cheers.quantization import (
    QuantizeSettings,
    calibration_batches,
    config_entry,
    quantize_model,
)
from cheers.sequence import left_pad
from cheers.shapes.dataset import iter_split, write_split
from cheers.transforms.lowbit import CONFIG_KEY, DEFAULT_LOWBIT_GROUPS, restore_structure
from cheers.transforms.quantize import quantize_int8, weight_bytes
from cheers.transforms.targets import linear_targets

WEIGHTS = ("float32", "int8", "rtn-4", "decoupleq-4", "rtn-2", "decoupleq-2")
KV = ("kv-int4-naive", "kv-int4")
T2I_STEPS = 20


def kv_bytes_per_token(config: CheersConfig, kind: str, float_bytes: int) -> int:
    """Bytes of keys and values one token adds to the cache over every layer."""
    text = config.text_config
    per_head = 2 * (
        text.head_dim * float_bytes if kind == "float" else text.head_dim // 2 + 2 * 2
    )  # INT4: two values a byte plus a float16 scale and zero per token and head
    return text.num_hidden_layers * text.num_key_value_heads * per_head


# ------------------------------------------------------------------------------ the variants
def build(name: str, calibration: Path, samples: int) -> CheersPipeline:
    folder = DEFAULT_MODEL_DIR
    if name == "int8":
        return CheersPipeline.from_pretrained(folder, dtype="float32", quantize="int8")
    if name.startswith("kv-"):
        return CheersPipeline.from_pretrained(folder, dtype="float32", kv_cache=name[3:])
    pipe = CheersPipeline.from_pretrained(folder, dtype="float32")
    if name != "float32":
        method, bits = name.split("-")
        settings = QuantizeSettings(method=method, bits=int(bits))
        batches = calibration_batches(pipe, calibration, samples) if method != "rtn" else None
        start = time.perf_counter()
        report = quantize_model(pipe.model, settings, batches)
        print(f"{name}: quantized in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        if report.summary():
            print(report.summary(), file=sys.stderr)
    return pipe


def heldout_chats(n: int, seed: int) -> list[tuple[list[dict], list[np.ndarray]]]:
    """Shapes validation conversations without generation: (messages, images)."""
    from cheers.shapes.render import render_array

    chats = []
    for sample in iter_split("val", 4 * n, seed):
        if "<image_gen>" in sample.gpt or len(chats) == n:
            continue
        images = [render_array(scene) for scene in sample.scenes]
        chats.append(([{"role": "user", "content": sample.human}], images))
    return chats


def prompt_batch(pipe: CheersPipeline, chat):
    messages, images = chat
    ids = pipe.inputs.chat_ids(messages)
    tokens = pipe.model.understanding_tokens(pipe.inputs.pixels(images)) if images else None
    row = [tokens[j] for j in range(len(images))] if images else []
    return left_pad(pipe.inputs.sequences([ids], [row], [None]))


@torch.no_grad()
def greedy_tokens(pipe: CheersPipeline, chat, n: int) -> torch.Tensor:
    """``n`` greedy answer tokens (EOS not special)."""
    _, state = start_decoding(pipe.model, prompt_batch(pipe, chat), n)
    picked = []
    for _ in range(n):
        picked.append(state.logits.argmax(-1))
        state.advance(pipe.model, picked[-1])
    return torch.cat(picked)


@torch.no_grad()
def forced_log_probs(pipe: CheersPipeline, chat, answer: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (n, V) of each position of ``answer`` fed after the prompt."""
    _, state = start_decoding(pipe.model, prompt_batch(pipe, chat), len(answer))
    out = [torch.log_softmax(state.logits.float(), -1)[0]]
    for token in answer[:-1]:
        state.advance(pipe.model, token.view(1))
        out.append(torch.log_softmax(state.logits.float(), -1)[0])
    return torch.stack(out)


def latents(pipe: CheersPipeline, noise: torch.Tensor) -> torch.Tensor:
    out = pipe(
        ["a red circle on the left"] * len(noise),
        num_inference_steps=T2I_STEPS,
        guidance_scale=9.5,
        time_shift=0.5,
        latents=noise,
        output_type="latent",
    )
    return out.images.float()


def compare(args: argparse.Namespace, tmp: Path) -> dict:
    calibration = write_split(tmp / "calibration", "train", args.calibration, seed=0)
    names = [*WEIGHTS, *KV]
    pipes = {name: build(name, calibration, args.calibration) for name in names}
    ref = pipes["float32"]
    chats = heldout_chats(args.chats, seed=101)
    answers = [greedy_tokens(ref, chat, args.tokens) for chat in chats]  # fed to every variant
    g = torch.Generator().manual_seed(0)
    cfg = ref.model.config
    noise = torch.randn(args.images, cfg.latent_channels, cfg.grid_size, cfg.grid_size, generator=g)
    ref_latents = latents(ref, noise)
    ref_logp = [forced_log_probs(ref, c, a) for c, a in zip(chats, answers, strict=True)]
    res: dict = {}
    for name, pipe in pipes.items():
        kl, agree = [], []
        for chat, answer, base in zip(chats, answers, ref_logp, strict=True):
            logp = forced_log_probs(pipe, chat, answer)
            kl.append(float((base.exp() * (base - logp)).sum(-1).mean()))
            agree.append(float((logp.argmax(-1) == base.argmax(-1)).float().mean()))
        x = latents(pipe, noise)
        kind = name[3:] if name.startswith("kv-") else "float"
        res[name] = {
            "weights_mb": weight_bytes(pipe.model) / 2**20,
            "kv_bytes_per_token": kv_bytes_per_token(cfg, kind, 4),
            "next_token_kl": float(np.mean(kl)),
            "argmax_agreement": float(np.mean(agree)),
            "latent_rel_error": float((x - ref_latents).norm() / ref_latents.norm()),
            "tokens_per_s": [],
        }
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    for _ in range(args.repeats):  # interleaved: a busy machine slows every variant alike
        for name, pipe in pipes.items():
            _, decoding, _, _ = greedy_answer(pipe, image, args.tokens)
            res[name]["tokens_per_s"].append((args.tokens - 1) / decoding)
    for name, pipe in pipes.items():
        res[name]["tokens_per_s"] = max(res[name]["tokens_per_s"])
        if args.vqa:
            res[name]["shapes_vqa"] = evaluate_understanding(pipe, n=args.vqa, heldout=False)[
                "scores"
            ]["overall"]
        if args.gen:
            res[name]["shapes_gen"] = evaluate_generation(
                pipe, n_per_category=args.gen, heldout=False
            )["scores"]["overall"]
    return res


# ----------------------------------------------------------------------- the full-size config
def full_size() -> dict:
    """Weight bytes, streaming-load peak and KV bytes a token of the official config."""
    config = CheersConfig.official()
    out = {}
    options = [
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("int8", torch.float32),
        ("rtn/decoupleq-4", torch.bfloat16),
        ("rtn/decoupleq-2", torch.bfloat16),
    ]
    for name, dtype in options:
        with torch.device("meta"):
            model = Cheers(config).to(dtype)
        if name == "int8":
            quantize_int8(model)
        elif "-" in name:
            settings = QuantizeSettings(method="rtn", bits=int(name.split("-")[1][0]))
            names = [n for n, _ in linear_targets(model, DEFAULT_LOWBIT_GROUPS)]
            model.config = dataclasses.replace(
                config, extra={**config.extra, CONFIG_KEY: config_entry(settings, names)}
            )
            restore_structure(model, "the official config")
        # By object, not data pointer: every meta tensor's pointer is 0 (tied ones are one object).
        sizes = [
            t.numel() * t.element_size()
            for t in {id(t): t for t in model.state_dict(keep_vars=True).values()}.values()
        ]
        total, largest = sum(sizes), max(sizes)
        float_bytes = 4 if dtype == torch.float32 else 2
        out[name] = {
            "compute_dtype": str(dtype).removeprefix("torch."),
            "weights_gb": total / 1e9,
            "load_peak_gb": (total + largest) / 1e9,
            "kv_bytes_per_token": {
                kind: kv_bytes_per_token(config, kind, float_bytes)
                for kind in ("float", "int4", "int4-naive")
            },
        }
    return out


def report(res: dict, full: dict | None) -> None:
    if res:
        cols = list(res)
        print(f"\nembedded model, against float32 ({', '.join(cols)})")
        rows = [
            ("weights MiB", "weights_mb", "{:.2f}"),
            ("KV bytes / token", "kv_bytes_per_token", "{:.0f}"),
            ("next-token KL (nats)", "next_token_kl", "{:.4f}"),
            ("argmax = float32", "argmax_agreement", "{:.3f}"),
            ("latent rel. error", "latent_rel_error", "{:.4f}"),
            ("shapes-vqa", "shapes_vqa", "{:.3f}"),
            ("shapes-gen", "shapes_gen", "{:.3f}"),
            ("image→text tokens/s", "tokens_per_s", "{:.0f}"),
        ]
        print(f"{'':22}" + "".join(f"{c:>15}" for c in cols))
        for label, key, fmt in rows:
            if key in res[cols[0]]:
                print(f"{label:22}" + "".join(f"{fmt.format(res[c][key]):>15}" for c in cols))
    if full:
        print("\nfull-size official config (meta device)")
        for name, f in full.items():
            kv = ", ".join(f"{k} {v:,}" for k, v in f["kv_bytes_per_token"].items())
            print(
                f"{name:31} weights {f['weights_gb']:.2f} GB, streaming-load peak "
                f"{f['load_peak_gb']:.2f} GB, KV bytes/token ({f['compute_dtype']}): {kv}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--calibration", type=int, default=64, help="calibration samples")
    parser.add_argument("--chats", type=int, default=24, help="held-out chats for the KL")
    parser.add_argument("--tokens", type=int, default=16, help="answer tokens per chat")
    parser.add_argument("--images", type=int, default=2, help="text-to-image requests")
    parser.add_argument("--vqa", type=int, default=64, help="shapes-vqa questions (0: skip)")
    parser.add_argument("--gen", type=int, default=4, help="shapes-gen prompts per category")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--full-size-only", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {}
    if not args.full_size_only:
        with tempfile.TemporaryDirectory() as tmp:
            res = compare(args, Path(tmp))
    full = full_size()
    report(res, full)
    if args.json:
        args.json.write_text(json.dumps({"embedded": res, "full_size": full}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
