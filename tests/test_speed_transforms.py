"""The speed transforms: regional compilation (one graph for all LLM layers, the same answers)
and channels-last convolutions (the same images and checkpoint)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

from cheers.config import CheersConfig
from cheers.generation import TextOutput, decode_from, decode_text, prefill
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline
from cheers.sequence import left_pad
from cheers.static_decoding import StaticDecodeState
from cheers.tokenizer import CheersTokenizer
from cheers.transforms.channels_last import convolutions_channels_last
from cheers.transforms.compile import compile_regions, regions

TOKENIZER = "src/cheers/default_model"


def tiny_pipe(llm_layers: int = 2) -> CheersPipeline:
    cfg = CheersConfig.tiny(image_size=32)
    cfg.text_config.num_hidden_layers = llm_layers
    torch.manual_seed(0)
    model = Cheers(cfg).init_weights().eval()
    return CheersPipeline(model, CheersTokenizer.from_folder(TOKENIZER))


def greedy(pipe: CheersPipeline, question: str, tokens: int) -> torch.Tensor:
    ids = pipe._chat_ids([{"role": "user", "content": question}])
    batch = left_pad(pipe._sequences([ids], [[]], [None]))
    prefix = prefill(pipe.model, batch, room=tokens)
    logits = pipe.model.logits(prefix.hidden[:, -1])
    args = (batch.valid, batch.lengths, prefix.length, logits, tokens)
    return decode_text(pipe.model, prefix.cache, *args, eos_id=-1, pad_id=0).tokens


def test_regions_cover_every_repeated_block():
    pipe = tiny_pipe(llm_layers=3)
    names = regions(pipe.model)
    cfg = pipe.model.config
    assert sum(n.startswith("model.language_model.layers.") for n in names) == 3
    vit = cfg.vision_representation_config.num_hidden_layers
    assert sum(".encoder.layers." in n for n in names) == vit
    assert "model.gen_projector.diffusion_head_b" in names
    assert any(n.startswith("model.vae_decoder_projector.decoder.mid") for n in names)


@torch.inference_mode()
def test_one_compiled_graph_serves_every_llm_layer_and_decoding():
    """Six layers, a prefill and eight decoded tokens: a handful of graphs, not one per layer
    index and cache length (which exhausted dynamo's recompile limit on the official preset)."""
    pipe = tiny_pipe(llm_layers=6)
    want = greedy(pipe, "What can you do?", 8)
    dynamo.reset()
    counters.clear()
    for layer in pipe.model.model.language_model.layers:
        layer.compile(backend="eager")
    got = greedy(pipe, "What can you do?", 8)
    graphs = counters["stats"]["unique_graphs"]
    dynamo.reset()
    assert torch.equal(got, want)
    assert 1 <= graphs <= 3, graphs


@torch.inference_mode()
def test_compiled_regions_give_the_eager_image_and_answer():
    pipe = tiny_pipe()
    kwargs = dict(num_inference_steps=2, guidance_scale=3.0, generator=0, output_type="pt")
    image = pipe("a red circle", **kwargs).images
    answer = greedy(pipe, "Hello", 4)
    dynamo.reset()
    compile_regions(pipe.model, backend="eager")
    torch.testing.assert_close(pipe("a red circle", **kwargs).images, image, atol=1e-5, rtol=0)
    assert torch.equal(greedy(pipe, "Hello", 4), answer)
    dynamo.reset()


@torch.inference_mode()
def test_channels_last_convolutions_give_the_same_image_and_checkpoint():
    pipe = tiny_pipe()
    state = {k: v.clone() for k, v in pipe.model.state_dict().items()}
    kwargs = dict(num_inference_steps=2, guidance_scale=3.0, generator=0, output_type="pt")
    image = pipe("a red circle", **kwargs).images
    changed = convolutions_channels_last(pipe.model)
    assert changed == ["model.vae_model", "model.vae_decoder_projector"]
    conv = pipe.model.model.vae_decoder_projector.decoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    torch.testing.assert_close(pipe("a red circle", **kwargs).images, image, atol=1e-5, rtol=0)
    after = pipe.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())


def static_greedy(pipe: CheersPipeline, question: str, tokens: int, **options) -> TextOutput:
    ids = pipe._chat_ids([{"role": "user", "content": question}])
    batch = left_pad(pipe._sequences([ids, ids[2:]], [[], []], [None, None]))
    prefix = prefill(pipe.model, batch, room=tokens)
    logits = pipe.model.logits(prefix.hidden[:, -1])
    args = (batch.valid, batch.lengths, prefix.length, logits)
    if options.pop("static", False):
        state = StaticDecodeState.after_prefill(pipe.model, prefix.cache, *args, **options)
        return decode_from(pipe.model, state, tokens, eos_id=-1, pad_id=0)
    return decode_text(pipe.model, prefix.cache, *args, tokens, eos_id=-1, pad_id=0)


@torch.inference_mode()
def test_static_shape_decoding_gives_the_tokens_of_growing_decoding():
    """Two left-padded rows, ten tokens: the same tokens and (up to rounding) logits, eagerly
    and compiled; the compiled step is one graph for every token."""
    pipe = tiny_pipe(llm_layers=3)
    want = static_greedy(pipe, "What can you do?", 10)
    eager = static_greedy(pipe, "What can you do?", 10, static=True)
    assert torch.equal(eager.tokens, want.tokens)
    for a, b in zip(eager.logits, want.logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    dynamo.reset()
    counters.clear()
    compiled = static_greedy(
        pipe, "What can you do?", 10, static=True, compile_options={"backend": "eager"}
    )
    graphs = counters["stats"]["unique_graphs"]
    dynamo.reset()
    assert torch.equal(compiled.tokens, want.tokens)
    assert graphs == 1


@torch.inference_mode()
def test_static_shape_decoding_refuses_to_run_past_its_cache():
    pipe = tiny_pipe()
    ids = pipe._chat_ids([{"role": "user", "content": "Hello"}])
    batch = left_pad(pipe._sequences([ids], [[]], [None]))
    prefix = prefill(pipe.model, batch, room=2)
    logits = pipe.model.logits(prefix.hidden[:, -1])
    state = StaticDecodeState.after_prefill(
        pipe.model, prefix.cache, batch.valid, batch.lengths, prefix.length, logits
    )
    with pytest.raises(ValueError, match="KV cache overflow"):
        decode_from(pipe.model, state, 4, eos_id=-1, pad_id=0)
