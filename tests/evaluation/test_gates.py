"""Gate heat-maps: the recorder against the gate computed by hand, the strip's layout, the raw
tensor's round trip and ``cheers generate --gate-maps``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file

from cheers.config import CheersConfig
from cheers.errors import CheersError
from cheers.evaluation.gates import (
    GateMaps,
    GateRecorder,
    gate_strip,
    shown_steps,
    strip_size,
    write_gate_maps,
)
from cheers.model import Cheers

LOW, HIGH = (68, 1, 84), (253, 231, 37)  # the ends of the viridis scale


def _tiny_model() -> Cheers:
    torch.manual_seed(0)
    model = Cheers(CheersConfig.tiny(vocab_size=512)).init_weights().eval()
    # The gate's last layer starts at zero (g = 0 everywhere); give it weights to see.
    torch.nn.init.normal_(model.model.hi_gate.gate[2].weight, std=0.5)
    torch.nn.init.normal_(model.model.hi_gate.gate[2].bias, std=0.5)
    return model


def test_recorded_gates_equal_the_gate_computed_by_hand():
    model = _tiny_model()
    cfg = model.config
    b, p, g = 3, model.tokens_per_image, cfg.grid_size
    hidden = torch.randn(b, p, cfg.text_config.hidden_size)
    patches = torch.randn(b, g * g, cfg.vision_representation_config.hidden_size)
    with torch.no_grad(), GateRecorder(model) as rec:
        out = model.velocity(hidden, patches, torch.full((b,), 0.25))
        model.velocity(hidden, patches, torch.full((b,), 0.75))
    gate = model.model.hi_gate.gate
    low = out.hi_gate_low
    # g(low) = W2 · silu(W1 · low + b1) + b2, one scalar per token.
    by_hand = F.linear(F.silu(F.linear(low, gate[0].weight, gate[0].bias)), gate[2].weight)
    by_hand = (by_hand + gate[2].bias).squeeze(-1)
    assert len(rec.values) == 2 and rec.times == [0.25, 0.75]
    torch.testing.assert_close(rec.values[0], by_hand)
    assert by_hand.abs().max() > 0.1  # not the zero gate of a fresh model
    # The gate the recorder saw is the one the model used: LayerNorm(low + g·high).
    norm = model.model.hi_gate.layer_norm
    torch.testing.assert_close(norm(low + rec.values[0][..., None] * patches), out.hi_gate_out)
    maps = rec.maps()
    assert maps.gates.shape == (2, b, g, g)
    # Row-major token grid: token k sits at (k // G, k % G).
    assert maps.gates[0, 1, 1, 0] == rec.values[0][1, g]
    # Hooks are gone after the block.
    with torch.no_grad():
        model.velocity(hidden, patches, torch.full((b,), 0.5))
    assert len(rec.values) == 2


def test_guided_generation_records_conditional_rows_first_and_every_step():
    from cheers.loading import default_model_path, load_pipeline

    pipe = load_pipeline(str(default_model_path()), "float32", "cpu")
    prompts = ["a red circle", "a blue square"]
    options = {"num_inference_steps": 3, "generator": 0, "output_type": "latent"}
    with GateRecorder(pipe) as guided:
        pipe.text_to_image(prompts, **options)
    with GateRecorder(pipe) as plain:
        pipe.text_to_image(prompts, guidance_scale=None, **options)
    assert len(guided.values) == 3 and all(v.shape[0] == 4 for v in guided.values)  # 2 + 2
    assert all(v.shape[0] == 2 for v in plain.values)
    # At the first step both runs see the same noise: the conditional rows come first.
    torch.testing.assert_close(guided.values[0][:2], plain.values[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(guided.values[0][2:], plain.values[0], atol=1e-3)
    assert guided.maps(images=2).gates.shape == (3, 2, 8, 8)
    with pytest.raises(CheersError, match="fewer than 5 rows"):
        guided.maps(images=5)
    with pytest.raises(CheersError, match="no gate values"):
        GateRecorder(pipe).maps()


def _maps() -> GateMaps:
    gates = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]], [[[4.0, 5.0], [6.0, 7.0]]],
                          [[[8.0, 9.0], [10.0, 11.0]]]])  # fmt: skip
    return GateMaps(gates, torch.tensor([0.0, 0.5, 1.0]))


def test_strip_layout_size_and_colours():
    maps = _maps()  # 3 steps, 1 image, 2×2 tokens; values 0..11
    tile, gap = 8, 2
    strip = gate_strip(maps, [Image.new("RGB", (5, 5), (255, 0, 0))], tile=tile, gap=gap)
    cols = 1 + 3  # the image, then a tile per step
    assert strip.size == strip_size(1, 3, tile, gap, True)
    assert strip.size == (gap + cols * (tile + gap), 12 + (tile + gap) + gap + 10 + 12)
    px = np.asarray(strip)
    y = 12  # below the t labels
    assert tuple(px[y + 3, gap + 3]) == (255, 0, 0)  # the image goes first
    first = gap + (tile + gap)  # step 0's tile: value 0 (the lowest) at token (0, 0)
    last = gap + 3 * (tile + gap)  # step 2's tile: value 11 (the highest) at token (1, 1)
    assert tuple(px[y, first]) == LOW and tuple(px[y + tile // 2 - 1, first + tile // 2 - 1]) == LOW
    assert tuple(px[y + tile - 1, last + tile - 1]) == HIGH
    # Each token is a (tile/2)-pixel square of one colour.
    block = px[y + tile // 2 :, last + tile // 2 : last + tile][: tile // 2]
    assert (block == HIGH).all()
    # The colour bar runs from the lowest to the highest colour.
    bar = y + (tile + gap) + gap
    assert tuple(px[bar + 1, gap]) == LOW and tuple(px[bar + 1, strip.width - gap - 1]) == HIGH


def test_many_steps_are_thinned_evenly_and_the_raw_tensor_round_trips(tmp_path):
    assert shown_steps(80, 16)[0] == 0 and shown_steps(80, 16)[-1] == 79
    assert len(shown_steps(80, 16)) == 16 and shown_steps(5, 16) == [0, 1, 2, 3, 4]
    maps = _maps()
    png, raw = write_gate_maps(maps, tmp_path / "g", max_tiles=2, tile=4, gap=1)
    with Image.open(png) as strip:
        assert strip.size == strip_size(1, 2, 4, 1, False)
    back = GateMaps.load(raw)
    assert torch.equal(back.gates, maps.gates) and torch.equal(back.t, maps.t)
    assert set(load_file(str(raw))) == {"gates", "t"}


def test_generate_gate_maps_flag(tmp_path, capsys):
    from cheers.cli import main
    from cheers.loading import default_model_path

    out, gates = tmp_path / "img.png", tmp_path / "gates"
    argv = ["generate", "a red circle", "--model", str(default_model_path()), "--steps", "2"]
    argv += ["--seed", "0", "--no-progress", "--out", str(out), "--gate-maps", str(gates)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out), str(gates / "gates.png"), str(gates / "gates.safetensors")]
    maps = GateMaps.load(gates / "gates.safetensors")
    assert maps.gates.shape == (2, 1, 8, 8) and torch.isfinite(maps.gates).all()
    assert maps.t[0] == 0.0
    with Image.open(gates / "gates.png") as strip:
        assert strip.size == strip_size(1, 2, 64, 4, True)
