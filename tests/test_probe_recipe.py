"""recipes/default/probe.py: the linear probes behind docs/default_model.md's understanding
findings."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from cheers.checkpoint import load_model
from cheers.loading import default_model_path
from cheers.shapes.render import size_range

PROBE = Path(__file__).parents[1] / "recipes" / "default" / "probe.py"


def _load_probe():
    spec = importlib.util.spec_from_file_location("probe_recipe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_probe_reads_a_linear_label_and_not_a_random_one():
    probe = _load_probe()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(900, 20, generator=g)
    readable = (x @ torch.randn(20, 3, generator=g)).argmax(1)  # a linear function of x
    unrelated = torch.randint(0, 3, (900,), generator=g)
    assert probe.probe_accuracy(x, readable, n_train=600) > 0.9
    assert probe.probe_accuracy(x, unrelated, n_train=600) < 0.5  # chance is 1/3


def test_scenes_stay_on_the_canvas_at_allowed_sizes():
    probe = _load_probe()
    lo, hi = size_range(64)
    for obj in probe.single_object_scenes(200, 64, seed=1):
        x0, y0, x1, y1 = obj.bbox
        assert min(x0, y0) >= 0
        assert max(x1, y1) <= 64
        assert lo <= obj.size <= hi


def test_probe_runs_on_the_embedded_model(tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert _load_probe().main(["--n-train", "30", "--n-test", "15", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    stages = ["pixels", "latent", "patch_embeddings", "vit_output"]
    if load_model(default_model_path()).model.vae_decoder_projector is not None:  # pixel path
        stages.append("decoder_projector")
    assert {*stages, "llm_image_tokens"} <= report.keys()
    assert all(0 <= report[s][k] <= 1 for s in stages for k in ("shape", "colour"))
    assert report["llm_image_tokens"]["features"] == 16 * 192  # 16 tokens of the LLM's width
    assert "llm_image_tokens" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--n-train", "1"], "--n-train must be at least 2, got 1"),
        (["--n-test", "0"], "--n-test must be at least 1, got 0"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
    ],
)
def test_bad_sizes_are_refused_by_name(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _load_probe().main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
