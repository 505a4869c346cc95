"""The speed transforms: regional compilation (one graph for all LLM layers, the same answers)
and channels-last convolutions (the same images and checkpoint)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

from cheers.config import CheersConfig
from cheers.errors import CheersError
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline
from cheers.pipeline.loops import decode_from, prefill, start_decoding
from cheers.pipeline.static_decoding import StaticDecoder, StaticDecoding
from cheers.pipeline.text_requests import TextRequest
from cheers.sequence import Batch, left_pad
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
    ids = pipe.inputs.chat_ids([{"role": "user", "content": question}])
    batch = left_pad(pipe.inputs.sequences([ids], [[]], [None]))
    return greedy_rows(pipe, batch, tokens).tokens


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


def two_rows(pipe: CheersPipeline, question: str) -> Batch:
    """The question, and the same without its first two tokens: two left-padded rows."""
    ids = pipe.inputs.chat_ids([{"role": "user", "content": question}])
    return left_pad(pipe.inputs.sequences([ids, ids[2:]], [[], []], [None, None]))


def greedy_rows(pipe: CheersPipeline, batch: Batch, tokens: int, decoding=start_decoding):
    _, state = decoding(pipe.model, batch, tokens)
    return decode_from(pipe.model, state, tokens, eos_id=-1, pad_id=0)


@torch.inference_mode()
def test_static_shape_decoding_gives_the_tokens_of_growing_decoding():
    """Two left-padded rows, ten tokens, two requests of different lengths through the same
    kept cache: the tokens and (up to rounding) logits of growing decoding, eagerly and
    compiled; compiled, one graph serves every token of both requests, and both run on the
    same cache, mask and slot memory."""
    pipe = tiny_pipe(llm_layers=3)
    requests = [two_rows(pipe, "What can you do?"), two_rows(pipe, "Hello, who are you today?")]
    assert requests[0].valid.shape[1] != requests[1].valid.shape[1]
    wants = [greedy_rows(pipe, batch, 10) for batch in requests]
    eager = StaticDecoding(max_length=64)
    for batch, want in zip(requests, wants, strict=True):
        got = greedy_rows(pipe, batch, 10, eager)
        assert torch.equal(got.tokens, want.tokens)
        for a, b in zip(got.logits, want.logits, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    dynamo.reset()
    counters.clear()
    compiled = StaticDecoding(max_length=64, compile_options={"backend": "eager"})
    addresses = set()  # a CUDA graph replays on the memory it was recorded with
    for batch, want in zip(requests, wants, strict=True):
        _, state = compiled(pipe.model, batch, 10)
        tensors = (*state.cache.keys, *state.cache.values, state.mask, state.slot)
        addresses.add(tuple(t.data_ptr() for t in tensors))
        got = decode_from(pipe.model, state, 10, eos_id=-1, pad_id=0)
        assert torch.equal(got.tokens, want.tokens)
    graphs = counters["stats"]["unique_graphs"]
    dynamo.reset()
    assert graphs == 1
    assert len(addresses) == 1


@torch.inference_mode()
def test_one_kept_cache_serves_every_batch_size():
    """Batches of 2, then 1, then 3 rows: the tokens of growing decoding each time; the batch
    of 1 decodes on the first row of the 2-row cache, the batch of 3 replaces it."""
    pipe = tiny_pipe()
    ids = pipe.inputs.chat_ids([{"role": "user", "content": "What can you do?"}])
    decoding = StaticDecoding(max_length=64)
    storage = []
    for rows in (2, 1, 3):
        batch = left_pad(
            pipe.inputs.sequences([ids[k:] for k in range(rows)], [[]] * rows, [None] * rows)
        )
        want = greedy_rows(pipe, batch, 6)
        _, state = decoding(pipe.model, batch, 6)
        assert state.cache.batch_size == rows
        storage.append((decoding._cache.batch_size, state.cache.keys[0].data_ptr()))
        got = decode_from(pipe.model, state, 6, eos_id=-1, pad_id=0)
        assert torch.equal(got.tokens, want.tokens)
    assert storage[0] == storage[1] and storage[2][0] == 3
    assert sorted(decoding._decoders) == [3]  # the new cache dropped the old decoders


@torch.inference_mode()
def test_pipeline_static_decoding_gives_the_same_answers():
    """chat() and answer() with static decoding enabled answer as without it, also for a
    request longer than the kept cache (which decodes with growing shapes)."""
    pipe = tiny_pipe()
    questions = ["Hello", "What colors do you know?"]
    requests = [TextRequest([{"role": "user", "content": q}], max_new_tokens=6) for q in questions]
    want_chat = pipe.chat(questions, max_new_tokens=6, generator=0)
    want_answers = [a.token_ids for a in pipe.answer(requests)]
    for max_length in (256, 8):  # kept cache; too short, so every request falls back
        decoding = pipe.enable_static_decoding(max_length=max_length)
        assert pipe.chat(questions, max_new_tokens=6, generator=0) == want_chat
        assert [a.token_ids for a in pipe.answer(requests)] == want_answers
        assert len(decoding._decoders) == (1 if max_length == 256 else 0)
    pipe.disable_static_decoding()
    assert pipe.text_decoding is start_decoding and not decoding._decoders


@torch.inference_mode()
def test_static_shape_decoding_refuses_to_run_past_its_cache():
    pipe = tiny_pipe()
    ids = pipe.inputs.chat_ids([{"role": "user", "content": "Hello"}])
    batch = left_pad(pipe.inputs.sequences([ids], [[]], [None]))
    decoder = StaticDecoder(pipe.model, pipe.model.new_kv_cache(1, batch.valid.shape[1] + 2))
    prefix = prefill(pipe.model, batch, room=2, cache=decoder.cache)
    logits = pipe.model.logits(prefix.hidden[:, -1])
    state = decoder.begin(batch.valid, batch.lengths, prefix.length, logits)
    with pytest.raises(ValueError, match="KV cache overflow"):
        decode_from(pipe.model, state, 4, eos_id=-1, pad_id=0)
    with pytest.raises(ValueError, match=r"needs 1 rows of \d+ \+ 3"):
        prefill(pipe.model, batch, room=3, cache=decoder.cache)


@torch.inference_mode()
def test_pipeline_compile_keeps_the_outputs():
    """pipe.compile(): the blocks compiled, static decoding on, the same image (up to
    rounding) and answer; refused under CPU offload, and offload refused after it."""
    pipe = tiny_pipe()
    kwargs = dict(num_inference_steps=2, guidance_scale=3.0, generator=0, output_type="pt")
    image = pipe("a red circle", **kwargs).images
    answer = pipe.chat("What can you do?", max_new_tokens=5, generator=0)
    dynamo.reset()
    names = pipe.compile(decoding_length=128, backend="eager")
    try:
        with pytest.raises(CheersError, match="cannot follow compile"):
            pipe.enable_model_cpu_offload("cpu")
        assert names == list(regions(pipe.model))
        assert isinstance(pipe.text_decoding, StaticDecoding)
        assert pipe.text_decoding.max_length == 128
        torch.testing.assert_close(pipe("a red circle", **kwargs).images, image, atol=1e-5, rtol=0)
        assert pipe.chat("What can you do?", max_new_tokens=5, generator=0) == answer
    finally:
        dynamo.reset()
    offloaded = tiny_pipe()
    offloaded.enable_model_cpu_offload("cpu")
    with pytest.raises(CheersError, match="offload"):
        offloaded.compile(backend="eager")
