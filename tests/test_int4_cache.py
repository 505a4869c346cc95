"""The INT4 KV cache (SAW-INT4): the rotation is orthogonal (scores and outputs unchanged before
quantization), 4-bit tokens within half a step and two a byte, the rotation beats naive INT4 on
outlier channels, and every decoding path (growing, static, batched, images, the CLI) takes it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cheers.cli import main
from cheers.config import CheersConfig
from cheers.errors import CheersError
from cheers.model import Cheers
from cheers.modules.common import attention
from cheers.modules.int4_cache import (
    Int4KVCache,
    block_hadamard,
    dequantize_tokens,
    hadamard,
    quantize_tokens,
    rotation_block,
)
from cheers.pipeline import CheersPipeline
from cheers.pipeline.text_requests import TextRequest

MODEL = "src/cheers/default_model"


def test_the_block_hadamard_rotation_is_orthogonal_and_keeps_scores():
    signs = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])
    torch.testing.assert_close(hadamard(4), signs / 2)
    assert (rotation_block(32), rotation_block(128), rotation_block(256), rotation_block(96)) == (
        32,
        128,
        128,
        32,
    )
    r = block_hadamard(256, torch.float64)
    torch.testing.assert_close(r @ r.T, torch.eye(256, dtype=torch.float64))
    assert torch.count_nonzero(r[:128, 128:]) == 0  # two diagonal blocks of 128
    q, k, v = (torch.randn(2, 4, 5, 256, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close((q @ r) @ (k @ r).transpose(-1, -2), q @ k.transpose(-1, -2))
    probs = torch.softmax(q @ k.transpose(-1, -2), -1)
    torch.testing.assert_close(probs @ (v @ r) @ r.T, probs @ v)


def test_tokens_are_four_bits_two_a_byte_within_half_a_step():
    x = torch.arange(16.0).repeat(3, 1)  # one step of exactly 1 from 0
    packed, scale, zero = quantize_tokens(x)
    assert packed.shape == (3, 8) and packed.dtype == torch.uint8
    assert packed[0, 1].item() == 2 + (3 << 4)  # the even channel in the low half-byte
    assert torch.equal(dequantize_tokens(packed, scale, zero, torch.float32), x)
    y = torch.randn(4, 2, 7, 64) * 3
    packed, scale, zero = quantize_tokens(y)
    back = dequantize_tokens(packed, scale, zero, torch.float32)
    assert ((back - y).abs() <= scale.float() / 2 + 1e-2 * scale.float()).all()


def test_the_rotation_recovers_most_of_what_naive_int4_loses_on_outlier_channels():
    g = torch.Generator().manual_seed(0)
    b, h, t, d = 1, 2, 64, 32
    q, k, v = (torch.randn(b, h, t, d, generator=g) for _ in range(3))
    k[..., 3] += 25.0  # an outlier channel, as LLM keys have
    v[..., 7] *= 12.0
    cfg = dataclasses.replace(
        CheersConfig.tiny().text_config,
        hidden_size=h * d,
        num_attention_heads=h,
        num_key_value_heads=h,
        num_hidden_layers=1,
    )
    exact = attention(q, k, v)
    errors = {}
    for rotate in (False, True):
        layer = Int4KVCache(cfg, b, t, torch.float32, "cpu", rotate=rotate).layer(0)
        kq, vq = layer.update(k, v, 0)
        out = layer.restore_outputs(attention(layer.rotate_queries(q), kq, vq))
        errors[rotate] = float((out - exact).pow(2).mean())
    assert errors[True] < 0.5 * errors[False]


def test_slot_writes_equal_offset_writes_and_views_share_memory():
    cfg = dataclasses.replace(CheersConfig.tiny().text_config, num_hidden_layers=1)
    k, v = (torch.randn(3, cfg.num_key_value_heads, 4, cfg.head_dim) for _ in range(2))
    by_offset = Int4KVCache(cfg, 3, 10, torch.float32, "cpu")
    by_slot = Int4KVCache(cfg, 3, 10, torch.float32, "cpu")
    keys, values = by_offset.layer(0).update(k, v, 2)
    all_keys, all_values = by_slot.layer(0).update(k, v, torch.arange(2, 6))
    assert keys.shape[2] == 6 and all_keys.shape[2] == 10
    torch.testing.assert_close(all_keys[:, :, :6], keys)
    torch.testing.assert_close(all_values[:, :, :6], values)
    view = by_offset.rows(2)
    view.layer(0).update(k[:2], v[:2], 6)
    assert torch.equal(by_offset.keys[0].packed[:2, :, 6:10], view.keys[0].packed[:, :, 6:10])
    kept = by_offset.select(torch.tensor([2]))
    assert kept.batch_size == 1 and kept.keys[0].packed.shape[0] == 1
    with pytest.raises(ValueError, match="KV cache overflow"):
        by_offset.layer(0).update(k[:1], v[:1], 8)


@pytest.fixture(scope="module")
def pipe():
    return CheersPipeline.from_pretrained(MODEL)


@pytest.mark.parametrize("kind", ["int4", "int4-naive"])
def test_every_decoding_path_takes_the_int4_cache(pipe, kind):
    prompts = ["What shapes do you know?", "Describe a red circle."]
    pipe.model.set_kv_cache(kind)
    try:
        cache = pipe.model.new_kv_cache(2, 8)
        assert isinstance(cache, Int4KVCache) and cache.kind == kind
        growing = pipe.chat(prompts, max_new_tokens=10)
        pipe.enable_static_decoding(256)
        static = pipe.chat(prompts, max_new_tokens=10)
        pipe.disable_static_decoding()
        batched = pipe.answer(
            [TextRequest([{"role": "user", "content": p}], max_new_tokens=10) for p in prompts]
        )
        assert static == growing
        assert [a.text for a in batched] == [pipe.chat(p, max_new_tokens=10) for p in prompts]
        latents = pipe(
            "a red circle", num_inference_steps=3, generator=0, output_type="latent"
        ).images
        assert torch.isfinite(latents).all()
    finally:
        pipe.model.set_kv_cache("float")
        pipe.disable_static_decoding()


def test_int4_logits_stay_near_float_and_the_rotation_helps(pipe):
    rows = pipe.inputs.chat_rows(["Name the shapes you know."], False, None)
    from cheers.pipeline.loops import start_decoding
    from cheers.sequence import left_pad

    batch = left_pad(pipe.inputs.sequences(*zip(*rows, strict=True)))
    logits = {}
    for kind in ("float", "int4", "int4-naive"):
        pipe.model.set_kv_cache(kind)
        with torch.no_grad():
            _, state = start_decoding(pipe.model, batch, 4)
            state.advance(pipe.model, state.logits.argmax(-1))
            logits[kind] = torch.log_softmax(state.logits, -1)
    pipe.model.set_kv_cache("float")
    kl = {
        k: float((logits["float"].exp() * (logits["float"] - v)).sum()) for k, v in logits.items()
    }
    assert kl["float"] == 0.0 and 0.0 < kl["int4"] < 0.1
    assert kl["int4-naive"] > 0.0


def test_bad_kv_cache_choices_are_refused(capsys):
    model = Cheers(CheersConfig.tiny())
    with pytest.raises(CheersError, match="unknown KV cache 'int3'"):
        model.set_kv_cache("int3")
    with pytest.raises(CheersError, match="unknown KV cache"):
        CheersPipeline.from_pretrained(MODEL, kv_cache="fp8")
    assert main(["chat", "Hi", "--model", MODEL, "--kv-cache", "int5"]) == 2
    assert "invalid choice: 'int5'" in capsys.readouterr().err


def test_every_command_and_the_server_take_kv_cache_int4(capsys):
    from cheers.cli import build_parser

    flags = ["--model", MODEL, "--device", "cpu", "--max-new-tokens", "6", "--kv-cache", "int4"]
    assert main(["chat", "What shapes do you know?", *flags]) == 0
    expected = CheersPipeline.from_pretrained(MODEL, kv_cache="int4").chat(
        "What shapes do you know?", max_new_tokens=6
    )
    assert capsys.readouterr().out == expected + "\n"
    parser = build_parser()
    for command in ("serve", "generate", "ask", "edit", "demo"):
        sub = parser._subparsers._group_actions[0].choices[command]
        action = next(a for a in sub._actions if a.dest == "kv_cache")
        assert action.choices == ["float", "int4", "int4-naive"] and action.default is None
