"""The benchmark scripts run (their figures are measured, never asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import engine
import fast_path
import gpu_engine


def test_measurement_config_is_the_issues():
    cfg = engine.measurement_config()
    assert cfg.image_size == 128 and cfg.text_config.vocab_size == 151936
    assert cfg.text_config.hidden_size == 256 and cfg.vision_representation_config.patch_size == 16
    assert cfg.vae_decoder_config.ch == 128 and cfg.latent_channels == 128


def test_gpu_script_runs_on_a_tiny_config(capsys, tmp_path):
    argv = ["--tiny", "--device", "cpu", "--steps", "2", "--tokens", "3", "--repeats", "1"]
    assert gpu_engine.main([*argv, "--modes", "eager", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "t2i_s_per_image" in out and "i2t_tokens_per_s" in out
    assert (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_gpu_script_compiles_on_a_tiny_config(capsys):
    argv = ["--tiny", "--device", "cpu", "--steps", "2", "--tokens", "3", "--repeats", "1"]
    assert gpu_engine.main([*argv, "--modes", "eager,compiled,graphs"]) == 0
    assert "compiled" in capsys.readouterr().out


def test_fast_path_plot_draws_a_png(tmp_path):
    rows = [
        {"option": "euler", "nfe": n, "rmse": 1.0 / n, "psnr": 20.0, "seconds": 1.0}
        for n in (5, 10, 20)
    ]
    rows.append({"option": "ab2", "nfe": 10, "rmse": 0.01, "psnr": 30.0, "seconds": 1.0})
    fast_path.plot(rows, tmp_path / "p.png", "test")
    assert Image.open(tmp_path / "p.png").size == (760, 480)


def test_listening_probe_data_is_what_the_prompt_says(tmp_path):
    """Each bars prompt names the place of its image's bar; the file reads as training data."""
    import listening_probe

    from cheers.data.loader import DataSource, TrainingData
    from cheers.tokenizer import CheersTokenizer

    data = listening_probe.write_data(tmp_path, "bars", understanding=True)
    quarter = listening_probe.CANVAS // 4
    for name, label in zip(data.train_images, data.train_labels, strict=True):
        red = np.asarray(Image.open(tmp_path / name))[:, :, 1] < 100  # the bar's pixels
        columns = np.nonzero(red.any(0))[0]
        assert columns.min() // quarter == columns.max() // quarter == label
    tokenizer = CheersTokenizer.from_folder(listening_probe.TOKENIZER)
    sources = [DataSource(str(tmp_path / name)) for name in ("draw.jsonl", "ask.jsonl")]
    examples = TrainingData(sources, tokenizer, 16, 128).examples
    assert len(examples) == 2 * len(data.train_images)  # one drawing and one question each
    drawings = (tmp_path / "draw.jsonl").read_text().splitlines()
    for line, label in zip(drawings, data.train_labels, strict=True):
        assert f"a bar to the {listening_probe.COMPASS[label]}" in line


def test_memory_estimate_script_runs_on_a_tiny_config(tmp_path):
    # In its own process: on a CPU the script changes how glibc allocates (mallopt).
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "m.json"
    cmd = [sys.executable, str(root / "benchmarks" / "memory_estimate.py"), "--preset", "tiny",
           "--device", "cpu", "--dtype", "float32", "--images", "1,2", "--rows", "1",
           "--tokens", "2", "--json", str(out)]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(root / "src"), OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "estimate/measured" in result.stdout
    calls = [r["call"] for r in json.loads(out.read_text())["results"]]
    assert calls == ["text-to-image x1", "text-to-image x2", "image question x1"]
