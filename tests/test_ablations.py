"""The ablation switches of the config (docs/ablations.md): each does what it says, and only that.

- ``detail_injection = False``: the gate adds nothing; the velocity ignores the patch embeddings.
- ``token_merge = 1``: no compression, one LLM token per ViT patch.
- ``vit_input = "latents"``: no decoder projector; the ViT patchifies the latent grid itself.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from cheers import CheersPipeline
from cheers.checkpoint import load_model, save_model
from cheers.config import ABLATIONS, CheersConfig
from cheers.data.loader import DataSource, TrainingData
from cheers.errors import ConfigError
from cheers.layouts import feature_map_to_tokens
from cheers.model import Cheers
from cheers.shapes.render import Scene, ShapeObject, render
from cheers.tokenizer import CheersTokenizer
from cheers.training.objective import Objective, make_batch
from parity_fixtures import OFFICIAL

CANVAS = 32
VARIANTS = {name: switches for name, switches in ABLATIONS.items() if switches}
# Not ablations of the paper, but switches that must train, save, load and sample the same way.
VARIANTS["sample_prediction"] = {"flow_prediction": "sample"}
VARIANTS["skip_prediction"] = {"flow_prediction": "skip"}


def _config(**switches) -> CheersConfig:
    return dataclasses.replace(CheersConfig.tiny(image_size=CANVAS), **switches).validate()


def _model(**switches) -> Cheers:
    torch.manual_seed(0)
    return Cheers(_config(**switches)).init_weights().eval()


def _open_gate(model: Cheers) -> None:
    with torch.no_grad():
        model.model.hi_gate.gate[2].weight.normal_(std=0.5)
        model.model.hi_gate.gate[2].bias.fill_(1.0)


def test_defaults_are_the_paper_and_switches_round_trip(tmp_path):
    cfg = CheersConfig.official()
    assert (cfg.detail_injection, cfg.token_merge, cfg.vit_input) == (True, 2, "pixels")
    data = cfg.to_dict()
    assert not {"detail_injection", "token_merge", "vit_input"} & set(data)
    for switches in VARIANTS.values():
        cfg = _config(**switches)
        cfg.save(tmp_path)
        written = json.loads((tmp_path / "config.json").read_text())
        assert {k: written[k] for k in switches} == switches
        assert CheersConfig.from_json(tmp_path) == cfg


@pytest.mark.parametrize(
    ("switches", "message"),
    [
        ({"token_merge": 0}, "token_merge"),
        ({"token_merge": 3}, "divisible by token_merge"),
        ({"vit_input": "pixel"}, "vit_input must be one of"),
    ],
)
def test_bad_switches_are_rejected(switches, message):
    data = {**CheersConfig.tiny(image_size=CANVAS).to_dict(), **switches}
    with pytest.raises(ConfigError, match=message):
        CheersConfig.from_dict(data)
    with pytest.raises(ConfigError, match="must be str"):
        CheersConfig.from_dict({**data, "vit_input": 1})


def test_without_injection_the_velocity_ignores_patch_embeddings():
    """Same weights, gate open: with injection the detail input matters; without it the
    velocity equals the injected one with the gate closed (LayerNorm(low + 0·high))."""
    on, off = _model(), _model(detail_injection=False)
    _open_gate(on)
    off.load_state_dict(on.state_dict())
    p, grid, width = on.tokens_per_image, on.grid_size, 64
    hidden, t = torch.randn(2, p, on.config.text_config.hidden_size), torch.tensor([0.2, 0.7])
    embeds_a, embeds_b = torch.randn(2, grid * grid, width), torch.randn(2, grid * grid, width)
    with torch.no_grad():
        off_a = off.velocity(hidden, embeds_a, t).velocity
        off_b = off.velocity(hidden, embeds_b, t).velocity
        on_a = on.velocity(hidden, embeds_a, t).velocity
        on.model.hi_gate.gate[2].weight.zero_()
        on.model.hi_gate.gate[2].bias.zero_()
        closed = on.velocity(hidden, embeds_a, t).velocity
    torch.testing.assert_close(off_a, off_b)
    torch.testing.assert_close(off_a, closed)
    assert not torch.allclose(off_a, on_a)


def test_no_merge_gives_one_token_per_patch():
    model = _model(token_merge=1)
    grid, vit = model.grid_size, model.config.vision_representation_config.hidden_size
    assert model.tokens_per_image == grid * grid == 4 * _model().tokens_per_image
    assert model.model.und_projector.mlp[0].in_features == vit
    assert model.model.gen_projector.diffusion_head_b.linear.out_features == vit
    latent = torch.randn(2, model.config.latent_channels, grid, grid)
    with torch.no_grad():
        out = model.image_tokens(latent)
        # Without a merge the projector acts on each patch alone: token k from patch k only.
        by_patch = model.model.und_projector(out.vit_hidden[:, 5:6], 1)
        velocity = model.velocity(out.tokens, out.patch_embeds, torch.tensor([0.5, 0.5]))
    assert out.tokens.shape == (2, grid * grid, model.config.text_config.hidden_size)
    torch.testing.assert_close(out.tokens[:, 5:6], by_patch)
    assert velocity.velocity.shape == latent.shape


def test_latents_to_vit_patchifies_the_latent_grid():
    model = _model(vit_input="latents")
    assert model.model.vae_decoder_projector is None
    assert not any(k.startswith("model.vae_decoder_projector.") for k in model.state_dict())
    grid, z4 = model.grid_size, model.config.latent_channels
    embeddings = model.model.vision_representation.embeddings
    assert embeddings.patch_embedding.weight.shape[1:] == (z4, 1, 1)
    latent = torch.randn(2, z4, grid, grid)
    with torch.no_grad():
        out = model.image_tokens(latent)
    # Hand-computed: a 1×1 convolution of each latent cell plus its position embedding.
    weight = embeddings.patch_embedding.weight[:, :, 0, 0]
    cells = feature_map_to_tokens(latent)
    expected = (
        cells @ weight.T + embeddings.patch_embedding.bias + embeddings.position_embedding.weight
    )
    assert out.pixel_hat is None
    torch.testing.assert_close(out.patch_embeds, expected)
    assert out.tokens.shape == (2, model.tokens_per_image, model.config.text_config.hidden_size)


@pytest.fixture(scope="module")
def tokenizer() -> CheersTokenizer:
    return CheersTokenizer.from_folder(OFFICIAL)


@pytest.fixture(scope="module")
def batch_source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ablation_data")
    render(Scene((ShapeObject("circle", "red", 16.0, 16.0, 10.0),), canvas=CANVAS)).save(
        folder / "red_circle.png"
    )
    rows = [
        ("<im_start><image><im_end>\nWhat color is the circle?", "red"),
        ("a red circle", "<im_start><image_gen><im_end>"),
    ]
    lines = [
        json.dumps(
            {
                "id": str(i),
                "image": "red_circle.png",
                "conversations": [
                    {"from": "human", "value": human},
                    {"from": "gpt", "value": gpt},
                ],
            }
        )
        for i, (human, gpt) in enumerate(rows)
    ]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_trains_saves_loads_and_runs(variant, tokenizer, batch_source, tmp_path):
    model = _model(**VARIANTS[variant]).train()
    with torch.no_grad():  # zero-initialised layers (adaLN, gate) would block gradients
        for param in model.parameters():
            if not param.any():
                param.normal_(std=0.05)
    data = TrainingData([DataSource(str(batch_source))], tokenizer, model.tokens_per_image, 256)
    batch = make_batch(
        list(enumerate(data.examples)), tokenizer, model.config, seed=0, guidance_dropout=0.0
    )
    loss = Objective(model)(batch)
    (loss.text / loss.text_count + loss.image / loss.image_count).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if not n.startswith("model.vae_model.")}
    unused = sorted(n for n, g in grads.items() if g is None or not g.any())
    # Parameters without a gradient: the ViT pooling head (never used), and the gate's MLP when
    # nothing is injected.
    allowed = ("model.vision_representation.head.",)
    if variant == "no_injection":
        allowed += ("model.hi_gate.gate.",)
    assert [n for n in unused if not n.startswith(allowed)] == []
    if variant == "no_injection":
        assert any(n.startswith("model.hi_gate.gate.") for n in unused)

    save_model(model.eval(), tmp_path)
    again = load_model(tmp_path, dtype=torch.float32)
    assert again.config == model.config
    kwargs = {"num_inference_steps": 2, "guidance_scale": 2.0, "generator": 0, "output_type": "pt"}
    reloaded = CheersPipeline(again, tokenizer)
    images = reloaded("a red circle", **kwargs).images
    assert images.shape == (1, 3, CANVAS, CANVAS)
    torch.testing.assert_close(
        images, CheersPipeline(model, tokenizer)("a red circle", **kwargs).images
    )
    answer = reloaded.understand(
        batch_source.parent / "red_circle.png", "What color is it?", max_new_tokens=2
    )
    assert isinstance(answer, str)
