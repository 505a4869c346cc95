"""The autoencoder and the decoder projector from a FLUX-style VAE file."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.training.components.common import (
    PROJECTOR_PREFIX,
    VAE_PREFIX,
    LoadReport,
    _copy_all,
    _key_problems,
    _model_shapes,
    _raise_problems,
    _require_materialised,
    _Tensors,
)

# File names a FLUX-style autoencoder is published under, in the order they are looked for.
VAE_FILE_NAMES = ("ae.safetensors", "vae.safetensors", "diffusion_pytorch_model.safetensors")


# ----------------------------------------------------------------------------------- VAE
def _vae_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for name in VAE_FILE_NAMES:
            if (path / name).is_file():
                return path / name
        raise CheckpointError(
            f"no autoencoder weights in {path}: expected one of {', '.join(VAE_FILE_NAMES)}; "
            "pass the FLUX.2 ae.safetensors file (or the folder that holds it)"
        )
    raise CheckpointError(
        f"VAE checkpoint {str(path)!r} does not exist; pass the FLUX.2 ae.safetensors file "
        "or a folder holding it"
    )


def _vae_structure(shapes: dict[str, tuple[int, ...]], part: str) -> dict[str, Any]:
    """Channel counts and depth of an encoder or decoder, read off its tensor shapes."""
    levels = sorted(
        {int(m.group(1)) for k in shapes if (m := re.match(rf"{part}\.(?:down|up)\.(\d+)\.", k))}
    )
    level_word = "down" if part == "encoder" else "up"
    blocks = {
        int(m.group(1))
        for k in shapes
        if (m := re.match(rf"{part}\.{level_word}\.0\.block\.(\d+)\.", k))
    }
    widths = []
    for level in levels:
        convs = sorted(
            (int(m.group(1)), shapes[k][0])
            for k in shapes
            if (m := re.match(rf"{part}\.{level_word}\.{level}\.block\.(\d+)\.conv2\.weight$", k))
        )
        widths.append(convs[-1][1] if convs else None)
    conv_in, conv_out = shapes[f"{part}.conv_in.weight"], shapes[f"{part}.conv_out.weight"]
    if part == "encoder":
        return {
            "in_channels": conv_in[1],
            "z_channels": conv_out[0] // 2,
            "num_res_blocks": len(blocks),
            "level widths (ch·ch_mult)": widths,
        }
    return {
        "out_ch": conv_out[0],
        "z_channels": conv_in[1],
        # The decoder has one more residual block per level than num_res_blocks.
        "num_res_blocks": len(blocks) - 1,
        "level widths (ch·ch_mult)": widths,
    }


def load_vae(model: Cheers, path: str | os.PathLike[str]) -> LoadReport:
    """Copy a FLUX-style autoencoder into ``model.vae_model`` and ``model.vae_decoder_projector``.

    ``path`` is a safetensors file with ``encoder.*``, ``decoder.*`` and optionally the latent
    BatchNorm statistics ``bn.running_mean`` / ``bn.running_var`` / ``bn.num_batches_tracked``
    (FLUX.2 stores them), or a folder holding ``ae.safetensors``, ``vae.safetensors`` or
    ``diffusion_pytorch_model.safetensors`` in that naming. The decoder and the statistics are
    copied twice: into the frozen VAE and into the trainable decoder projector. Absent
    ``encoder.quant_conv`` / ``decoder.post_quant_conv`` (FLUX has none) become identity 1×1
    convolutions; absent statistics become mean 0 / variance 1.
    """
    _require_materialised(model)
    file = _vae_file(path)
    tensors = _Tensors([file])
    shapes = tensors.shapes
    if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in shapes):
        raise CheckpointError(
            f"{file} uses the diffusers naming (encoder.down_blocks.*), not the original FLUX "
            "naming (encoder.down.*); pass the original ae.safetensors (in the FLUX.2 "
            "repository root, next to the diffusers vae/ folder)"
        )
    for key in ("encoder.conv_in.weight", "encoder.conv_out.weight", "decoder.conv_in.weight"):
        if key not in shapes:
            raise CheckpointError(
                f"{file} has no {key}: it is not a FLUX-style autoencoder checkpoint; pass "
                "the FLUX.2 ae.safetensors"
            )
    if "decoder.conv_out.weight" not in shapes:
        raise CheckpointError(f"{file} has no decoder.conv_out.weight; re-download it")

    cfg = model.config
    problems: list[str] = []
    for part, half in (("encoder", cfg.vae_encoder_config), ("decoder", cfg.vae_decoder_config)):
        got = _vae_structure(shapes, part)
        want = {
            "in_channels": half.in_channels,
            "out_ch": half.out_ch,
            "z_channels": half.z_channels,
            "num_res_blocks": half.num_res_blocks,
            "level widths (ch·ch_mult)": [half.ch * m for m in half.ch_mult],
        }
        name = f"vae_{part}_config"
        problems += [
            f"{part} {field_name}: checkpoint {value}, {name} {want[field_name]}"
            for field_name, value in got.items()
            if value != want[field_name]
        ]
    _raise_problems(
        f"the autoencoder {file} does not match the model's VAE config",
        problems,
        "Cheers uses the FLUX.2 autoencoder (z_channels 32, ch 128, ch_mult [1, 2, 4, 4]); "
        "FLUX.1's ae.safetensors has z_channels 16. Pass the matching autoencoder or change "
        "vae_encoder_config / vae_decoder_config.",
    )

    report = LoadReport("VAE", str(file))
    quant = {
        "encoder.quant_conv.weight",
        "encoder.quant_conv.bias",
        "decoder.post_quant_conv.weight",
        "decoder.post_quant_conv.bias",
    }
    bn_keys = {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    has_quant = [k for k in quant if k in shapes]
    has_bn = [k for k in ("bn.running_mean", "bn.running_var") if k in shapes]
    if len(has_bn) == 1:
        raise CheckpointError(
            f"{file} stores {has_bn[0]} but not its partner; the latent statistics need both "
            "bn.running_mean and bn.running_var; re-download the checkpoint"
        )
    # The second decoder and its statistics start as copies of the frozen ones: the decoder
    # projector must turn clean latents into the natural images the pretrained ViT expects from
    # the first step (a random decoder would feed it noise), and it denormalises the very same
    # latents, so it needs the same statistics. Training then adapts it to noisy latents.
    # (A model whose ViT reads latents, cfg.vit_input = "latents", has no decoder projector.)
    decoders = [VAE_PREFIX] + ([PROJECTOR_PREFIX] if cfg.vit_input == "pixels" else [])
    plan: dict[str, list[str]] = {}
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        if key.startswith("encoder."):
            targets = [VAE_PREFIX + key]
        elif key.startswith(("decoder.", "bn.")):
            targets = [prefix + key for prefix in decoders]
        else:
            report.ignored.append(key)
            continue
        plan[key] = targets
        for target in targets:
            found[target] = (key, shape)
    expected = _model_shapes(model, VAE_PREFIX) | _model_shapes(model, PROJECTOR_PREFIX)
    rule_keys = {k for k in quant if k not in shapes}
    if not has_bn:
        rule_keys |= bn_keys
    elif "bn.num_batches_tracked" not in shapes:
        rule_keys.add("bn.num_batches_tracked")  # a counter only; never used in eval mode
    for key in rule_keys:
        for prefix in decoders:
            expected.pop(prefix + key, None)
    _raise_problems(
        f"the autoencoder {file} does not fit the model",
        _key_problems(expected, found),
        "Check that the file is the complete FLUX.2 autoencoder.",
    )
    if report.ignored:
        report.notes.append(
            f"ignored {len(report.ignored)} tensor(s) outside encoder.* / decoder.* / bn.*"
        )

    _copy_all(model, tensors, plan, report)
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        ruled = [p + k for p in decoders for k in sorted(rule_keys)]
        for key in (k for k in ruled if k in state):
            tensor = state[key]
            if key.endswith("quant_conv.weight"):
                # FLUX applies no quant convolutions; the identity reproduces it exactly.
                channels = tensor.shape[0]
                tensor.copy_(torch.eye(channels, dtype=tensor.dtype)[:, :, None, None])
            elif key.endswith(("quant_conv.bias", "running_mean", "num_batches_tracked")):
                tensor.zero_()
            elif key.endswith("running_var"):
                tensor.fill_(1.0)
            report.initialised.append(key)
    if len(has_quant) < len(quant):
        missing = sorted(quant - set(has_quant))
        report.notes.append(
            f"{', '.join(missing)} absent (FLUX autoencoders have none): set to identity 1×1 "
            "convolutions (weight = identity matrix, bias 0)"
        )
    if not has_bn:
        report.notes.append(
            "no latent BatchNorm statistics (bn.*) in the checkpoint: running mean 0 and "
            "variance 1 in both vae_model.bn and vae_decoder_projector.bn (latents are not "
            "normalised); compute the statistics over training images before training"
        )
    report.initialised.sort()
    return report
