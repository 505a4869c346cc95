"""The generation engine against an older cheers (default: commit 2ddedd1), side by side.

    git worktree add /work/wt-2ddedd1 2ddedd1
    OMP_WAIT_POLICY=PASSIVE python benchmarks/engine.py --baseline /work/wt-2ddedd1 [--rounds 3]

Uses the issue's *measurement config* (random weights, float32, CPU, 2 threads): image 128 px;
LLM hidden 256 / MLP 1024 / 4 layers / 4 heads / 2 KV heads / vocab 151936; ViT 192 / 768 /
4 layers / 6 heads / patch 16; VAE encoder ch 32 × [1,2,2,2], decoder ch 128 × [1,2,2,2], one
res-block each, z 32. The model is saved once to a temporary folder; every measurement is a
fresh process (``--worker``) that loads it with the code under test (``PYTHONPATH`` = that
tree's ``src``), so peak RSS (VmHWM) covers load + generation of one task. Old and new take
turns, round after round, and the medians are printed with the ratio new/old.

Text-to-image: guidance 9.5, 10 steps, shift 0.5, seed 0; the final latents are compared
(max |new − old| / max |old|). Image-to-text: 32 greedy tokens; the token ids must be equal;
first-token latency is the time of the same request with ``max_new_tokens=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A photo of a red bicycle leaning against a yellow wall."
QUESTION = "Describe this image."


def measurement_config():
    """The issue's measurement config (imported lazily: the worker's tree provides cheers)."""
    from cheers.config import CheersConfig, TextConfig, VAEConfig, VisionConfig

    def vae(ch: int) -> VAEConfig:
        return VAEConfig(
            resolution=128, ch=ch, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=32
        )

    cfg = CheersConfig.official()
    cfg.vae_encoder_config = vae(32)
    cfg.vae_decoder_config = vae(128)
    cfg.vision_representation_config = VisionConfig(
        hidden_size=192,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=6,
        image_size=128,
        patch_size=16,
    )
    cfg.text_config = TextConfig(
        vocab_size=151936,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return cfg.validate()


def build_model_folder(folder: Path) -> Path:
    import shutil

    import torch

    from cheers.checkpoint import save_model
    from cheers.model import Cheers

    torch.manual_seed(0)
    model = Cheers(measurement_config()).init_weights()
    save_model(model, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "src" / "cheers" / "default_model" / name, folder / name)
    return folder


def test_image():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across
    fork + exec, so a worker would report the parent's peak (the model build) as its own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(task: str, folder: str, out: str) -> None:
    import torch

    from cheers.pipeline import CheersPipeline

    torch.set_num_threads(2)
    pipe = CheersPipeline.from_pretrained(folder, dtype="float32")
    result: dict = {}
    if task == "t2i":
        start = time.perf_counter()
        images = pipe(
            PROMPT,
            num_inference_steps=10,
            guidance_scale=9.5,
            time_shift=0.5,
            generator=0,
            output_type="pt",
        )
        result["seconds"] = time.perf_counter() - start
        torch.save(images.latents, out + ".pt")
    else:
        seen: list[list[int]] = []
        decode = pipe.tokenizer.decode

        def spy(ids, *args, **kwargs):
            seen.append(list(ids))
            return decode(ids, *args, **kwargs)

        pipe.tokenizer.decode = spy
        image = test_image()
        pipe.understand(image, QUESTION, max_new_tokens=2)  # warm-up
        start = time.perf_counter()
        pipe.understand(image, QUESTION, max_new_tokens=1)
        result["first_token"] = time.perf_counter() - start
        seen.clear()
        start = time.perf_counter()
        pipe.understand(image, QUESTION, max_new_tokens=32)
        result["seconds"] = time.perf_counter() - start
        result["ids"] = seen[-1]
    result["peak_rss_mb"] = peak_rss_mb()
    Path(out + ".json").write_text(json.dumps(result))


def run_worker(tree: Path, task: str, folder: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "2"}
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        task,
        "--model",
        str(folder),
        "--out",
        str(out),
    ]
    subprocess.run(cmd, env=env, check=True, cwd=str(tree))
    return json.loads(Path(str(out) + ".json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=Path("/work/wt-2ddedd1"),
        help="a checkout of the code to compare with (its src/ is used)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", default="t2i,i2t")
    parser.add_argument("--worker", choices=["t2i", "i2t"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.model, args.out)
        return 0

    import torch

    trees = {"old": args.baseline.resolve(), "new": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model_folder(Path(tmp) / "model")
        results: dict = {(task, name): [] for task in args.tasks.split(",") for name in trees}
        for r in range(args.rounds):
            for task in args.tasks.split(","):
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for name in order:
                    out = Path(tmp) / f"{task}-{name}-{r}"
                    res = run_worker(trees[name], task, folder, out)
                    if task == "t2i":
                        res["latent"] = torch.load(str(out) + ".pt")
                    results[(task, name)].append(res)
                    print(f"round {r} {task} {name}: {res['seconds']:.2f} s", flush=True)

        def med(task: str, name: str, key: str) -> float:
            return statistics.median(x[key] for x in results[(task, name)])

        print(f"\n{'figure':38} {'old':>10} {'new':>10} {'new/old':>8}")
        rows = []
        if ("t2i", "new") in results:
            rows += [
                ("text-to-image s (10 steps, cfg 9.5)", "t2i", "seconds"),
                ("text-to-image peak RSS MB", "t2i", "peak_rss_mb"),
            ]
        if ("i2t", "new") in results:
            rows += [
                ("image-to-text s (32 tokens)", "i2t", "seconds"),
                ("image-to-text first token s", "i2t", "first_token"),
                ("image-to-text peak RSS MB", "i2t", "peak_rss_mb"),
            ]
        for label, task, key in rows:
            old, new = med(task, "old", key), med(task, "new", key)
            print(f"{label:38} {old:10.3f} {new:10.3f} {new / old:8.3f}")
        if ("t2i", "new") in results:
            old = results[("t2i", "old")][0]["latent"].float()
            worst = max(
                float((x["latent"].float() - old).abs().max() / old.abs().max())
                for x in results[("t2i", "new")]
            )
            print(f"final latent: max |new − old| / max |old| = {worst:.2e}")
        if ("i2t", "new") in results:
            same = all(
                x["ids"] == results[("i2t", "old")][0]["ids"]
                for name in trees
                for x in results[("i2t", name)]
            )
            print(f"image-to-text token ids identical: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
