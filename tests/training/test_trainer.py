"""The training loop end to end: exact resume after SIGKILL, DDP/FSDP2 equivalence, learning."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conversations import GENERATED, QUESTION, write_jsonl

from cheers.config import CheersConfig
from cheers.shapes.render import Scene, ShapeObject, render
from parity_fixtures import OFFICIAL

CANVAS = 32


def _scene(shape: str, color: str) -> Scene:
    return Scene((ShapeObject(shape, color, 16.0, 16.0, 10.0),), canvas=CANVAS)


def write_data(folder: Path) -> Path:
    """A handful of samples: two questions, two captions, one edit, one text-only chat."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (shape, color) in {
        "red_circle": ("circle", "red"),
        "blue_square": ("square", "blue"),
    }.items():
        render(_scene(shape, color)).save(folder / f"{name}.png")
    q, gen = QUESTION, GENERATED
    rows = [
        ("red_circle.png", q + "What color is the circle?", "red"),
        ("blue_square.png", q + "What shape is the blue object?", "square"),
        ("red_circle.png", "a red circle", gen),
        ("blue_square.png", "a blue square", gen),
        ("red_circle.png, blue_square.png", q + "make it a blue square", gen),
        (None, "Say hi.", "hi"),
    ]
    write_jsonl(folder / "train.jsonl", rows)
    cfg = CheersConfig.tiny(image_size=CANVAS)
    cfg.save(folder)
    return folder


def write_config(
    folder: Path,
    out: str,
    vae_steps: int,
    joint_steps: int,
    lr: float = 1e-3,
    accum: int = 2,
    **run,
) -> Path:
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in run.items())
    text = f"""
[model]
config = "config.json"
tokenizer = "{OFFICIAL}"

[data]
files = [{{ path = "train.jsonl" }}]
max_length = 256
group_window = 1

[[stages]]
name = "vae"
kind = "vae"
trainable = "vae"
steps = {vae_steps}
lr = 2e-3
warmup = 0.0
batch_size = 4

[[stages]]
name = "joint"
trainable = "all"
steps = {joint_steps}
lr = {lr}
warmup = 0.1
batch_size = 4
grad_accum = {accum}
guidance_dropout = 0.2

[run]
output_dir = "{out}"
progress = false
{extra}"""
    path = folder / f"{out}.toml"
    path.write_text(text)
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONUNBUFFERED="1")
    return env


def _train(config: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cheers", "train", str(config), *extra]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


def _losses(run_dir: Path) -> list[tuple[int, float, float]]:
    with (run_dir / "metrics.csv").open() as handle:
        return [
            (int(r["step"]), float(r["text_loss"]), float(r["image_loss"]))
            for r in csv.DictReader(handle)
        ]


def _assert_same_losses(a, b, rtol=1e-4):
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    for (step, ta, ia), (_, tb, ib) in zip(a, b, strict=True):
        assert ta == pytest.approx(tb, rel=rtol), f"text loss at step {step}"
        assert ia == pytest.approx(ib, rel=rtol, abs=1e-7), f"image loss at step {step}"


def test_sigkill_then_resume_gives_the_same_losses(tmp_path):
    data = write_data(tmp_path / "data")
    straight = write_config(data, "straight", vae_steps=2, joint_steps=8, save_every=1)
    result = _train(straight)
    assert result.returncode == 0, result.stderr[-2000:]

    killed = write_config(data, "killed", vae_steps=2, joint_steps=8, save_every=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cheers", "train", str(killed)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = data / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and int(latest.read_text().split("-")[1]) >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(latest.read_text().split("-")[1])
    assert 4 <= killed_at < 10

    # A restart without --resume refuses to overwrite the run.
    again = _train(killed)
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = _train(killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    _assert_same_losses(_losses(data / "killed"), _losses(data / "straight"))
    # The final model folder is in the released format and loads.
    from cheers.checkpoint import load_model

    final = Path(resumed.stdout.strip().splitlines()[-1])
    assert load_model(final).config.image_size == CANVAS


def _append_stage(config: Path, name: str, steps: int) -> None:
    text = config.read_text()
    stage = f"""[[stages]]
name = "{name}"
trainable = ["language_model", "gen_projector"]
steps = {steps}
lr = 5e-4
warmup = 0.0
batch_size = 4
guidance_dropout = 0.2

[run]"""
    config.write_text(text.replace("[run]", stage))


def test_a_stage_appended_to_a_finished_run_continues_it(tmp_path):
    """How the default recipe grows across sessions: finish a run, append a stage, --resume.
    The result must equal a run that had the stage from the start."""
    data = write_data(tmp_path / "data")
    planned = write_config(data, "planned", vae_steps=2, joint_steps=3, save_every=100)
    _append_stage(planned, "more", 3)
    assert _train(planned).returncode == 0

    grown = write_config(data, "grown", vae_steps=2, joint_steps=3, save_every=100)
    assert _train(grown).returncode == 0
    assert [s for s, _, _ in _losses(data / "grown")] == list(range(1, 6))
    _append_stage(grown, "more", 3)
    resumed = _train(grown, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "stage 3/3 'more'" in resumed.stdout
    _assert_same_losses(_losses(data / "grown"), _losses(data / "planned"))

    # Replacing a stage that already ran is refused, naming what changed.
    grown.write_text(grown.read_text().replace('name = "joint"', 'name = "other"'))
    refused = _train(grown, "--resume")
    assert refused.returncode == 2
    assert "'other'" in refused.stderr and "'joint'" in refused.stderr


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, strategy):
    data = write_data(tmp_path / "data")
    single = write_config(data, "single", vae_steps=2, joint_steps=3, save_every=100)
    multi = write_config(
        data, "multi", vae_steps=2, joint_steps=3, save_every=100, strategy=strategy
    )
    assert _train(single).returncode == 0
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        str(29500 + os.getpid() % 1000 + (7 if strategy == "fsdp" else 0)),
        "-m",
        "cheers",
        "train",
        str(multi),
    ]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_losses(_losses(data / "multi"), _losses(data / "single"))
    # Checkpoints (at each stage's end here) are written once, gathered, in the released format.
    saved = sorted(p.name for p in (data / "multi" / "checkpoints").iterdir())
    assert saved == ["latest", "step-0000002", "step-0000005"]
    from cheers.checkpoint import load_model

    multi_model = load_model(data / "multi" / "checkpoints" / "step-0000005" / "model")
    single_model = load_model(data / "single" / "checkpoints" / "step-0000005" / "model")
    # (Weights are not compared bitwise: Adam turns rounding-level gradient differences of
    # near-zero gradients into lr-sized steps; the losses above are the meaningful check.)
    assert multi_model.state_dict().keys() == single_model.state_dict().keys()


def test_the_model_learns_a_handful_of_samples(tmp_path):
    """Overfit six samples on CPU in about a minute, then use the model.

    Measured against the checkpoint at the end of the VAE stage (same frozen autoencoder, joint
    modules untrained): losses on one fixed batch (same t and noise), the answer to a trained
    question, and how close a generated image is to its training target.
    """
    from cheers.checkpoint import load_model
    from cheers.data.loader import DataSource, TrainingData
    from cheers.pipeline import CheersPipeline
    from cheers.tokenizer import CheersTokenizer
    from cheers.training.objective import Objective, make_batch

    data = write_data(tmp_path / "data")
    config = write_config(data, "learn", vae_steps=60, joint_steps=120, lr=3e-3, accum=1)
    started = time.time()
    result = _train(config)
    elapsed = time.time() - started
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoints = data / "learn" / "checkpoints"
    before = load_model(checkpoints / "step-0000060" / "model")
    after = load_model(checkpoints / "step-0000180" / "model")

    tok = CheersTokenizer.from_folder(OFFICIAL)
    train = TrainingData([DataSource(str(data / "train.jsonl"))], tok, before.tokens_per_image, 256)
    items = list(enumerate(train.examples))
    batch = make_batch(items, tok, before.config, seed=123, guidance_dropout=0.0)
    with torch.no_grad():
        loss_before, loss_after = Objective(before)(batch), Objective(after)(batch)
    text = (loss_before.text / loss_before.text_count, loss_after.text / loss_after.text_count)
    image = (loss_before.image / loss_before.image_count, loss_after.image / loss_after.image_count)
    print(
        f"trained in {elapsed:.0f}s; fixed-batch text loss {text[0]:.3f} → {text[1]:.4f}, "
        f"image loss {image[0]:.3f} → {image[1]:.3f}"
    )
    assert text[1] < text[0] / 50
    assert image[1] < image[0] / 1.5

    red_circle = render(_scene("circle", "red"))
    trained = CheersPipeline(after, tok)
    assert trained.understand(red_circle, "What color is the circle?", max_new_tokens=3) == "red"

    # Generation: distance of the generated latent to the target's latent. The autoencoder is
    # the same frozen one in both checkpoints, so this is what the joint stage learned.
    from cheers.image import preprocess_generation

    pixels = preprocess_generation(red_circle, CANVAS)[None]

    def distance(pipe: CheersPipeline) -> tuple[float, float]:
        out = pipe(
            "a red circle",
            num_inference_steps=20,
            guidance_scale=None,
            generator=0,
            output_type="pt",
        )
        with torch.no_grad():
            target = pipe.model.encode_latent(pixels)
        latent = float((out.latents - target).pow(2).mean())
        return latent, float((out.images - pixels).pow(2).mean())

    (lat0, pix0), (lat1, pix1) = distance(CheersPipeline(before, tok)), distance(trained)
    print(
        f"'a red circle' vs its target: latent MSE {lat0:.3f} → {lat1:.3f}, "
        f"pixel MSE {pix0:.4f} → {pix1:.4f}"
    )
    assert lat1 < lat0 / 1.25
