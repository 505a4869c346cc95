"""Initialising Cheers from component checkpoints (Qwen2, SigLIP, FLUX-style VAE).

Each test writes a small component checkpoint in its published format (Hugging Face names and
config.json, FLUX key names), loads it into a freshly initialised model and compares with the
values written, and with the outputs of the model the values came from.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cheers.config import CheersConfig
from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.training.components import (
    LoadReport,
    init_from_components,
    load_language_model,
    load_vae,
    load_vision_model,
)

LLM = "model.language_model."
VIT = "model.vision_representation."
VAE = "model.vae_model."
PROJ = "model.vae_decoder_projector."
VOCAB = 1000


def _config(**text: object) -> CheersConfig:
    cfg = CheersConfig.tiny(image_size=64, vocab_size=VOCAB)
    if text:
        cfg = dataclasses.replace(cfg, text_config=dataclasses.replace(cfg.text_config, **text))
    return cfg


def _model(seed: int, config: CheersConfig | None = None) -> Cheers:
    torch.manual_seed(seed)
    model = Cheers(config or _config()).eval()
    return model


@pytest.fixture(scope="module")
def source() -> Cheers:
    """The model the component checkpoints are exported from."""
    model = _model(0)
    with torch.no_grad():
        # Non-trivial latent statistics, so a lost or swapped buffer shows.
        model.model.vae_model.bn.running_mean.normal_()
        model.model.vae_model.bn.running_var.uniform_(0.5, 2.0)
        model.model.vae_model.bn.num_batches_tracked.fill_(7)
        # FLUX has no quant convolutions; the source behaves like FLUX when they are identity.
        for conv in (
            model.model.vae_model.encoder.quant_conv,
            model.model.vae_model.decoder.post_quant_conv,
        ):
            conv.weight.copy_(torch.eye(conv.weight.shape[0])[:, :, None, None])
            conv.bias.zero_()
    return model


# ------------------------------------------------------------------- checkpoint writers
def _clone(model: Cheers, prefix: str, new_prefix: str) -> dict[str, torch.Tensor]:
    return {
        new_prefix + k.removeprefix(prefix): v.detach().clone()
        for k, v in model.state_dict().items()
        if k.startswith(prefix)
    }


def _qwen2_tensors(model: Cheers) -> dict[str, torch.Tensor]:
    # Qwen2ForCausalLM names; a tied checkpoint stores no lm_head.weight.
    return _clone(model, LLM, "model.")


def _qwen2_config(model: Cheers, **overrides: object) -> dict[str, object]:
    text = model.config.text_config
    config: dict[str, object] = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": text.hidden_size,
        "intermediate_size": text.intermediate_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "vocab_size": text.vocab_size,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    config.update(overrides)
    return config


def _write_folder(
    folder: Path,
    tensors: dict[str, torch.Tensor],
    config: dict[str, object] | None,
    shards: int = 1,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    if shards == 1:
        save_file(tensors, str(folder / "model.safetensors"))
        return folder
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        shard = {k: tensors[k] for k in names[i::shards]}
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(shard, str(folder / file))
        weight_map.update(dict.fromkeys(shard, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def _siglip_tensors(model: Cheers, head: bool = True) -> dict[str, torch.Tensor]:
    tensors = _clone(model, VIT, "vision_model.")
    if not head:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("vision_model.head.")}
    return tensors


def _siglip_config(model: Cheers, full: bool = True, **overrides: object) -> dict[str, object]:
    vit = model.config.vision_representation_config
    vision: dict[str, object] = {
        "hidden_size": vit.hidden_size,
        "intermediate_size": vit.intermediate_size,
        "num_hidden_layers": vit.num_hidden_layers,
        "num_attention_heads": vit.num_attention_heads,
        "image_size": vit.image_size,
        "patch_size": vit.patch_size,
        "model_type": "siglip_vision_model",
    }
    vision.update(overrides)
    if not full:
        return {"architectures": ["SiglipVisionModel"], **vision}
    return {
        "architectures": ["SiglipModel"],
        "model_type": "siglip",
        "text_config": {"model_type": "siglip_text_model", "vocab_size": 32},
        "vision_config": vision,
    }


def _vae_tensors(model: Cheers, bn: bool = True) -> dict[str, torch.Tensor]:
    """FLUX naming: encoder.* / decoder.* / bn.*, without the quant convolutions."""
    tensors = _clone(model, VAE, "")
    quant = ("encoder.quant_conv.", "decoder.post_quant_conv.")
    tensors = {k: v for k, v in tensors.items() if not k.startswith(quant)}
    if not bn:
        tensors = {k: v for k, v in tensors.items() if not k.startswith("bn.")}
    return tensors


def _state(model: Cheers) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_loaded(model: Cheers, written: dict[str, torch.Tensor], prefix: str, src: str) -> None:
    state = model.state_dict()
    for key, value in written.items():
        target = prefix + key.removeprefix(src)
        assert torch.equal(state[target], value.to(state[target].dtype)), target


# ------------------------------------------------------------------------ language model
def _llm_hidden(model: Cheers, embeds: torch.Tensor) -> torch.Tensor:
    t = embeds.shape[1]
    positions = torch.arange(t)[None]
    causal = torch.ones(t, t, dtype=torch.bool).tril()[None]
    with torch.no_grad():
        return model.transformer(embeds, positions, causal)


def test_language_model_tensors_and_outputs(source, tmp_path):
    written = _qwen2_tensors(source)
    folder = _write_folder(tmp_path / "qwen", written, _qwen2_config(source))
    model = _model(1)
    embed = f"{LLM}embed_tokens.weight"
    assert not torch.equal(model.state_dict()[embed], written["model.embed_tokens.weight"])

    report = load_language_model(model, folder)

    _assert_loaded(model, written, LLM, "model.")
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert report.loaded == len(written) + 1  # + the tied lm_head
    assert report.initialised == [] and report.ignored == []
    embeds = torch.randn(2, 7, source.config.text_config.hidden_size)
    torch.testing.assert_close(
        _llm_hidden(model, embeds), _llm_hidden(source, embeds), rtol=0, atol=1e-6
    )
    ids = torch.randint(0, VOCAB, (1, 5))
    with torch.no_grad():
        torch.testing.assert_close(
            model.logits(model.embed(ids)), source.logits(source.embed(ids)), rtol=0, atol=0
        )


def test_language_model_sharded_bf16_with_stored_head(source, tmp_path):
    written = {k: v.to(torch.bfloat16) for k, v in _qwen2_tensors(source).items()}
    written["lm_head.weight"] = written["model.embed_tokens.weight"].clone()  # tied, stored
    written["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # old exports
    folder = _write_folder(tmp_path / "qwen", written, _qwen2_config(source), shards=3)
    assert len(list(folder.glob("model-*.safetensors"))) == 3
    model = _model(1)

    report = load_language_model(model, folder)

    del written["lm_head.weight"], written["model.layers.0.self_attn.rotary_emb.inv_freq"]
    _assert_loaded(model, written, LLM, "model.")  # converted to the model's float32
    assert model.dtype == torch.float32
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
    assert "lm_head.weight" in report.ignored
    assert any("kept tied" in note for note in report.notes)


def test_smaller_vocabulary_gets_mean_rows(source, tmp_path):
    written = _qwen2_tensors(source)
    rows = 900
    written["model.embed_tokens.weight"] = written["model.embed_tokens.weight"][:rows].clone()
    folder = _write_folder(tmp_path / "qwen", written, _qwen2_config(source, vocab_size=rows))
    model = _model(1)

    report = load_language_model(model, folder)

    weight = model.model.language_model.embed_tokens.weight.detach()
    stored = written["model.embed_tokens.weight"]
    assert torch.equal(weight[:rows], stored)
    mean = stored.mean(dim=0)
    torch.testing.assert_close(weight[rows:], mean.expand(VOCAB - rows, -1), rtol=0, atol=1e-7)
    assert report.initialised == [f"{LLM}embed_tokens.weight"]
    assert "rows 900..999" in str(report)


def test_untied_model_gets_a_copy_of_tied_embeddings(source, tmp_path):
    written = _qwen2_tensors(source)
    rows = 990
    written["model.embed_tokens.weight"] = written["model.embed_tokens.weight"][:rows].clone()
    folder = _write_folder(tmp_path / "qwen", written, _qwen2_config(source, vocab_size=rows))
    model = _model(1, _config(tie_word_embeddings=False))
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight

    report = load_language_model(model, folder)

    stored = written["model.embed_tokens.weight"]
    head = model.lm_head.weight.detach()
    assert torch.equal(head[:rows], stored)
    torch.testing.assert_close(head[rows:], stored.mean(0).expand(VOCAB - rows, -1))
    assert torch.equal(head, model.model.language_model.embed_tokens.weight.detach())
    assert model.lm_head.weight is not model.model.language_model.embed_tokens.weight
    assert sorted(report.initialised) == sorted([f"{LLM}embed_tokens.weight", "lm_head.weight"])
    assert any("starts as a copy" in note for note in report.notes)


def test_untied_checkpoint_into_untied_model(source, tmp_path):
    written = _qwen2_tensors(source)
    written["lm_head.weight"] = torch.randn_like(written["model.embed_tokens.weight"])
    config = _qwen2_config(source, tie_word_embeddings=False)
    folder = _write_folder(tmp_path / "qwen", written, config)
    model = _model(1, _config(tie_word_embeddings=False))
    load_language_model(model, folder)
    assert torch.equal(model.lm_head.weight.detach(), written["lm_head.weight"])


def test_untied_checkpoint_into_tied_model_is_refused(source, tmp_path):
    written = _qwen2_tensors(source)
    written["lm_head.weight"] = torch.randn_like(written["model.embed_tokens.weight"])
    folder = _write_folder(tmp_path / "qwen", written, _qwen2_config(source))
    with pytest.raises(CheckpointError, match="tie_word_embeddings to false"):
        load_language_model(_model(1), folder)


def test_larger_vocabulary_is_refused(source, tmp_path):
    written = _qwen2_tensors(source)
    big = torch.randn(1200, source.config.text_config.hidden_size)
    written["model.embed_tokens.weight"] = big
    folder = _write_folder(tmp_path / "a", written, _qwen2_config(source, vocab_size=1200))
    with pytest.raises(CheckpointError, match=r"vocab_size: checkpoint 1200 is larger .* 1000"):
        load_language_model(_model(1), folder)
    # The tensor itself is checked too, when config.json understates the vocabulary.
    folder = _write_folder(tmp_path / "b", written, _qwen2_config(source))
    with pytest.raises(CheckpointError, match=r"1200 token rows .* vocab_size is 1000"):
        load_language_model(_model(1), folder)


def test_language_config_mismatch_lists_every_field(source, tmp_path):
    config = _qwen2_config(source, hidden_size=32, num_key_value_heads=1, rope_theta=10000.0)
    folder = _write_folder(tmp_path / "qwen", _qwen2_tensors(source), config)
    with pytest.raises(CheckpointError) as err:
        load_language_model(_model(1), folder)
    message = str(err.value)
    assert "does not match the model's text_config" in message
    assert "hidden_size: checkpoint 32, text_config 64" in message
    assert "num_key_value_heads: checkpoint 1, text_config 2" in message
    assert "rope_theta: checkpoint 10000.0, text_config 1000000.0" in message
    assert "intermediate_size" not in message


def test_language_config_defaults_apply_to_absent_fields(source, tmp_path):
    # Hugging Face omits fields equal to the class defaults; Qwen2's rope_theta is 10000.
    config = _qwen2_config(source)
    del config["rope_theta"]
    folder = _write_folder(tmp_path / "qwen", _qwen2_tensors(source), config)
    with pytest.raises(CheckpointError, match=r"rope_theta: checkpoint 10000\.0"):
        load_language_model(_model(1), folder)


def test_language_shape_mismatch_names_key_and_shapes(source, tmp_path):
    written = _qwen2_tensors(source)
    written["model.layers.1.self_attn.k_proj.bias"] = torch.zeros(48)
    folder = _write_folder(tmp_path / "qwen", written, _qwen2_config(source))
    model = _model(1)
    before = _state(model)
    with pytest.raises(CheckpointError) as err:
        load_language_model(model, folder)
    assert "model.layers.1.self_attn.k_proj.bias: checkpoint shape (48,), model shape (32,)" in str(
        err.value
    )
    # Validation happens before any write: the model is untouched.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_language_missing_and_unexpected_tensors(source, tmp_path):
    written = _qwen2_tensors(source)
    del written["model.norm.weight"]
    written["model.layers.5.mlp.up_proj.weight"] = torch.zeros(2, 2)
    folder = _write_folder(tmp_path / "qwen", written, _qwen2_config(source))
    with pytest.raises(CheckpointError) as err:
        load_language_model(_model(1), folder)
    assert "1 missing tensor(s) (model keys): model.language_model.norm.weight" in str(err.value)
    assert "1 unexpected tensor(s): model.layers.5.mlp.up_proj.weight" in str(err.value)


def test_language_missing_files(source, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_language_model(_model(1), tmp_path / "nowhere")
    no_config = _write_folder(tmp_path / "a", _qwen2_tensors(source), None)
    with pytest.raises(CheckpointError, match=r"no config\.json in .*Qwen2"):
        load_language_model(_model(1), no_config)
    no_weights = tmp_path / "b"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps(_qwen2_config(source)))
    with pytest.raises(CheckpointError, match="no weights in"):
        load_language_model(_model(1), no_weights)
    llama = _write_folder(tmp_path / "c", {}, _qwen2_config(source, model_type="llama"))
    with pytest.raises(CheckpointError, match="model_type 'llama', not 'qwen2'"):
        load_language_model(_model(1), llama)
    untied = _write_folder(
        tmp_path / "d", _qwen2_tensors(source), _qwen2_config(source, tie_word_embeddings=False)
    )
    with pytest.raises(CheckpointError, match=r"no lm_head\.weight is stored"):
        load_language_model(_model(1), untied)


# -------------------------------------------------------------------------- vision tower
def test_vision_model_full_siglip(source, tmp_path):
    written = _siglip_tensors(source)
    extra = {
        "text_model.embeddings.token_embedding.weight": torch.randn(32, 8),
        "logit_scale": torch.ones(1),
        "logit_bias": torch.zeros(1),
    }
    folder = _write_folder(tmp_path / "siglip", written | extra, _siglip_config(source))
    model = _model(1)

    report = load_vision_model(model, folder)

    _assert_loaded(model, written, VIT, "vision_model.")
    assert sorted(report.ignored) == sorted(extra)
    assert (
        report.loaded == len(written) == len([k for k in model.state_dict() if k.startswith(VIT)])
    )
    pixels = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            model.model.vision_representation(pixels),
            source.model.vision_representation(pixels),
            rtol=0,
            atol=1e-6,
        )


def test_vision_model_without_head_keeps_head(source, tmp_path):
    written = _siglip_tensors(source, head=False)
    folder = _write_folder(tmp_path / "siglip", written, _siglip_config(source, full=False))
    model = _model(1)
    before = _state(model)

    report = load_vision_model(model, folder)

    _assert_loaded(model, written, VIT, "vision_model.")
    head = [k for k in before if k.startswith(VIT + "head.")]
    assert head and sorted(report.kept) == sorted(head)
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in head)
    assert "no attention-pooling head" in str(report)


def test_vision_naflex_is_refused(source, tmp_path):
    written = _siglip_tensors(source)
    conv = written["vision_model.embeddings.patch_embedding.weight"]
    written["vision_model.embeddings.patch_embedding.weight"] = conv.reshape(conv.shape[0], -1)
    folder = _write_folder(tmp_path / "a", written, _siglip_config(source))
    with pytest.raises(CheckpointError, match=r"Linear weight \(64, 768\).*fixed-resolution"):
        load_vision_model(_model(1), folder)
    config = _siglip_config(source, full=False, model_type="siglip2_vision_model")
    folder = _write_folder(tmp_path / "b", written, config)
    with pytest.raises(CheckpointError, match=r"NaFlex.*fixed-resolution SigLIP2"):
        load_vision_model(_model(1), folder)


def test_vision_config_mismatch_lists_every_field(source, tmp_path):
    config = _siglip_config(source, patch_size=14, num_hidden_layers=27)
    del config["vision_config"]["image_size"]  # absent: SigLIP's default 224
    folder = _write_folder(tmp_path / "siglip", _siglip_tensors(source), config)
    with pytest.raises(CheckpointError) as err:
        load_vision_model(_model(1), folder)
    message = str(err.value)
    assert "num_hidden_layers: checkpoint 27, vision_representation_config 2" in message
    assert "patch_size: checkpoint 14, vision_representation_config 16" in message
    assert "image_size: checkpoint 224, vision_representation_config 64" in message
    assert "hidden_size" not in message


def test_vision_shape_mismatch_and_missing(source, tmp_path):
    written = _siglip_tensors(source)
    # 64 px / patch 16 is a 4×4 grid (16 positions); a 256-position table does not fit.
    written["vision_model.embeddings.position_embedding.weight"] = torch.zeros(256, 64)
    del written["vision_model.post_layernorm.bias"]
    folder = _write_folder(tmp_path / "siglip", written, _siglip_config(source))
    with pytest.raises(CheckpointError) as err:
        load_vision_model(_model(1), folder)
    message = str(err.value)
    assert (
        "vision_model.embeddings.position_embedding.weight: checkpoint shape (256, 64), "
        "model shape (16, 64)"
    ) in message
    assert "missing tensor(s) (model keys): model.vision_representation.post_layernorm.bias" in (
        message
    )


def test_vision_wrong_model_type(source, tmp_path):
    config = {"model_type": "clip", "vision_config": {}}
    folder = _write_folder(tmp_path / "clip", _siglip_tensors(source), config)
    with pytest.raises(CheckpointError, match="model_type 'clip'; pass a Hugging Face SigLIP"):
        load_vision_model(_model(1), folder)


# ----------------------------------------------------------------------------------- VAE
def test_vae_file_without_quant_convs(source, tmp_path):
    written = _vae_tensors(source)
    file = tmp_path / "ae.safetensors"
    save_file(written, str(file))
    model = _model(1)

    report = load_vae(model, file)

    _assert_loaded(model, written, VAE, "")
    # The trainable decoder projector starts as a copy of the decoder and its statistics.
    projector = {k: v for k, v in written.items() if k.startswith(("decoder.", "bn."))}
    _assert_loaded(model, projector, PROJ, "")
    state = model.state_dict()
    for key in (
        f"{VAE}encoder.quant_conv",
        f"{VAE}decoder.post_quant_conv",
        f"{PROJ}decoder.post_quant_conv",
    ):
        weight = state[key + ".weight"]
        assert torch.equal(weight[:, :, 0, 0], torch.eye(weight.shape[0])), key
        assert torch.equal(state[key + ".bias"], torch.zeros(weight.shape[0])), key
        assert key + ".weight" in report.initialised
    assert "identity" in str(report)
    assert report.loaded == len(written) + len(projector)

    pixels = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        latent = model.encode_latent(pixels)
        torch.testing.assert_close(latent, source.encode_latent(pixels), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(
            model.decode_latent(latent), source.decode_latent(latent), rtol=1e-6, atol=1e-6
        )
        torch.testing.assert_close(
            model.model.vae_decoder_projector(latent),
            source.decode_latent(latent),
            rtol=1e-6,
            atol=1e-6,
        )


def test_vae_folder_without_statistics(source, tmp_path):
    folder = tmp_path / "flux"
    folder.mkdir()
    written = _vae_tensors(source, bn=False)
    z = source.config.vae_decoder_config.z_channels
    written["decoder.post_quant_conv.weight"] = torch.randn(z, z, 1, 1)
    written["decoder.post_quant_conv.bias"] = torch.randn(z)
    save_file(written, str(folder / "diffusion_pytorch_model.safetensors"))
    model = _model(1)
    with torch.no_grad():
        model.model.vae_model.bn.running_mean.fill_(3.0)  # not what a fresh load should keep

    report = load_vae(model, folder)

    _assert_loaded(model, written, VAE, "")
    channels = source.config.latent_channels
    state = model.state_dict()
    for prefix in (VAE, PROJ):
        assert torch.equal(state[prefix + "bn.running_mean"], torch.zeros(channels))
        assert torch.equal(state[prefix + "bn.running_var"], torch.ones(channels))
    # The stored post-quant convolution is used, in both decoders; only encoder's is identity.
    assert torch.equal(
        model.state_dict()[f"{PROJ}decoder.post_quant_conv.weight"],
        written["decoder.post_quant_conv.weight"],
    )
    assert f"{VAE}encoder.quant_conv.weight" in report.initialised
    assert f"{VAE}decoder.post_quant_conv.weight" not in report.initialised
    assert "no latent BatchNorm statistics" in str(report)


def test_vae_config_mismatch(tmp_path):
    cfg = _config()
    z = cfg.vae_encoder_config.z_channels
    # A VAE with twice the latent channels (as FLUX.2's 32 against FLUX.1's 16).
    other = dataclasses.replace(
        cfg,
        vae_encoder_config=dataclasses.replace(cfg.vae_encoder_config, z_channels=2 * z),
        vae_decoder_config=dataclasses.replace(cfg.vae_decoder_config, z_channels=2 * z, ch=8 * z),
    )
    file = tmp_path / "ae.safetensors"
    save_file(_vae_tensors(_model(0, other)), str(file))
    with pytest.raises(CheckpointError) as err:
        load_vae(_model(1), file)
    message = str(err.value)
    assert f"encoder z_channels: checkpoint {2 * z}, vae_encoder_config {z}" in message
    assert f"decoder z_channels: checkpoint {2 * z}, vae_decoder_config {z}" in message
    dec = cfg.vae_decoder_config
    theirs = [8 * z * m for m in dec.ch_mult]
    ours = [dec.ch * m for m in dec.ch_mult]
    assert (
        f"decoder level widths (ch·ch_mult): checkpoint {theirs}, vae_decoder_config {ours}"
    ) in message
    assert "encoder num_res_blocks" not in message
    assert "FLUX.1" in message


def test_vae_shape_mismatch_and_bad_inputs(source, tmp_path):
    written = _vae_tensors(source)
    dec = source.config.vae_decoder_config
    width = dec.ch * dec.ch_mult[-1]
    written["decoder.mid.attn_1.q.weight"] = torch.zeros(width, width, 3, 3)
    file = tmp_path / "ae.safetensors"
    save_file(written, str(file))
    model = _model(1)
    before = _state(model)
    with pytest.raises(CheckpointError) as err:
        load_vae(model, file)
    assert (
        f"decoder.mid.attn_1.q.weight: checkpoint shape ({width}, {width}, 3, 3), model shape "
        f"({width}, {width}, 1, 1)"
    ) in str(err.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    with pytest.raises(CheckpointError, match="does not exist"):
        load_vae(model, tmp_path / "missing.safetensors")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"expected one of ae\.safetensors"):
        load_vae(model, empty)
    diffusers = tmp_path / "diffusers.safetensors"
    save_file({"encoder.down_blocks.0.resnets.0.conv1.weight": torch.zeros(1)}, str(diffusers))
    with pytest.raises(CheckpointError, match="diffusers naming"):
        load_vae(model, diffusers)
    half_bn = dict(written)
    half_bn["decoder.mid.attn_1.q.weight"] = source.state_dict()[
        f"{VAE}decoder.mid.attn_1.q.weight"
    ]
    del half_bn["bn.running_var"]
    save_file(half_bn, str(file))
    with pytest.raises(CheckpointError, match=r"bn\.running_mean but not its partner"):
        load_vae(model, file)
    (tmp_path / "zero.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_vae(model, tmp_path / "zero.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_vae(model, tmp_path / "junk.safetensors")


# ------------------------------------------------------------------------------ together
def test_init_from_components(source, tmp_path):
    llm = _write_folder(tmp_path / "qwen", _qwen2_tensors(source), _qwen2_config(source))
    vit = _write_folder(tmp_path / "siglip", _siglip_tensors(source), _siglip_config(source))
    save_file(_vae_tensors(source), str(tmp_path / "ae.safetensors"))
    model = _model(1)
    heads_before = {k: v for k, v in _state(model).items() if "gen_projector" in k}

    reports = init_from_components(
        model, language_model=llm, vision_model=vit, vae=tmp_path / "ae.safetensors"
    )

    assert [r.component for r in reports] == ["language model", "vision model", "VAE"]
    assert all(isinstance(r, LoadReport) for r in reports)
    assert str(reports[0]).startswith("language model from ")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in heads_before.items())
    pixels = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        # The unified tokenizer up to the ViT (und_projector is not a component) now computes
        # the source's VAE encoder → the source's VAE decoder (the projector's copy) → its ViT.
        latent = source.encode_latent(pixels)
        tokens = model.image_tokens(model.encode_latent(pixels))
        pixel_hat = source.decode_latent(latent)
        vit_hidden = source.model.vision_representation(pixel_hat)
    torch.testing.assert_close(tokens.pixel_hat, pixel_hat, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens.vit_hidden, vit_hidden, rtol=1e-5, atol=1e-5)
    with pytest.raises(CheckpointError, match="got no checkpoint"):
        init_from_components(model)


def test_meta_model_is_refused(source, tmp_path):
    save_file(_vae_tensors(source), str(tmp_path / "ae.safetensors"))
    with torch.device("meta"):
        model = Cheers(_config())
    with pytest.raises(CheckpointError, match="meta device"):
        load_vae(model, tmp_path / "ae.safetensors")
