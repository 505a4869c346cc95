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
- ``curriculum`` — the paper's order: understanding first (ViT, projectors and LLM on
  questions, scene descriptions and small talk), then the generation heads alone with the LLM
  frozen, then everything jointly.

The VAE is the embedded model's (frozen, as in every joint stage); the decoder projector starts
as a copy of its decoder. Every ``--eval-every`` seconds a fixed validation set gives the
answer accuracy (greedy answers, exact), the flow loss and the prompt effect (the flow loss with
every prompt swapped for another one's, minus its own); the curve and a snapshot of the model
go to ``--out`` each time, so a run cut short still leaves its latest model.
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
import torch.nn.functional as F

from cheers.checkpoint import load_model, save_state
from cheers.data.examples import (
    DUMMY,
    GENERATION,
    IGNORE,
    apply_guidance_dropout,
    tokenize,
)
from cheers.data.records import Record
from cheers.model import Cheers
from cheers.sampling import time_shift
from cheers.sequence import IMAGE_PLACEHOLDER, omni_mask
from cheers.shapes.dataset import IMAGE_PROMPT, make_sample
from cheers.shapes.render import render_array, sample_scene
from cheers.shapes.talk import describe_scene, sample_describe_question, sample_small_talk
from cheers.tokenizer import CheersTokenizer
from cheers.training.recipe import MODULE_GROUPS, NEVER_TRAINED

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
}
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
    "curriculum": (
        Phase("understand", 0.25, SEEING, "understand"),
        Phase("generate", 0.15, HEADS, "generate"),
        Phase("joint", 0.60, SEEING + HEADS, "joint", lr=7e-4),
    ),
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
    sample: tuple[list, list],
    tokenizer: CheersTokenizer,
    tokens_per_image: int,
    dropped: bool,
) -> tuple[list[int], list[int], list[int], list, list[bool]]:
    """One sample as (ids, target, block, scenes, noised), every image slot expanded to its P
    positions: ``block`` is −1 for text and k for the k-th image (the omni mask's input),
    ``target[i]`` the label of position i + 1, ``noised`` marks generation targets."""
    messages, scenes = sample
    record = Record("s", tuple(Path(f"{j}") for j in range(len(scenes))), tuple(messages), "s")
    example = tokenize(record, tokenizer, tokens_per_image, max_length=10_000)
    if example.roles == (DUMMY,):  # the embedded model has no dummy image (its config)
        example = type(example)(example.input_ids[1:], example.labels[1:], (), (), "s")
    if example.is_generation and dropped:
        example = apply_guidance_dropout(example, tokenizer)
    ids, labels, block, slot = [], [], [], 0
    for tok, lab in zip(example.input_ids, example.labels, strict=True):
        if tok == IMAGE_PLACEHOLDER:
            ids += [0] * tokens_per_image
            labels += [IGNORE] * tokens_per_image
            block += [slot] * tokens_per_image
            slot += 1
        else:
            ids.append(tok)
            labels.append(lab)
            block.append(-1)
    noised = [role == GENERATION for role in example.roles]
    return ids, [*labels[1:], IGNORE], block, scenes, noised


def collate(rows: list) -> dict[str, np.ndarray]:
    """Encoded samples as left-padded arrays, and every image rendered, in order."""
    length, b = max(len(r[0]) for r in rows), len(rows)
    out = {
        "ids": np.zeros((b, length), np.int64),
        "target": np.full((b, length), IGNORE, np.int64),
        "block": np.full((b, length), -1, np.int64),
        "valid": np.zeros((b, length), bool),
    }
    for i, (ids, target, block, _, _) in enumerate(rows):
        n = len(ids)
        out["ids"][i, length - n :] = ids
        out["target"][i, length - n :] = target
        out["block"][i, length - n :] = block
        out["valid"][i, length - n :] = True
    images = [render_array(scene) for r in rows for scene in r[3]]
    out["images"] = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
    out["noised"] = np.array([x for r in rows for x in r[4]], bool)
    return out


def pack(samples, tokenizer, tokens_per_image, rng, guidance_dropout) -> dict[str, np.ndarray]:
    """A batch of samples, in their order."""
    rows = [
        encode(s, tokenizer, tokens_per_image, rng.random() < guidance_dropout) for s in samples
    ]
    return collate(rows)


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
        rows.sort(key=lambda r: len(r[0]))
        for i in rng.permutation(spec.group):
            batch = collate(rows[i * spec.batch_size : (i + 1) * spec.batch_size])
            batch["phase"] = current
            while phase.value == current:
                try:
                    out.put(batch, timeout=0.5)
                    break
                except queue.Full:
                    continue


# ------------------------------------------------------------------------------- GPU step
def to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    out = {k: torch.from_numpy(v).to(device, non_blocking=True) for k, v in batch.items()
           if isinstance(v, np.ndarray)}
    out["pixels"] = out.pop("images").permute(0, 3, 1, 2).float() / 255
    return out


def forward(
    model: Cheers, b: dict[str, torch.Tensor], t: torch.Tensor, x0: torch.Tensor, heads: bool
) -> dict[str, torch.Tensor]:
    """Summed losses of a packed batch; ``t`` and ``x0`` per image (t = 1: understanding)."""
    d = model.config.text_config.hidden_size
    with torch.no_grad():
        x1 = model.encode_latent(b["pixels"]).float()
    tt = t[:, None, None, None]
    image = model.image_tokens(tt * x1 + (1 - tt) * x0)
    embeds = model.embed(b["ids"]).reshape(-1, d)
    where = (b["block"].reshape(-1) >= 0).nonzero()[:, 0]
    embeds = embeds.index_copy(0, where, image.tokens.reshape(-1, d).to(embeds.dtype))
    embeds = embeds.reshape(*b["ids"].shape, d)
    positions = (b["valid"].long().cumsum(1) - 1).clamp(min=0)
    hidden = model.transformer(embeds, positions, omni_mask(b["block"], b["valid"]))
    chosen = b["target"] != IGNORE
    logits = model.logits(hidden[chosen]).float()
    target = b["target"][chosen]
    out = {
        "text": F.cross_entropy(logits, target, reduction="sum"),
        "text_n": chosen.sum(),
        "right": (logits.argmax(-1) == target),
        "chosen": chosen,
    }
    if heads and len(t):
        image_hidden = hidden.reshape(-1, d)[where].reshape(len(t), -1, d)
        v = model.velocity(image_hidden, image.patch_embeds, t).velocity.float()
        goal = torch.where(tt == 1, torch.zeros_like(x1), x1 - x0)
        out["image"] = (v - goal).pow(2).sum()
        out["image_n"] = torch.tensor(v.numel(), device=v.device)
        out["image_each"] = (v - goal).pow(2).flatten(1).mean(1)
    return out


def draw_t(noised: torch.Tensor, alpha: float, g: torch.Generator | None = None) -> torch.Tensor:
    u = torch.rand(noised.shape, device=noised.device, generator=g).clamp(1e-6, 1 - 1e-6)
    return torch.where(noised, time_shift(u, alpha), torch.ones_like(u))


# ------------------------------------------------------------------------------ evaluation
class Validation:
    """Fixed questions and prompts (own seed, fixed t and noise) measured along the run."""

    def __init__(self, tokenizer, model: Cheers, canvas: int, n: int, device) -> None:
        rng = np.random.default_rng([987_654, 1])
        p = model.tokens_per_image
        shape = (model.config.latent_channels, model.grid_size, model.grid_size)
        questions = draw_samples(rng, {"understanding": 1.0}, n, canvas)
        prompts = draw_samples(rng, {"generation": 1.0}, n, canvas)
        # Each prompt with the next one's image: how much the flow loss depends on the prompt.
        swapped = [(prompts[(i + 1) % n][0], prompts[i][1]) for i in range(n)]
        self.sets = {}
        for name, samples in (("vqa", questions), ("gen", prompts), ("swap", swapped)):
            batch = to_device(pack(samples, tokenizer, p, rng, 0.0), device)
            g = torch.Generator(device=device).manual_seed(5)
            t = draw_t(batch["noised"], 1.0, g)
            x0 = torch.randn((len(t), *shape), device=device, generator=g)
            self.sets[name] = (batch, t, x0)

    @torch.no_grad()
    def __call__(self, model: Cheers) -> dict[str, float]:
        model.eval()
        with torch.autocast("cuda", torch.bfloat16, enabled=model.device.type == "cuda"):
            q = forward(model, *self.sets["vqa"], heads=False)
            gen = forward(model, *self.sets["gen"], heads=True)
            swap = forward(model, *self.sets["swap"], heads=True)
        model.train()
        wrong = torch.zeros_like(q["chosen"])
        wrong[q["chosen"]] = ~q["right"]
        flow = float(gen["image"] / gen["image_n"])
        return {
            "vqa_accuracy": float((~wrong.any(1)).float().mean()),
            "val_text_loss": float(q["text"] / q["text_n"]),
            "val_flow_loss": flow,
            "prompt_effect": float(swap["image"] / swap["image_n"]) - flow,
        }


# ---------------------------------------------------------------------------------- model
def build_model(init: Path | None, vae_from: Path, seed: int) -> Cheers:
    """From ``init``, or from scratch with the VAE of ``vae_from`` and the decoder projector a
    copy of its decoder."""
    if init is not None:
        return load_model(init, dtype=torch.float32)
    base = load_model(vae_from, dtype=torch.float32)
    torch.manual_seed(seed)
    model = Cheers(base.config).init_weights()
    vae = {k: v for k, v in base.state_dict().items() if k.startswith("model.vae_model.")}
    model.load_state_dict(vae, strict=False)
    projector, source = model.model.vae_decoder_projector, model.model.vae_model
    projector.decoder.load_state_dict(source.decoder.state_dict())
    projector.bn.load_state_dict(source.bn.state_dict())
    return model


def set_trainable(model: Cheers, groups: tuple[str, ...]) -> list[torch.nn.Parameter]:
    prefixes = tuple(p for g in groups for p in MODULE_GROUPS[g])
    params = []
    for name, param in model.named_parameters():
        train = name.startswith(prefixes) and not name.startswith(NEVER_TRAINED)
        param.requires_grad_(train)
        if train:
            params.append(param)
    return params


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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------- main
def train(args: argparse.Namespace) -> Path:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    phases = tuple(
        replace(p, **{k: v for k, v in (("lr", args.lr), ("time_shift", args.time_shift)) if v})
        for p in DESIGNS[args.design]
    )
    tokenizer = CheersTokenizer.from_folder(args.tokenizer)
    model = build_model(args.init, args.vae_from, args.seed).to(device).train()
    canvas = model.config.vae_encoder_config.resolution
    spec = DataSpec(
        str(args.tokenizer), model.tokens_per_image, canvas, args.batch_size, args.seed, phases
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve: list[dict] = []
    budget = args.minutes * 60
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda")
    shape = (model.config.latent_channels, model.grid_size, model.grid_size)
    started = time.perf_counter()
    samples = step = 0
    last_eval = -math.inf

    def record(phase: Phase, losses: dict[str, float]) -> None:
        elapsed = time.perf_counter() - started
        point = {"step": step, "samples": samples, "seconds": round(elapsed, 1),
                 "phase": phase.name, **losses, **val(model)}
        curve.append(point)
        print(json.dumps(point), flush=True)
        write_json(out / "curve.json", {"design": args.design, "args": vars(args) | {
            "init": str(args.init), "vae_from": str(args.vae_from),
            "tokenizer": str(args.tokenizer)}, "device": str(device), "points": curve})
        save_snapshot(model, tokenizer, out / "model")

    try:
        phase_start = 0.0
        for index, phase in enumerate(phases):
            current.value = index
            params = set_trainable(model, phase.trainable)
            heads = any(g in HEADS for g in phase.trainable)
            optimizer = torch.optim.AdamW(params, lr=phase.lr, betas=(0.9, 0.95),
                                          weight_decay=0.01, fused=device.type == "cuda")
            phase_end = phase_start + phase.share * budget
            phase_step, sums = 0, {"text": 0.0, "image": 0.0, "n": 0}
            print(f"phase {phase.name}: {sum(p.numel() for p in params):,} trainable, "
                  f"until {phase_end:.0f} s", flush=True)
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
                    o = forward(model, b, t, x0, heads)
                text = o["text"] / o["text_n"].clamp(min=1)
                loss = text + (o["image"] / o["image_n"] if "image" in o else 0.0)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step, phase_step, samples = step + 1, phase_step + 1, samples + len(b["ids"])
                if step % 20 == 0:  # reading losses synchronises: not every step
                    sums["text"] += float(text.detach())
                    sums["image"] += float(o["image"].detach() / o["image_n"]) if "image" in o else 0.0
                    sums["n"] += 1
                if now - last_eval >= args.eval_every:
                    n = max(sums["n"], 1)
                    record(phase, {"train_text_loss": sums["text"] / n,
                                   "train_flow_loss": sums["image"] / n, "lr": lr})
                    sums, last_eval = {"text": 0.0, "image": 0.0, "n": 0}, now
            phase_start = phase_end
        record(phases[-1], {"train_text_loss": sums["text"] / max(sums["n"], 1),
                            "train_flow_loss": sums["image"] / max(sums["n"], 1)})
    finally:
        current.value = -1
        for w in workers:
            w.terminate()
    print(f"done: {step} steps, {samples:,} samples in {time.perf_counter() - started:.0f} s; "
          f"model in {out / 'model'}", flush=True)
    return out / "model"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--design", choices=sorted(DESIGNS), default="curriculum")
    parser.add_argument("--out", type=Path, default=Path("build/default/gpu"))
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="data worker processes")
    parser.add_argument("--warmup-steps", type=int, default=50)
    parser.add_argument("--eval-every", type=float, default=45.0, help="seconds")
    parser.add_argument("--val-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=None, help="every phase's peak lr")
    parser.add_argument("--time-shift", type=float, default=None,
                        help="every phase's shift α of the generation targets' t")
    parser.add_argument("--device", default=None, help="default: cuda when there is one")
    parser.add_argument("--init", type=Path, default=None,
                        help="start every weight from this model folder instead of scratch")
    parser.add_argument("--vae-from", type=Path, default=PACKAGE_MODEL,
                        help="model folder whose VAE is used (default: the embedded model)")
    parser.add_argument("--tokenizer", type=Path, default=PACKAGE_MODEL)
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.batch_size < 1 or args.workers < 1 or args.val_size < 2:
        parser.error("--minutes must be > 0, --batch-size and --workers ≥ 1, --val-size ≥ 2")
    train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
