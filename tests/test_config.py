"""The config dataclasses, the official preset and the checkpoint's tensor names and shapes."""

from __future__ import annotations

import json

import pytest
import torch

from cheers.config import CheersConfig
from cheers.errors import ConfigError
from cheers.model import Cheers
from parity_fixtures import OFFICIAL


def test_official_preset_equals_released_config_plus_spec_defaults():
    from_file = CheersConfig.from_json(OFFICIAL / "config.json")
    assert from_file.to_dict() == CheersConfig.official().to_dict()
    # Values the released file leaves out (docs/architecture.md §11).
    assert from_file.text_config.num_hidden_layers == 28
    assert from_file.text_config.rope_theta == 1e6
    assert from_file.vae_encoder_config.ch_mult == (1, 2, 4, 4)
    assert from_file.vae_decoder_config.ch == 128
    assert from_file.semantic_head_layers == 7 and from_file.detail_head_layers == 3
    assert from_file.tokens_per_image == 256 and from_file.grid_size == 32


def test_official_model_has_exactly_the_checkpoint_names():
    index = json.loads((OFFICIAL / "model.safetensors.index.json").read_text())
    with torch.device("meta"):
        model = Cheers(CheersConfig.official())
    state = model.state_dict()
    assert len(state) == 1321
    assert set(state) == set(index["weight_map"])


# Shapes computed by hand from the numbers of docs/architecture.md §11 (head_dim 128 for the LLM,
# 72 for the ViT-width detail head; 2 KV heads everywhere).
OFFICIAL_SHAPES = {
    "lm_head.weight": (151936, 1536),
    "model.language_model.embed_tokens.weight": (151936, 1536),
    "model.language_model.layers.27.self_attn.q_proj.weight": (1536, 1536),
    "model.language_model.layers.27.self_attn.k_proj.weight": (256, 1536),
    "model.language_model.layers.27.self_attn.k_proj.bias": (256,),
    "model.language_model.layers.0.self_attn.o_proj.weight": (1536, 1536),
    "model.language_model.layers.0.mlp.gate_proj.weight": (8960, 1536),
    "model.language_model.layers.0.mlp.down_proj.weight": (1536, 8960),
    "model.language_model.norm.weight": (1536,),
    "model.vision_representation.embeddings.patch_embedding.weight": (1152, 3, 16, 16),
    "model.vision_representation.embeddings.position_embedding.weight": (1024, 1152),
    "model.vision_representation.encoder.layers.26.mlp.fc1.weight": (4304, 1152),
    "model.vision_representation.head.probe": (1, 1, 1152),
    "model.vision_representation.head.attention.in_proj_weight": (3456, 1152),
    "model.und_projector.layernorm.weight": (1152,),
    "model.und_projector.mlp.0.weight": (4608, 4608),
    "model.und_projector.mlp.2.weight": (1536, 4608),
    "model.time_embed.mlp_1.0.weight": (1536, 256),
    "model.time_embed.mlp_2.0.weight": (1152, 256),
    "model.time_embed.mlp_2.2.weight": (1152, 1152),
    "model.gen_projector.diffusion_head_a.6.adaLN_modulation.1.weight": (9216, 1536),
    "model.gen_projector.diffusion_head_a.0.attn.k_proj.weight": (256, 1536),
    "model.gen_projector.diffusion_head_a.0.mlp.gate_proj.weight": (6144, 1536),
    "model.gen_projector.diffusion_head_b.adaLN_modulation.1.weight": (3072, 1536),
    "model.gen_projector.diffusion_head_b.linear.weight": (4608, 1536),
    "model.hi_gate.gate.0.weight": (1152, 1152),
    "model.hi_gate.gate.2.weight": (1, 1152),
    "model.hi_projector.diffusion_head_a.2.adaLN_modulation.1.weight": (6912, 1152),
    "model.hi_projector.diffusion_head_a.0.attn.q_proj.weight": (1152, 1152),
    "model.hi_projector.diffusion_head_a.0.attn.k_proj.weight": (144, 1152),
    "model.hi_projector.diffusion_head_a.0.mlp.down_proj.weight": (1152, 4608),
    "model.hi_projector.diffusion_head_b.linear.weight": (128, 1152),
    "model.vae_model.encoder.conv_in.weight": (128, 3, 3, 3),
    "model.vae_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
    "model.vae_model.encoder.down.2.block.1.conv2.weight": (512, 512, 3, 3),
    "model.vae_model.encoder.down.2.downsample.conv.weight": (512, 512, 3, 3),
    "model.vae_model.encoder.conv_out.weight": (64, 512, 3, 3),
    "model.vae_model.encoder.quant_conv.weight": (64, 64, 1, 1),
    "model.vae_model.bn.running_mean": (128,),
    "model.vae_model.bn.num_batches_tracked": (),
    "model.vae_model.decoder.post_quant_conv.weight": (32, 32, 1, 1),
    "model.vae_model.decoder.conv_in.weight": (512, 32, 3, 3),
    "model.vae_model.decoder.up.1.block.0.nin_shortcut.weight": (256, 512, 1, 1),
    "model.vae_model.decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
    "model.vae_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
    "model.vae_decoder_projector.decoder.conv_out.weight": (3, 128, 3, 3),
    "model.vae_decoder_projector.bn.running_var": (128,),
}


def test_official_model_shapes_match_spec():
    index = json.loads((OFFICIAL / "model.safetensors.index.json").read_text())
    with torch.device("meta"):
        model = Cheers(CheersConfig.official())
    state = model.state_dict()
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    # Every tensor together, stored in bf16 (lm_head separately), is the index's total size.
    stored = sum(t.numel() * (8 if t.dtype == torch.int64 else 2) for t in state.values())
    assert abs(stored - index["metadata"]["total_size"]) / stored < 1e-6
    unique = sum(p.numel() for p in model.parameters())
    assert round(unique / 1e9, 2) == 2.57


def test_tiny_preset_round_trips_through_json(tmp_path):
    cfg = CheersConfig.tiny()
    cfg.save(tmp_path)
    again = CheersConfig.from_json(tmp_path)
    assert again == cfg
    assert json.loads((tmp_path / "config.json").read_text())["semantic_head_layers"] == 2


def test_released_format_fields_are_written_out(tmp_path):
    data = CheersConfig.official().to_dict()
    assert data["text_config"]["num_hidden_layers"] == 28
    assert data["vision_representation_config"]["num_patches"] == 1024
    assert "semantic_head_layers" not in data  # defaults stay out of the released format
    assert data["auto_map"]["AutoConfig"] == "configuration_umm.UMMConfig"


def _broken(**changes) -> dict:
    data = CheersConfig.tiny().to_dict()
    del data["vision_representation_config"]["num_patches"]  # derived; tested on its own
    for path, value in changes.items():
        section, key = path.split("__")
        data[section][key] = value
    return data


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vae_decoder_config__ch": 96}, "must equal 4·z_channels"),
        ({"vae_encoder_config__ch": 48}, "divisible by 32"),
        ({"vae_encoder_config__ch_mult": [1, 1, 1]}, "must equal the ViT patch_size"),
        ({"vision_representation_config__image_size": 48}, "divisible by token_merge"),
        ({"vision_representation_config__image_size": 50}, "not a multiple of patch_size"),
        ({"text_config__num_key_value_heads": 3}, "num_key_value_heads"),
        ({"vision_representation_config__num_attention_heads": 3}, "not divisible"),
        ({"vae_decoder_config__z_channels": 16}, "z_channels"),
        ({"text_config__hidden_size": "64"}, "must be an integer"),
        ({"text_config__rms_norm_eps": "small"}, "must be a number"),
        ({"vae_encoder_config__ch_mult": "1,2"}, "list of integers"),
        ({"text_config__num_hidden_layers": 0}, "must be positive"),
        ({"vision_representation_config__num_patches": 7}, "num_patches"),
        ({"text_config__use_sliding_window": True}, "sliding_window"),
    ],
)
def test_broken_couplings_are_rejected_with_the_reason(changes, message):
    with pytest.raises(ConfigError, match=message):
        CheersConfig.from_dict(_broken(**changes))


def test_missing_or_invalid_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"No config\.json"):
        CheersConfig.from_json(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        CheersConfig.from_json(tmp_path)
    with pytest.raises(ConfigError, match="must be a JSON object"):
        CheersConfig.from_dict([1, 2])  # type: ignore[arg-type]
