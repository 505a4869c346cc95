"""The speed transforms: regional compilation (one graph for all LLM layers, the same answers)
and channels-last convolutions (the same images and checkpoint)."""

from __future__ import annotations

import torch
import torch._dynamo as dynamo
from torch._dynamo.utils import counters

from cheers.config import CheersConfig
from cheers.generation import decode_text, prefill
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline
from cheers.sequence import left_pad
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
