"""cheers.transforms: LoRA (identity at start, merge = adapter, PEFT names, round trip, it
learns) and int8 weights (within half a step, the kernel equals the dequantized product)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cheers.checkpoint import load_model
from cheers.data.examples import tokenize
from cheers.data.records import Record
from cheers.errors import CheersError
from cheers.shapes.dataset import make_sample, stream
from cheers.shapes.render import render_array
from cheers.tokenizer import CheersTokenizer
from cheers.training.packed import collate, draw_t, pack_example, packed_losses, to_device
from cheers.transforms.lora import (
    LoraConfig,
    apply_lora,
    load_lora,
    lora_layers,
    merge_lora,
    save_lora,
    trainable_parameters,
    unload_lora,
)
from cheers.transforms.quantize import Int8Linear, quantize_int8, quantize_weight, weight_bytes

MODEL = "src/cheers/default_model"
ALL = ("llm_attention", "llm_mlp", "semantic_head", "detail_head", "vit", "projectors")


@pytest.fixture(scope="module")
def batch():
    """A packed batch of every task with fixed t and noise."""
    model = load_model(MODEL)
    tok = CheersTokenizer.from_folder(MODEL)
    rng = stream(3, "val")
    rows, images = [], []
    for k, task in enumerate(["understanding", "generation", "editing"]):
        s = make_sample(rng, task, f"t{k}")
        names = tuple(f"{j}.png" for j in range(len(s.scenes)))
        record = Record(s.id, names, (("user", s.human), ("assistant", s.gpt)), s.id)
        rows.append(pack_example(tokenize(record, tok, model.tokens_per_image, 512), 16))
        images += [render_array(scene) for scene in s.scenes]
    b = to_device(collate(rows, images), torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    t = draw_t(b["noised"], 1.0, g)
    x0 = torch.randn(len(t), model.config.latent_channels, 8, 8, generator=g)
    return b, t, x0


def _losses(model, batch):
    with torch.no_grad():
        out = packed_losses(model, *batch)
    return torch.stack([out["text"], out["image"]])


def _randomise_b(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for layer in lora_layers(model).values():
        w = layer.lora_B.weight
        w.data.copy_(torch.randn(w.shape, generator=g) * 0.02)


def test_lora_starts_as_the_identity_and_trains_only_adapters(batch):
    base = load_model(MODEL)
    model = load_model(MODEL)
    names = apply_lora(model, LoraConfig(rank=4, targets=ALL))
    assert names and all(".lora" not in n for n in names)
    torch.testing.assert_close(_losses(model, batch), _losses(base, batch), rtol=0, atol=0)
    expected = sum(
        4 * (m.base.in_features + m.base.out_features) for m in lora_layers(model).values()
    )
    assert trainable_parameters(model) == expected
    with pytest.raises(CheersError, match="already"):
        apply_lora(model, LoraConfig())


def test_merged_model_equals_the_adapted_one_and_unload_restores(batch):
    base_losses = _losses(load_model(MODEL), batch)
    model = load_model(MODEL)
    apply_lora(model, LoraConfig(rank=4, alpha=8, targets=ALL))
    _randomise_b(model)
    adapted = _losses(model, batch)
    assert not torch.allclose(adapted, base_losses)  # the adapters do something
    merged = load_model(MODEL)
    apply_lora(merged, LoraConfig(rank=4, alpha=8, targets=ALL))
    merged.load_state_dict(model.state_dict())
    assert merge_lora(merged) == len(lora_layers(model))
    assert not lora_layers(merged)
    torch.testing.assert_close(_losses(merged, batch), adapted, rtol=1e-5, atol=1e-5)
    unload_lora(model)
    torch.testing.assert_close(_losses(model, batch), base_losses, rtol=0, atol=0)


def test_adapter_folder_has_peft_names_and_round_trips(batch, tmp_path):
    config = LoraConfig(rank=2, alpha=4, targets=("llm_attention", "detail_head"))
    model = load_model(MODEL)
    apply_lora(model, config)
    _randomise_b(model, seed=1)
    save_lora(model, config, tmp_path / "adapter", base="default")
    data = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (data["peft_type"], data["r"], data["lora_alpha"]) == ("LORA", 2, 4)
    assert "model.language_model.layers.0.self_attn.q_proj" in data["target_modules"]
    from safetensors.torch import load_file

    keys = set(load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")))
    assert "base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert len(keys) == 2 * len(data["target_modules"])
    fresh = load_model(MODEL)
    assert load_lora(fresh, tmp_path / "adapter") == config
    torch.testing.assert_close(_losses(fresh, batch), _losses(model, batch), rtol=0, atol=0)
    # Half the scale halves the update: the merged weights lie halfway.
    half = load_model(MODEL)
    load_lora(half, tmp_path / "adapter", scale=0.5)
    name = "model.language_model.layers.0.self_attn.q_proj"
    layer = lora_layers(half)[name]
    w0 = layer.base.weight.detach().clone()
    full = lora_layers(fresh)[name]
    delta = (full.lora_B.weight @ full.lora_A.weight) * full.scale
    merge_lora(half)
    torch.testing.assert_close(half.get_submodule(name).weight - w0, delta / 2)


def test_lora_learns_an_answer_the_model_could_not_give():
    from cheers.pipeline import CheersPipeline

    pipe = CheersPipeline.from_pretrained(MODEL)
    question, truth = "What is the secret color?", "orange"
    assert pipe.chat(question, max_new_tokens=4).strip() != truth
    model = pipe.model
    apply_lora(model, LoraConfig(rank=4, alpha=8, targets=("llm_attention", "llm_mlp")))
    record = Record("s", (), (("user", question), ("assistant", truth)), "s")
    example = tokenize(record, pipe.tokenizer, model.tokens_per_image, 512)
    example = type(example)(example.input_ids[1:], example.labels[1:], (), (), "s")  # no dummy
    b = to_device(collate([pack_example(example, 16)], []), torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    none = torch.zeros(0)
    for _ in range(40):
        out = packed_losses(model, b, none, torch.zeros(0, 32, 8, 8), heads=False)
        (out["text"] / out["text_n"]).backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert pipe.chat(question, max_new_tokens=4).strip() == truth


def test_int8_weights_lie_within_half_a_step():
    w = torch.randn(16, 24) * torch.linspace(0.1, 3, 16)[:, None]
    q, scales = quantize_weight(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert torch.all((w - q.float() * scales[:, None]).abs() <= scales[:, None] / 2 + 1e-6)
    assert torch.equal(q.abs().amax(dim=1), torch.full((16,), 127, dtype=torch.int8))


def test_int8_linear_equals_the_dequantized_product():
    linear = torch.nn.Linear(24, 16)
    layer = Int8Linear(linear)
    for rows in (1, 40):  # the int8 kernel (decoding) and the dequantized product
        x = torch.randn(rows, 24)
        reference = torch.nn.functional.linear(x, layer.dequantized(), linear.bias)
        torch.testing.assert_close(layer(x), reference, rtol=1e-5, atol=1e-5)


def test_quantized_model_is_smaller_and_answers_mostly_alike(batch):
    model = load_model(MODEL)
    before = weight_bytes(model)
    reference = _losses(model, batch)
    names = quantize_int8(model)
    assert names and all(isinstance(model.get_submodule(n), Int8Linear) for n in names)
    assert weight_bytes(model) < 0.6 * before
    # Losses move by a small fraction, not by a broken layout.
    assert torch.allclose(_losses(model, batch), reference, rtol=0.05)
    with pytest.raises(CheersError, match="projectors"):
        quantize_int8(load_model(MODEL), groups=("projectors",))


def test_bad_lora_configs_are_refused():
    for kwargs, match in (
        ({"rank": 0}, "rank"),
        ({"alpha": float("nan")}, "alpha"),
        ({"dropout": 1.5}, "dropout"),
        ({"targets": ("llm",)}, "target group"),
    ):
        with pytest.raises(CheersError, match=match):
            LoraConfig(**kwargs)
    assert np.isclose(LoraConfig(rank=4, alpha=8).scale, 2.0)
