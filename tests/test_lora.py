"""LoRA adapters at inference: pipe.load_lora / unload_lora, merging folders, the --lora flag
and `cheers lora merge`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cheers.adapters import merge_lora_folder, parse_lora_spec
from cheers.checkpoint import load_model
from cheers.cli import main
from cheers.errors import CheckpointError, CheersError, ConfigError
from cheers.pipeline import CheersPipeline
from cheers.shapes.render import Scene, ShapeObject, render
from cheers.transforms.lora import LoraConfig, apply_lora, lora_layers, save_lora

MODEL = str(Path(__file__).parents[1] / "src" / "cheers" / "default_model")
ALL = ("llm_attention", "llm_mlp", "semantic_head", "detail_head", "vit", "projectors")
PICTURE = render(Scene((ShapeObject("circle", "red", 32.0, 32.0, 20.0),), canvas=64))


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """An adapter on every target group with random (non-zero) B, so it changes outputs."""
    model = load_model(MODEL)
    config = LoraConfig(rank=4, alpha=8, targets=ALL)
    apply_lora(model, config)
    g = torch.Generator().manual_seed(0)
    for layer in lora_layers(model).values():
        w = layer.lora_B.weight
        w.data.copy_(torch.randn(w.shape, generator=g) * 0.02)
    return save_lora(model, config, tmp_path_factory.mktemp("lora") / "adapter", base=MODEL)


def _outputs(pipe: CheersPipeline) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of a question about an image, and a generated latent (fixed noise)."""
    ids = torch.tensor([pipe.tokenizer.encode("What color is the circle?")])
    model = pipe.model
    with torch.no_grad():
        hidden = model.transformer(model.embed(ids), torch.arange(ids.shape[1])[None], None)
        logits = model.logits(hidden)
    image = pipe("a red circle", num_inference_steps=4, guidance_scale=2.0, generator=0,
                 output_type="pt")  # fmt: skip
    return logits, image.latents


def test_merged_folder_equals_the_adapter_on_the_base(adapter, tmp_path):
    adapted = CheersPipeline.from_pretrained(MODEL)
    adapted.load_lora(adapter)
    merged_dir = merge_lora_folder(MODEL, adapter, tmp_path / "merged")
    merged = CheersPipeline.from_pretrained(merged_dir)
    base = CheersPipeline.from_pretrained(MODEL)
    for a, m, b in zip(_outputs(adapted), _outputs(merged), _outputs(base), strict=True):
        # W + BA against Wx + B(Ax): float32 rounding, grown through four guided steps (3e-5
        # measured on the latents), far below what the adapter itself changes (> 1e-3).
        torch.testing.assert_close(m, a, rtol=1e-4, atol=1e-4)
        assert (a - b).abs().max() > 1e-3  # the adapter does change what the model computes
    assert adapted.understand(PICTURE, "What color is the circle?", max_new_tokens=3) == (
        merged.understand(PICTURE, "What color is the circle?", max_new_tokens=3)
    )


def test_load_then_unload_gives_back_the_base_outputs_exactly(adapter):
    pipe = CheersPipeline.from_pretrained(MODEL)
    before = _outputs(pipe)
    state = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    pipe.load_lora(adapter, scale=0.5)
    assert all(not torch.equal(a, b) for a, b in zip(_outputs(pipe), before, strict=True))
    assert pipe.unload_lora() == len(json.loads((adapter / "adapter_config.json").read_text())[
        "target_modules"])  # fmt: skip
    for a, b in zip(_outputs(pipe), before, strict=True):
        assert torch.equal(a, b)
    after = pipe.model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_scale_zero_is_the_base_model(adapter):
    pipe = CheersPipeline.from_pretrained(MODEL)
    before = _outputs(pipe)
    pipe.load_lora(adapter, scale=0.0)
    for a, b in zip(_outputs(pipe), before, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lora_spec_parsing(adapter, tmp_path):
    assert parse_lora_spec(str(adapter)) == parse_lora_spec(f"{adapter}:1")
    spec = parse_lora_spec(f"{adapter}:0.25")
    assert (spec.folder, spec.scale) == (adapter, 0.25)
    assert parse_lora_spec(f"{adapter}:-1e-1").scale == -0.1
    for bad in ("nan", "inf", "-inf"):
        with pytest.raises(ConfigError, match="finite"):
            parse_lora_spec(f"{adapter}:{bad}")
    with pytest.raises(ConfigError, match="not a number"):
        parse_lora_spec(f"{adapter}:half")
    with pytest.raises(CheckpointError, match="not a folder"):
        parse_lora_spec(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"adapter_config\.json"):
        parse_lora_spec(str(tmp_path / "empty"))
    # A folder whose name has a colon (and no number after it) is taken whole.
    odd = tmp_path / "run:best"
    odd.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (odd / name).write_bytes((adapter / name).read_bytes())
    assert parse_lora_spec(str(odd)) == type(spec)(odd, 1.0)


def test_an_adapter_of_other_shapes_is_refused_naming_the_layer(adapter, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "adapter_config.json").write_bytes((adapter / "adapter_config.json").read_bytes())
    state = load_file(str(adapter / "adapter_model.safetensors"))
    key = next(k for k in state if k.endswith("q_proj.lora_A.weight"))
    state[key] = torch.zeros(4, state[key].shape[1] + 1)
    save_file(state, str(bad / "adapter_model.safetensors"))
    pipe = CheersPipeline.from_pretrained(MODEL)
    with pytest.raises(CheckpointError, match=r"q_proj\.lora_A has shape"):
        pipe.load_lora(bad)
    assert not lora_layers(pipe.model)  # a refused adapter leaves the model as it was
    with pytest.raises(CheersError, match="finite"):
        pipe.load_lora(adapter, scale=float("nan"))


def test_cli_merge_and_lora_flag(adapter, tmp_path, capsys):
    out = tmp_path / "merged-cli"
    assert main(["lora", "merge", MODEL, str(adapter), str(out), "--scale", "0.5"]) == 0
    assert Path(capsys.readouterr().out.strip()) == out
    half = CheersPipeline.from_pretrained(MODEL)
    half.load_lora(adapter, scale=0.5)
    torch.testing.assert_close(
        _outputs(CheersPipeline.from_pretrained(out))[0], _outputs(half)[0], rtol=1e-5, atol=1e-5
    )
    question = ["ask", "-q", "What color is the circle?", "--max-new-tokens", "3"]
    image = tmp_path / "circle.png"
    PICTURE.save(image)
    args = [*question, str(image), "--model", MODEL, "--device", "cpu"]
    assert main([*args, "--lora", f"{adapter}:0.5"]) == 0
    assert capsys.readouterr().out.strip() == half.understand(
        PICTURE, "What color is the circle?", max_new_tokens=3
    )
    assert main([*args, "--lora", f"{adapter}:nan"]) == 2
    assert "finite" in capsys.readouterr().err
    assert main(["lora", "merge", MODEL, str(tmp_path), str(tmp_path / "x")]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
