"""LoRA through the real trainer: a [model.lora] recipe teaches the embedded model a colour word
it did not know; checkpoints hold only the adapter; resume is exact; DDP equals one process."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conversations import QUESTION, write_jsonl
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from cheers.checkpoint import load_model
from cheers.errors import CheckpointError, ConfigError
from cheers.pipeline import CheersPipeline
from cheers.shapes.render import PALETTE
from cheers.training.recipe import TrainConfig
from cheers.training.trainer import Trainer
from cheers.transforms.targets import linear_targets

MODEL = str(Path(__file__).parents[2] / "src" / "cheers" / "default_model")
GREY = (40, 40, 40)  # not in the Shapes palette: the embedded model has no word for it


def _picture(shape: str, rgb: tuple[int, int, int], box=(16, 16, 48, 48)) -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=rgb)
    elif shape == "square":
        draw.rectangle(box, fill=rgb)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=rgb)
    return image


def write_data(folder: Path, boxes: int = 3, known: bool = True) -> Path:
    """Grey circles and squares answered "grey", and one picture of every known colour."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, box in enumerate([(16, 16, 48, 48), (6, 8, 30, 32), (30, 28, 58, 56)][:boxes]):
        for shape in ("circle", "square"):
            _picture(shape, GREY, box).save(folder / f"grey_{shape}{k}.png")
            rows.append((f"grey_{shape}{k}.png", QUESTION + f"What color is the {shape}?", "grey"))
    for j, (name, rgb) in enumerate(PALETTE.items() if known else []):
        shape = ("circle", "square")[j % 2]
        _picture(shape, rgb).save(folder / f"{name}.png")
        rows.append((f"{name}.png", QUESTION + f"What color is the {shape}?", name))
    write_jsonl(folder / "train.jsonl", rows)
    return folder


def write_recipe(folder: Path, out: str, stages: list[tuple[int, int]], lora: str, **run) -> Path:
    """A recipe with one [[stages]] table per (steps, batch_size)."""
    tables = "".join(
        f"""
[[stages]]
name = "s{i}"
steps = {steps}
batch_size = {batch}
lr = 3e-3
warmup = 0.0
schedule = "constant"
"""
        for i, (steps, batch) in enumerate(stages)
    )
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in run.items())
    path = folder / f"{out}.toml"
    path.write_text(
        f"""
[model]
from_pretrained = "{MODEL}"

[model.lora]
{lora}

[data]
files = ["train.jsonl"]
max_length = 256
group_window = 1
{tables}
[run]
output_dir = "{out}"
progress = false
{extra}"""
    )
    return path


def _losses(run: Path) -> list[tuple[int, float, float]]:
    with (run / "metrics.csv").open() as handle:
        return [
            (int(r["step"]), float(r["text_loss"]), float(r["image_loss"]))
            for r in csv.DictReader(handle)
        ]


@pytest.mark.slow  # 40 s of training alone when the 2 cores are free; 10 min when shared
def test_a_lora_recipe_teaches_a_colour_word_the_model_lacked(tmp_path):
    """40 steps of rank-8 adapters on the LLM and the ViT: the model names grey shapes at a
    size and place it was not trained on, and keeps (most of) the colours it knew."""
    data = write_data(tmp_path)
    recipe = write_recipe(
        data,
        "run",
        [(40, 12)],
        'rank = 8\nalpha = 16\ntargets = ["llm_attention", "llm_mlp", "vit"]',
        save_every=1000,
    )
    adapter = Trainer(TrainConfig.from_toml(recipe)).run()
    assert adapter == data / "run" / "checkpoints" / "step-0000040" / "adapter"
    assert sorted(p.name for p in adapter.parent.iterdir()) == [
        "adapter",
        "optimizer.safetensors",
        "trainer_state.json",
    ]  # the adapter only: no copy of the frozen base model

    pipe = CheersPipeline.from_pretrained(MODEL)
    box = (12, 12, 44, 44)  # not one of the trained boxes

    def answers() -> tuple[list[str], int]:
        def ask(shape: str, rgb) -> str:
            question = f"What color is the {shape}?"
            return pipe.understand(_picture(shape, rgb, box), question, max_new_tokens=4)

        new = [ask(shape, GREY) for shape in ("circle", "square")]
        known = sum(
            ask(shape, rgb) == name
            for shape in ("circle", "square", "triangle")
            for name, rgb in PALETTE.items()
        )
        return new, known

    new_before, known_before = answers()
    pipe.load_lora(adapter)
    new_after, known_after = answers()
    print(f"grey: {new_before} → {new_after}; known colours right {known_before} → {known_after}")
    assert "grey" not in new_before
    assert new_after == ["grey", "grey"]
    assert known_after >= known_before - 3

    # Trainable parameters and optimizer memory: logged and in summary.json, equal to r·(in+out)
    # per adapted layer and to the AdamW moments the checkpoint holds.
    summary = json.loads((data / "run" / "summary.json").read_text())["stages"]["s0"]
    layers = linear_targets(load_model(MODEL), ("llm_attention", "llm_mlp", "vit"))
    assert summary["trainable_parameters"] == sum(
        8 * (m.in_features + m.out_features) for _, m in layers
    )
    assert summary["total_parameters"] > 20 * summary["trainable_parameters"]
    moments = load_file(str(adapter.parent / "optimizer.safetensors"))
    held = sum(
        t.numel() * t.element_size()
        for k, t in moments.items()
        if k.endswith("exp_avg") or k.endswith("exp_avg_sq")
    )
    assert summary["optimizer_state_bytes"] == held


def test_lora_resume_is_exact(tmp_path):
    """A run resumed from a mid-run checkpoint (across a stage boundary, with LoRA dropout
    drawing from the restored RNG) ends with the same losses and the same adapter bits."""
    data = write_data(tmp_path, boxes=1, known=False)
    lora = 'rank = 2\nalpha = 4\ndropout = 0.1\ntargets = ["llm_attention", "detail_head"]'
    recipe = write_recipe(data, "straight", [(3, 2), (3, 2)], lora, save_every=1, keep_last=10)
    Trainer(TrainConfig.from_toml(recipe)).run()
    straight = data / "straight"
    # The same run as if killed after step 2: its folder as it was then.
    resumed = data / "resumed"
    shutil.copytree(straight, resumed)
    for step in (3, 4, 5, 6):
        shutil.rmtree(resumed / "checkpoints" / f"step-{step:07d}")
    (resumed / "checkpoints" / "latest").write_text("step-0000002")
    again = write_recipe(data, "resumed", [(3, 2), (3, 2)], lora, save_every=1, keep_last=10)
    final = Trainer(TrainConfig.from_toml(again), resume=True).run()
    assert _losses(resumed) == _losses(straight)
    a = load_file(str(final / "adapter_model.safetensors"))
    b = load_file(
        str(straight / "checkpoints" / "step-0000006" / "adapter" / "adapter_model.safetensors")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # Changing the adapters of a run that has started is refused.
    changed = write_recipe(data, "resumed", [(3, 2), (3, 2), (1, 2)], lora.replace("2", "4", 1))
    with pytest.raises(CheckpointError, match="rank=2"):
        Trainer(TrainConfig.from_toml(changed), resume=True).run()


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_lora_on_two_processes_matches_one(tmp_path, strategy):
    data = write_data(tmp_path, boxes=1, known=False)
    lora = 'rank = 4\ntargets = ["llm_attention", "llm_mlp", "semantic_head"]'
    single = write_recipe(data, "single", [(3, 4)], lora, save_every=100)
    multi = write_recipe(data, "multi", [(3, 4)], lora, save_every=100, strategy=strategy)
    Trainer(TrainConfig.from_toml(single)).run()
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    port = str(29500 + os.getpid() % 1000 + (13 if strategy == "ddp" else 17))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", port, "-m", "cheers", "train", str(multi)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = _losses(data / "single"), _losses(data / "multi")
    assert [s for s, _, _ in one] == [s for s, _, _ in two] == [1, 2, 3]
    for (_, t1, i1), (_, t2, i2) in zip(one, two, strict=True):
        assert t2 == pytest.approx(t1, rel=1e-4) and i2 == pytest.approx(i1, rel=1e-4, abs=1e-7)
    saved = data / "multi" / "checkpoints" / "step-0000003"
    assert sorted(p.name for p in saved.iterdir()) == [
        "adapter",
        "optimizer.safetensors",
        "trainer_state.json",
    ]
    # The adapter is written whole (gathered from the shards under FSDP2), as one process does.
    adapter = "checkpoints/step-0000003/adapter/adapter_model.safetensors"
    a, b = (load_file(str(data / run / adapter)) for run in ("multi", "single"))
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


@pytest.mark.parametrize(
    ("lora", "stage", "model", "match"),
    [
        ("rank = 0", "", "", r"model\.lora\.rank = 0: must be ≥ 1"),
        ("rank = 2.5", "", "", r"model\.lora\.rank = 2\.5: must be an integer"),
        ("alpha = 0", "", "", r"model\.lora\.alpha = 0: must be > 0"),
        ("dropout = 1.0", "", "", r"model\.lora\.dropout = 1\.0: must be in \[0, 1\)"),
        ('targets = ["llm_atention"]', "", "", r"did you mean 'llm_attention'"),
        ("targets = []", "", "", "non-empty list of target groups"),
        ("rnak = 4", "", "", r"did you mean 'rank'"),
        ("", 'trainable = "all"', "", r"stages\[0\]\.trainable: with \[model\.lora\]"),
        ("", 'kind = "vae"', "", r"'vae' stage, which trains the autoencoder whole"),
        ("", "", 'preset = "tiny"\ntokenizer = "x"', "set \\[model\\] from_pretrained"),
    ],
)
def test_bad_lora_recipes_are_refused(tmp_path, lora, stage, model, match):
    model_lines = model or f'from_pretrained = "{MODEL}"'
    raw = f"""
[model]
{model_lines}
[model.lora]
{lora}
[data]
files = ["train.jsonl"]
[[stages]]
name = "s"
steps = 1
{stage}
"""
    path = tmp_path / "bad.toml"
    path.write_text(raw)
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_toml(path)


def test_a_lora_section_reads_into_a_lora_config(tmp_path):
    path = write_recipe(tmp_path, "ok", [(1, 2)], 'rank = 4\ntargets = ["vit", "projectors"]')
    lora = TrainConfig.from_toml(path).model.lora
    assert (lora.rank, lora.alpha, lora.dropout, lora.targets) == (
        4,
        16.0,
        0.0,
        ("vit", "projectors"),
    )
    empty = write_recipe(tmp_path, "defaults", [(1, 2)], "")
    from cheers.transforms.lora import LoraConfig

    assert TrainConfig.from_toml(empty).model.lora == LoraConfig()
