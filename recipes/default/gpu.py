"""Train the embedded default model on one GPU in minutes, GPU-first.

    python recipes/default/gpu.py --design curriculum --minutes 6.5 --out runs/gpu/curriculum

The CPU recipe (``build.py``) reads PNG files through the per-sample ``cheers train`` loop;
at 32 samples/s that is 6.8 hours for half a million samples. Here Shapes samples are drawn,
rendered and tokenised on the fly by worker processes into padded batches of fixed structure,
and one GPU step handles a whole batch with no per-sample Python: frozen-VAE latents, the image
path (decoder projector → ViT → 4× compression), the image tokens scattered into the text, the
omni-masked LLM, the flow heads, in bfloat16 autocast. Training is planned in wall time: each
phase of a design gets a share of ``--minutes``, and the learning rate follows that time.

Designs (``DESIGNS``):

- ``joint`` — everything but the VAE from the first step, on the full mix;
- ``draw_first`` — everything but the VAE on drawings and edits alone, then on the full mix;
- ``talk`` — for ``--init``: a trained model fine-tuned on a mix with more small talk and
  scene descriptions;
- ``curriculum`` — the paper's order: understanding first (ViT, projectors and LLM on
  questions, scene descriptions and small talk), then the generation heads alone with the LLM
  frozen, then everything jointly.

The VAE is the embedded model's (frozen, as in every joint stage); the decoder projector starts
as a copy of its decoder. Every ``--eval-every`` seconds a fixed validation set gives the
answer accuracy (greedy answers, exact; also on scenes of three or more objects), the flow
loss and the prompt effect (the flow loss with every prompt swapped for another one's, minus
its own); the curve and a snapshot of the model go to ``--out`` each time, so a run cut short
still leaves its latest model.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cheers._files import atomic_write
from cheers.checkpoint import load_model, save_state
from cheers.data.examples import DUMMY, apply_guidance_dropout, tokenize
from cheers.data.records import Record
from cheers.model import Cheers
from cheers.shapes.dataset import IMAGE_PROMPT, make_sample
from cheers.shapes.render import render_array, sample_scene
from cheers.shapes.talk import describe_scene, sample_describe_question, sample_small_talk
from cheers.tokenizer import CheersTokenizer
from cheers.training.packed import (
    PackedRow,
    collate,
    draw_t,
    pack_example,
    packed_losses,
    rows_right,
    to_device,
)
from cheers.training.trainer import set_trainable
from cheers.training.vae import start_projector_from_decoder

PACKAGE_MODEL = Path(__file__).resolve().parents[2] / "src" / "cheers" / "default_model"
TASKS = ("understanding", "describe", "chat", "generation", "editing")
MIXES: dict[str, dict[str, float]] = {
    "understand": {"understanding": 0.6, "describe": 0.3, "chat": 0.1},
    "generate": {"generation": 0.75, "editing": 0.25},
    "joint": {
        "understanding": 0.3,
        "describe": 0.1,
        "chat": 0.05,
        "generation": 0.4,
        "editing": 0.15,
    },
    # Teaching a trained model to talk and describe, without letting the rest slip.
    "talk": {
        "understanding": 0.25,
        "describe": 0.15,
        "chat": 0.15,
        "generation": 0.35,
        "editing": 0.1,
    },
}
# Config fields ``--set`` may switch for a run (docs/training.md, "Generation that listens").
SWITCHES = ("vit_input", "flow_prediction")
SEEING = ("decoder_projector", "vision", "und_projector", "language_model", "embeddings")
HEADS = ("time_embed", "gen_projector", "hi_gate", "hi_projector")


@dataclass(frozen=True)
class Phase:
    """A part of a design: its share of the time, what it trains, on which mix."""

    name: str
    share: float
    trainable: tuple[str, ...]
    mix: str
    lr: float = 1e-3
    time_shift: float = 0.4  # generation targets' t = s(u); below 1 nearer noise
    guidance_dropout: float = 0.1


DESIGNS: dict[str, tuple[Phase, ...]] = {
    "joint": (Phase("joint", 1.0, SEEING + HEADS, "joint"),),
    # Drawings alone first, then the full mix: understanding samples mixed in from the start
    # keep the drawings from following the prompt (docs/training.md §7).
    "draw_first": (
        Phase("generate", 0.4, SEEING + HEADS, "generate"),
        Phase("joint", 0.6, SEEING + HEADS, "joint", lr=7e-4),
    ),
    "curriculum": (
        Phase("understand", 0.25, SEEING, "understand"),
        Phase("generate", 0.15, HEADS, "generate"),
        Phase("joint", 0.60, SEEING + HEADS, "joint", lr=7e-4),
    ),
    # For --init: a trained model fine-tuned on the mix with small talk and descriptions.
    "talk": (Phase("talk", 1.0, SEEING + HEADS, "talk", lr=3e-4, time_shift=0.3),),
}


# ----------------------------------------------------------------------------- data (workers)
def draw_sample(rng: np.random.Generator, task: str, canvas: int) -> tuple[list, list]:
    """One sample of ``task``: its chat messages and the scenes of its image slots, in order."""
    if task == "describe":
        scene = sample_scene(rng, canvas)
        question = f"{IMAGE_PROMPT}\n{sample_describe_question(rng)}"
        return [("user", question), ("assistant", describe_scene(scene))], [scene]
    if task == "chat":
        ask, answer = sample_small_talk(rng)
        return [("user", ask), ("assistant", answer)], []
    s = make_sample(rng, task, "gpu", canvas)
    return [("user", s.human), ("assistant", s.gpt)], list(s.scenes)


def draw_samples(rng: np.random.Generator, mix: dict[str, float], n: int, canvas: int) -> list:
    tasks = [t for t in TASKS if mix.get(t, 0) > 0]
    p = np.array([mix[t] for t in tasks]) / sum(mix[t] for t in tasks)
    return [draw_sample(rng, tasks[int(rng.choice(len(tasks), p=p))], canvas) for _ in range(n)]


def encode(
    sample: tuple[list, list], tokenizer: CheersTokenizer, tokens_per_image: int, dropped: bool
) -> tuple[PackedRow, list]:
    """A drawn sample as a packed row (unconditional if ``dropped`` and a generation sample),
    with its scenes."""
    messages, scenes = sample
    record = Record("s", tuple(Path(f"{j}") for j in range(len(scenes))), tuple(messages), "s")
    example = tokenize(record, tokenizer, tokens_per_image, max_length=10_000)
    if example.roles == (DUMMY,):  # the embedded model has no dummy image (its config)
        example = replace(
            example, input_ids=example.input_ids[1:], labels=example.labels[1:], roles=(), images=()
        )
    if example.is_generation and dropped:
        example = apply_guidance_dropout(example, tokenizer)
    return pack_example(example, tokens_per_image), scenes


def pack(encoded: list[tuple[PackedRow, list]]) -> dict[str, np.ndarray]:
    """Encoded samples as a packed batch, their scenes rendered."""
    images = [render_array(scene) for _, scenes in encoded for scene in scenes]
    return collate([row for row, _ in encoded], images)


@dataclass(frozen=True)
class DataSpec:
    tokenizer: str
    tokens_per_image: int
    canvas: int
    batch_size: int
    seed: int
    phases: tuple[Phase, ...]
    group: int = 4


def produce(worker: int, spec: DataSpec, out: mp.Queue, phase: mp.Value) -> None:
    """Worker loop: batches of the current phase's mix, until the phase is −1."""
    torch.set_num_threads(1)
    tokenizer = CheersTokenizer.from_folder(spec.tokenizer)
    k = 0
    while (current := phase.value) >= 0:
        rng = np.random.default_rng([spec.seed, worker, k])
        k += 1
        p = spec.phases[current]
        # Several batches' worth, sorted by length and cut: little padding (small talk and
        # descriptions are two to three times longer than questions).
        rows = [
            encode(sample, tokenizer, spec.tokens_per_image, rng.random() < p.guidance_dropout)
            for sample in draw_samples(rng, MIXES[p.mix], spec.batch_size * spec.group, spec.canvas)
        ]
        rows.sort(key=lambda r: len(r[0][0]))
        for i in rng.permutation(spec.group):
            batch = pack(rows[i * spec.batch_size : (i + 1) * spec.batch_size])
            batch["phase"] = current
            while phase.value == current:
                try:
                    out.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue


# ------------------------------------------------------------------------------ evaluation
class Validation:
    """Fixed questions and prompts (own seed, fixed t and noise) measured along the run."""

    def __init__(self, tokenizer, model: Cheers, canvas: int, n: int, device) -> None:
        rng = np.random.default_rng([987_654, 1])
        p = model.tokens_per_image
        shape = (model.config.latent_channels, model.grid_size, model.grid_size)
        questions = draw_samples(rng, {"understanding": 1.0}, n, canvas)
        # Answers fail where a question must first find its object among several.
        self.crowded = torch.tensor([len(s[1][0].objects) >= 3 for s in questions], device=device)
        prompts = draw_samples(rng, {"generation": 1.0}, n, canvas)
        # Each prompt with the next one's image: how much the flow loss depends on the prompt.
        swapped = [(prompts[(i + 1) % n][0], prompts[i][1]) for i in range(n)]
        self.sets = {}
        for name, samples in (("vqa", questions), ("gen", prompts), ("swap", swapped)):
            batch = to_device(pack([encode(x, tokenizer, p, False) for x in samples]), device)
            g = torch.Generator(device=device).manual_seed(5)
            t = draw_t(batch["noised"], 1.0, g)
            x0 = torch.randn((len(t), *shape), device=device, generator=g)
            self.sets[name] = (batch, t, x0)

    @torch.no_grad()
    def __call__(self, model: Cheers) -> dict[str, float]:
        model.eval()
        with torch.autocast("cuda", torch.bfloat16, enabled=model.device.type == "cuda"):
            q = packed_losses(model, *self.sets["vqa"], heads=False)
            gen = packed_losses(model, *self.sets["gen"])
            swap = packed_losses(model, *self.sets["swap"])
        model.train()
        right = rows_right(q)
        flow = float(gen["image"] / gen["image_n"])
        return {
            "vqa_accuracy": float(right.float().mean()),
            "vqa_accuracy_3plus": float(right[self.crowded].float().mean()),
            "val_text_loss": float(q["text"] / q["text_n"]),
            "val_flow_loss": flow,
            "prompt_effect": float(swap["image"] / swap["image_n"]) - flow,
        }


# ---------------------------------------------------------------------------------- model
def build_model(
    init: Path | None, vae_from: Path, seed: int, changes: dict[str, str] | None = None
) -> Cheers:
    """From ``init``, or from scratch with the VAE of ``vae_from`` and the decoder projector a
    copy of its decoder. ``changes`` switch fields of the config (``vit_input``,
    ``flow_prediction``): the new model starts from scratch and takes every tensor of the
    source model whose name and shape it shares (a transplant: with ``init``, the LLM, heads
    and ViT layers; from scratch, the VAE)."""
    source = load_model(init if init is not None else vae_from, dtype=torch.float32)
    if init is not None and not changes:
        return source
    config = replace(source.config, **(changes or {})).validate()
    torch.manual_seed(seed)
    model = Cheers(config).init_weights()
    own = model.state_dict()
    keep = "" if init is not None else "model.vae_model."
    taken = {
        k: v
        for k, v in source.state_dict().items()
        if k.startswith(keep) and k in own and own[k].shape == v.shape
    }
    model.load_state_dict(taken, strict=False)
    if init is None or config.vit_input != source.config.vit_input:
        start_projector_from_decoder(model)
    print(f"model: {len(taken)} of {len(own)} tensors from {init or vae_from}", flush=True)
    return model


def parse_changes(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs of ``--set`` for the config fields a run may switch."""
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in SWITCHES:
            raise SystemExit(
                f"--set {pair!r}: give KEY=VALUE with KEY one of {', '.join(SWITCHES)}"
            )
        changes[key] = value
    return changes


def save_snapshot(model: Cheers, tokenizer: CheersTokenizer, folder: Path) -> None:
    """The model in bfloat16 (as the package ships it), with its tokenizer."""
    state = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    save_state(state, model.config, folder)
    tokenizer.save(folder)
    for name in ("vocab.json", "merges.txt"):  # tokenizer.json holds the same
        (folder / name).unlink(missing_ok=True)


def write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=1, default=str).encode("utf-8")
    atomic_write(path, lambda f: f.write(text))


# ----------------------------------------------------------------------------------- main
def train(args: argparse.Namespace) -> Path:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    phases = tuple(
        replace(p, **{k: v for k, v in (("lr", args.lr), ("time_shift", args.time_shift)) if v})
        for p in DESIGNS[args.design]
    )
    tokenizer = CheersTokenizer.from_folder(args.tokenizer)
    changes = parse_changes(args.set)
    model = build_model(args.init, args.vae_from, args.seed, changes).to(device).train()
    canvas = model.config.vae_encoder_config.resolution
    out = Path(args.out)
    run = {"step": 0, "samples": 0, "elapsed": 0.0, "phase": 0, "curve": [], "optimizer": None}
    if args.resume:
        run = torch.load(out / "state.pt", map_location=device, weights_only=False)
        model.load_state_dict(run.pop("model"))
        print(f"resuming at {run['elapsed']:.0f} s, step {run['step']}", flush=True)
    # A resumed run draws new samples (its workers' streams start from the step reached).
    spec = DataSpec(
        str(args.tokenizer),
        model.tokens_per_image,
        canvas,
        args.batch_size,
        args.seed * 1_000_003 + run["step"],
        phases,
    )
    ctx = mp.get_context("spawn")
    batches, current = ctx.Queue(maxsize=2 * args.workers), ctx.Value("i", 0)
    workers = [
        ctx.Process(target=produce, args=(w, spec, batches, current), daemon=True)
        for w in range(args.workers)
    ]
    for w in workers:
        w.start()
    val = Validation(tokenizer, model, canvas, args.val_size, device)
    out.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    shape = (model.config.latent_channels, model.grid_size, model.grid_size)
    while batches.empty():  # the budget is training time: the workers' start-up is not in it
        time.sleep(0.05)
    started = time.perf_counter() - run["elapsed"]
    last_eval = -math.inf

    def record(phase: Phase, optimizer, losses: dict[str, float]) -> None:
        run["elapsed"] = time.perf_counter() - started
        point = {
            "step": run["step"],
            "samples": run["samples"],
            "seconds": round(run["elapsed"], 1),
            "phase": phase.name,
            **losses,
            **val(model),
        }
        run["curve"].append(point)
        print(json.dumps(point), flush=True)
        write_json(
            out / "curve.json",
            {
                "design": args.design,
                "args": vars(args),
                "device": str(device),
                "points": run["curve"],
            },
        )
        save_snapshot(model, tokenizer, out / "model")
        if args.checkpoint:  # float32 weights and the optimizer, for --resume
            state = {**run, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
            torch.save(state, out / "state.tmp")
            os.replace(out / "state.tmp", out / "state.pt")

    try:
        phase_start = 0.0
        for index, phase in enumerate(phases):
            phase_end = phase_start + phase.share * budget
            if index < run["phase"]:
                phase_start = phase_end
                continue
            current.value = index
            params = set_trainable(model, phase.trainable)
            heads = any(g in HEADS for g in phase.trainable)
            optimizer = torch.optim.AdamW(
                params,
                lr=phase.lr,
                betas=(0.9, 0.95),
                weight_decay=0.01,
                fused=device.type == "cuda",
            )
            if run["optimizer"] is not None and index == run["phase"]:
                optimizer.load_state_dict(run["optimizer"])
            # A resumed phase does not warm up again.
            phase_step = args.warmup_steps if run["optimizer"] is not None else 0
            run["phase"], run["optimizer"] = index, None
            sums = {"text": 0.0, "image": 0.0, "n": 0}
            print(
                f"phase {phase.name}: {sum(p.numel() for p in params):,} trainable, "
                f"until {phase_end:.0f} s",
                flush=True,
            )
            while (now := time.perf_counter() - started) < phase_end:
                batch = batches.get()
                if batch["phase"] != index:
                    continue
                b = to_device(batch, device)
                progress = (now - phase_start) / (phase_end - phase_start)
                warm = min(1.0, (phase_step + 1) / args.warmup_steps)
                lr = phase.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                t = draw_t(b["noised"], phase.time_shift)
                x0 = torch.randn((len(t), *shape), device=device)
                with autocast:
                    o = packed_losses(model, b, t, x0, heads)
                text = o["text"] / o["text_n"].clamp(min=1)
                image = o["image"] / o["image_n"] if "image" in o else torch.zeros(())
                (text + image).backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                phase_step += 1
                run["step"] += 1
                run["samples"] += len(b["ids"])
                if run["step"] % 20 == 0:  # reading losses synchronises: not every step
                    sums["text"] += float(text.detach())
                    sums["image"] += float(image.detach())
                    sums["n"] += 1
                if now - last_eval >= args.eval_every:
                    n = max(sums["n"], 1)
                    record(
                        phase,
                        optimizer,
                        {
                            "train_text_loss": sums["text"] / n,
                            "train_flow_loss": sums["image"] / n,
                            "lr": lr,
                        },
                    )
                    sums, last_eval = {"text": 0.0, "image": 0.0, "n": 0}, now
            phase_start = phase_end
        run["phase"] = len(phases) - 1
        record(
            phases[-1],
            optimizer,
            {
                "train_text_loss": sums["text"] / max(sums["n"], 1),
                "train_flow_loss": sums["image"] / max(sums["n"], 1),
            },
        )
    finally:
        current.value = -1
        for w in workers:
            w.terminate()
    print(
        f"done: {run['step']} steps, {run['samples']:,} samples in {run['elapsed']:.0f} s; "
        f"model in {out / 'model'}",
        flush=True,
    )
    return out / "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--design", choices=sorted(DESIGNS), default="curriculum")
    parser.add_argument("--out", type=Path, default=Path("build/default/gpu"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument(
        "--workers",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="data worker processes",
    )
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--eval-every", type=float, default=45.0, help="seconds")
    parser.add_argument("--val-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None, help="every phase's peak lr")
    parser.add_argument(
        "--time-shift",
        type=float,
        default=None,
        help="every phase's shift α of the generation targets' t",
    )
    parser.add_argument("--device", default=None, help="default: cuda when there is one")
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start every weight from this model folder instead of scratch",
    )
    parser.add_argument(
        "--vae-from",
        type=Path,
        default=PACKAGE_MODEL,
        help="model folder whose VAE is used (default: the embedded model)",
    )
    parser.add_argument("--tokenizer", type=Path, default=PACKAGE_MODEL)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"switch a config field ({', '.join(SWITCHES)}); with --init the model takes "
        "every tensor of that model that still fits",
    )
    parser.add_argument(
        "--checkpoint",
        action="store_true",
        help="also keep the float32 weights and optimizer state for --resume",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its state.pt (same arguments, "
        "a larger --minutes to extend it)",
    )
    args = parser.parse_args(argv)
    if args.resume and not (args.out / "state.pt").is_file():
        parser.error(f"--resume: {args.out / 'state.pt'} does not exist; run with --checkpoint")
    if args.minutes <= 0 or args.batch_size < 1 or args.workers < 1 or args.val_size < 2:
        parser.error("--minutes must be > 0, --batch-size and --workers ≥ 1, --val-size ≥ 2")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
