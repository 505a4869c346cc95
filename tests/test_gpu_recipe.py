"""recipes/default/gpu.py run end to end on the CPU on a tiny budget, so that the GPU run
cannot fail for a silly reason; and the Shapes talk it trains on."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cheers.checkpoint import load_model
from cheers.pipeline import CheersPipeline
from cheers.shapes.render import Scene, ShapeObject
from cheers.shapes.talk import SMALL_TALK, describe_scene, sample_small_talk

RECIPE = Path(__file__).parents[1] / "recipes" / "default" / "gpu.py"


def _load_recipe():
    spec = importlib.util.spec_from_file_location("gpu_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_recipe"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _run(*args: str) -> None:
    """As a user runs it (its data workers are spawned processes that import the script)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run(
        [sys.executable, str(RECIPE), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_describe_lists_objects_left_to_right():
    scene = Scene(
        (
            ShapeObject("square", "blue", 44, 20, 12),
            ShapeObject("circle", "red", 14, 40, 12),
            ShapeObject("triangle", "orange", 30, 30, 12),
        )
    )
    assert describe_scene(scene) == "a red circle, an orange triangle and a blue square"
    assert describe_scene(Scene((ShapeObject("circle", "green", 30, 30, 12),))) == (
        "a green circle"
    )


def test_small_talk_comes_from_the_table():
    rng = np.random.default_rng(0)
    answers = {answer for _, answer in SMALL_TALK}
    asks = {ask.lower() for asks, _ in SMALL_TALK for ask in asks}
    for _ in range(50):
        ask, answer = sample_small_talk(rng)
        assert answer in answers
        assert ask.lower() in asks


def test_every_drawn_task_tokenises_and_packs():
    recipe = _load_recipe()
    from cheers.tokenizer import CheersTokenizer

    tokenizer = CheersTokenizer.from_folder(recipe.PACKAGE_MODEL)
    rng = np.random.default_rng(1)
    for task in recipe.TASKS:
        sample = recipe.draw_sample(rng, task, 64)
        batch = recipe.pack([recipe.encode(sample, tokenizer, 16, dropped=False)])
        n_images = len(sample[1])
        assert (batch["block"] >= 0).sum() == 16 * n_images
        assert batch["images"].shape[0] == n_images
        assert (batch["target"] != -100).any()


def test_tiny_run_writes_a_loadable_model_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = [
        "--design", "curriculum", "--device", "cpu", "--batch-size", "4", "--workers", "1",
        "--val-size", "4", "--eval-every", "1", "--out", str(out), "--checkpoint",
    ]  # fmt: skip
    _run(*args, "--minutes", "0.1")
    first = json.loads((out / "curve.json").read_text())["points"]
    assert first and {
        "vqa_accuracy",
        "vqa_accuracy_3plus",
        "val_flow_loss",
        "prompt_effect",
    } <= set(first[-1])
    assert 0.0 <= first[-1]["vqa_accuracy"] <= 1.0
    _run(*args, "--minutes", "0.4", "--resume")
    points = json.loads((out / "curve.json").read_text())["points"]
    assert points[: len(first)] == first  # the curve is continued, not restarted
    assert len(points) > len(first)
    assert points[-1]["step"] >= first[-1]["step"]  # under a heavy load a step may not fit
    assert points[-1]["seconds"] > first[-1]["seconds"]
    model = load_model(out / "model")
    base = load_model(_load_recipe().PACKAGE_MODEL)
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in base.state_dict().items()
    }
    answer = CheersPipeline.from_pretrained(out / "model").chat("Hello", max_new_tokens=4)
    assert isinstance(answer, str)


def test_resume_without_a_state_is_refused(tmp_path, capsys):
    recipe = _load_recipe()
    with pytest.raises(SystemExit):
        recipe.main(["--out", str(tmp_path), "--resume"])
    assert "state.pt" in capsys.readouterr().err
