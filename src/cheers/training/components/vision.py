"""The vision tower from a fixed-resolution SigLIP2 checkpoint (``vision_model.*``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cheers.checkpoint import resolve_model_path, weight_files
from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.training.components.common import (
    _IGNORABLE,
    VIT_PREFIX,
    LoadReport,
    _copy_all,
    _key_problems,
    _model_shapes,
    _raise_problems,
    _read_hf_config,
    _require_materialised,
    _same,
    _Tensors,
)

_SIGLIP_VISION_DEFAULTS: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
}
_NAFLEX_HELP = (
    "SigLIP2 'NaFlex' checkpoints (e.g. google/siglip2-so400m-patch16-naflex) embed patches "
    "with a Linear layer over flattened pixels and have no fixed image size; Cheers needs the "
    "fixed-resolution SigLIP2 checkpoint with a convolutional patch embedding, e.g. "
    "google/siglip2-so400m-patch16-512"
)
# Non-persistent buffers that older exports sometimes still contain; they carry no weights.


# ---------------------------------------------------------------------------- vision tower
def _siglip_vision_config(folder: Path) -> dict[str, Any]:
    data = _read_hf_config(folder, "SigLIP")
    model_type = data.get("model_type")
    if model_type in ("siglip2", "siglip2_vision_model"):
        raise CheckpointError(
            f"{folder} holds a SigLIP2 NaFlex model ({model_type}). {_NAFLEX_HELP}"
        )
    if model_type == "siglip":
        vision = data.get("vision_config") or {}
    elif model_type == "siglip_vision_model":
        vision = data
    else:
        raise CheckpointError(
            f"{folder / 'config.json'} has model_type {model_type!r}; pass a Hugging Face "
            "SigLIP / SigLIP2 folder (model_type 'siglip' or 'siglip_vision_model'; the paper "
            "uses google/siglip2-so400m-patch16-512)"
        )
    if not isinstance(vision, dict):
        raise CheckpointError(f"{folder / 'config.json'}: vision_config must be an object")
    return {key: vision.get(key, default) for key, default in _SIGLIP_VISION_DEFAULTS.items()}


def load_vision_model(model: Cheers, folder: str | os.PathLike[str]) -> LoadReport:
    """Copy a Hugging Face SigLIP / SigLIP2 vision tower into ``model.vision_representation``.

    ``folder`` holds a full SigLIP model (``vision_model.*`` plus ``text_model.*``,
    ``logit_scale`` and ``logit_bias``, which are ignored) or a vision-only export; the
    ``vision_model.`` prefix is stripped. Its vision config must equal
    ``model.config.vision_representation_config``. NaFlex checkpoints (a Linear patch
    embedding) are refused: Cheers needs the fixed-resolution checkpoint. A checkpoint without
    the attention-pooling ``head.*`` (whose output Cheers never uses) keeps the model's head.
    """
    _require_materialised(model)
    path = resolve_model_path(folder)
    vit = model.config.vision_representation_config
    source = _siglip_vision_config(path)
    problems = [
        f"{name}: checkpoint {source[name]!r}, vision_representation_config {getattr(vit, name)!r}"
        for name in _SIGLIP_VISION_DEFAULTS
        if not _same(source[name], getattr(vit, name))
    ]
    _raise_problems(
        f"the SigLIP checkpoint in {path} does not match the model's vision_representation_config",
        problems,
        "Use the vision tower the config was made for (the paper uses "
        "siglip2-so400m-patch16-512) or set these fields to the checkpoint's values.",
    )

    tensors = _Tensors(weight_files(path))
    report = LoadReport("vision model", str(path))
    patch = tensors.shapes.get("vision_model.embeddings.patch_embedding.weight")
    if patch is not None and len(patch) == 2:
        raise CheckpointError(
            f"vision_model.embeddings.patch_embedding.weight in {path} is a Linear weight "
            f"{patch}, not a convolution (D, 3, p, p). {_NAFLEX_HELP}"
        )
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in tensors.shapes.items():
        if key.startswith("vision_model.") and not _IGNORABLE.search(key):
            found[VIT_PREFIX + key.removeprefix("vision_model.")] = (key, shape)
        else:
            report.ignored.append(key)  # the text tower, logit_scale / logit_bias
    if not found:
        raise CheckpointError(
            f"no vision_model.* tensors in {path}; pass a SigLIP model or vision-model folder"
        )
    expected = _model_shapes(model, VIT_PREFIX)
    head = [k for k in expected if k.startswith(VIT_PREFIX + "head.")]
    if not any(k in found for k in head):
        # Cheers never uses the pooled output, so a missing head costs nothing; keep it.
        for key in head:
            del expected[key]
        report.kept.extend(head)
        report.notes.append(
            "the checkpoint has no attention-pooling head (vision_model.head.*); the model's "
            "head keeps its initialisation (Cheers does not use its output)"
        )
    _raise_problems(
        f"the SigLIP checkpoint in {path} does not fit the model",
        _key_problems(expected, found),
        "Check that the folder holds the complete checkpoint that its config.json describes.",
    )
    if report.ignored:
        report.notes.append(
            f"ignored {len(report.ignored)} tensor(s) outside vision_model.* (text tower, "
            "logit scale and bias)"
        )
    _copy_all(model, tensors, {source_key: [key] for key, (source_key, _) in found.items()}, report)
    return report
