"""The small-hardware benchmark scripts run (their figures are measured, never asserted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import compression
import full_size
import gpu_engine
import precision


def test_gpu_script_measures_int8_and_offload_on_a_tiny_config(capsys):
    argv = ["--tiny", "--device", "cpu", "--steps", "2", "--tokens", "3", "--repeats", "1"]
    assert gpu_engine.main([*argv, "--modes", "int8,offload"]) == 0
    out = capsys.readouterr().out
    assert "int8" in out and "offload" in out and "i2t_tokens_per_s" in out


def test_precision_script_compares_on_the_embedded_model(capsys, tmp_path):
    argv = ["--models", "embedded", "--repeats", "1", "--tokens", "3", "--images", "1"]
    argv += ["--vqa", "2", "--gen", "1", "--threads", "1", "--json", str(tmp_path / "q.json")]
    assert precision.main(argv) == 0
    result = json.loads((tmp_path / "q.json").read_text())["embedded"]
    weights = {k: f["weights_mb"] for k, f in result["figures"].items()}
    assert weights["int8"] < weights["float32"]
    assert weights["bfloat16"] == weights["bfloat16-nchw"] < 0.51 * weights["float32"]
    assert set(result["deviation"]) == {"bfloat16", "bfloat16-nchw", "int8"}
    assert "shapes-gen overall" in capsys.readouterr().out


def test_full_size_script_builds_saves_loads_and_cleans_up(tmp_path, capsys):
    folder = tmp_path / "model"
    argv = ["--tiny", "--folder", str(folder), "--threads", "1", "--modes", "bfloat16"]
    assert full_size.main([*argv, "--loads-only", "--json", str(tmp_path / "f.json")]) == 0
    assert not folder.exists()  # the saved model is deleted at the end
    result = json.loads((tmp_path / "f.json").read_text())
    assert result["bfloat16"]["weights_mb"] > 0 and result["build"]["params"] > 0
    assert "(peak-base)/weights" in capsys.readouterr().out


def test_compression_script_compares_weights_and_kv_caches(tmp_path, capsys):
    argv = ["--calibration", "4", "--chats", "1", "--tokens", "3", "--images", "1", "--vqa", "0"]
    argv += ["--gen", "0", "--repeats", "1", "--threads", "1", "--json", str(tmp_path / "c.json")]
    assert compression.main(argv) == 0
    result = json.loads((tmp_path / "c.json").read_text())
    embedded, full = result["embedded"], result["full_size"]
    assert set(embedded) == {*compression.WEIGHTS, *compression.KV}
    weights = {k: v["weights_mb"] for k, v in embedded.items()}
    assert weights["rtn-2"] == weights["decoupleq-2"] < weights["rtn-4"] < weights["float32"]
    assert embedded["kv-int4"]["kv_bytes_per_token"] < embedded["float32"]["kv_bytes_per_token"]
    # The official config: 2.57 B parameters, 10.3 GB in float32; fewer bytes for fewer bits.
    assert 10.2 < full["float32"]["weights_gb"] < 10.4
    sizes = [full[k]["weights_gb"] for k in ("bfloat16", "rtn/decoupleq-4", "rtn/decoupleq-2")]
    assert sizes == sorted(sizes, reverse=True)
    # 28 layers × 2 KV heads × (keys and values) × 128 channels × 2 bytes in bfloat16.
    assert full["bfloat16"]["kv_bytes_per_token"]["float"] == 28 * 2 * 2 * 128 * 2
    assert full["bfloat16"]["kv_bytes_per_token"]["int4"] == 28 * 2 * 2 * (64 + 4)
    assert "next-token KL" in capsys.readouterr().out
