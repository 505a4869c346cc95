"""The language model from a Hugging Face Qwen2 checkpoint (``model.*``, ``lm_head.weight``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cheers.checkpoint import resolve_model_path, weight_files
from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.training.components.common import (
    _IGNORABLE,
    EMBED,
    LLM_PREFIX,
    LM_HEAD,
    LoadReport,
    _copy,
    _fill_rows_with_mean,
    _key_problems,
    _model_shapes,
    _raise_problems,
    _read_hf_config,
    _require_materialised,
    _same,
    _Tensors,
)

# Hugging Face writes only the config fields that differ from the class defaults, so a field
# absent from config.json means the default of the transformers class (Qwen2Config,
# SiglipVisionConfig). These are those defaults.
_QWEN2_DEFAULTS: dict[str, Any] = {
    "vocab_size": 151936,
    "hidden_size": 4096,
    "intermediate_size": 22016,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # None means "as many as num_attention_heads"
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
}


# ------------------------------------------------------------------------- language model
def _qwen2_config(folder: Path) -> dict[str, Any]:
    data = _read_hf_config(folder, "Qwen2")
    model_type = data.get("model_type")
    if model_type != "qwen2":
        raise CheckpointError(
            f"{folder / 'config.json'} has model_type {model_type!r}, not 'qwen2'; pass a "
            "Hugging Face Qwen2 / Qwen2.5 folder (the paper uses Qwen/Qwen2.5-1.5B-Instruct)"
        )
    cfg = {key: data.get(key, default) for key, default in _QWEN2_DEFAULTS.items()}
    # Newer transformers releases move rope_theta into a rope_parameters object.
    rope_parameters = data.get("rope_parameters")
    if "rope_theta" not in data and isinstance(rope_parameters, dict):
        cfg["rope_theta"] = rope_parameters.get("rope_theta", cfg["rope_theta"])
    if cfg["num_key_value_heads"] is None:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    cfg["tie_word_embeddings"] = data.get("tie_word_embeddings")
    return cfg


def load_language_model(model: Cheers, folder: str | os.PathLike[str]) -> LoadReport:
    """Copy a Hugging Face Qwen2 checkpoint into ``model.language_model`` and ``lm_head``.

    ``folder`` is a local folder (or a Hub id, downloaded when online) holding ``config.json``
    (``model_type`` qwen2) and ``model.safetensors`` or index-listed shards. Its architecture
    fields must equal ``model.config.text_config``; every mismatch is listed in one
    :class:`CheckpointError`. A vocabulary *smaller* than the model's is accepted (a tokenizer
    with added tokens): the stored rows are copied and the new rows set to the mean embedding.
    A larger one is an error. When the checkpoint stores no ``lm_head.weight`` its head is tied
    to the embeddings; a model with an untied head then starts from a copy of them.
    """
    _require_materialised(model)
    path = resolve_model_path(folder)
    text = model.config.text_config
    source = _qwen2_config(path)
    wanted = {
        "hidden_size": text.hidden_size,
        "num_hidden_layers": text.num_hidden_layers,
        "num_attention_heads": text.num_attention_heads,
        "num_key_value_heads": text.num_key_value_heads,
        "intermediate_size": text.intermediate_size,
        "hidden_act": text.hidden_act,
        "rope_theta": text.rope_theta,
        "rms_norm_eps": text.rms_norm_eps,
    }
    problems = [
        f"{name}: checkpoint {source[name]!r}, text_config {value!r}"
        for name, value in wanted.items()
        if not _same(source[name], value)
    ]
    if source["vocab_size"] > text.vocab_size:
        problems.append(
            f"vocab_size: checkpoint {source['vocab_size']} is larger than text_config "
            f"{text.vocab_size}; the extra token rows cannot be dropped without losing tokens "
            f"(set text_config.vocab_size to at least {source['vocab_size']})"
        )
    _raise_problems(
        f"the Qwen2 checkpoint in {path} does not match the model's text_config",
        problems,
        "Use the language model the config was made for (the paper uses "
        "Qwen2.5-1.5B-Instruct) or set these text_config fields to the checkpoint's values.",
    )

    tensors = _Tensors(weight_files(path))
    report = LoadReport("language model", str(path))
    # A bare Qwen2Model export stores "layers.0..." without the "model." of Qwen2ForCausalLM.
    bare = "model." + EMBED not in tensors.shapes and EMBED in tensors.shapes
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    for key, shape in tensors.shapes.items():
        if key == LM_HEAD:
            found[LM_HEAD] = (key, shape)
        elif key.startswith("model.") or bare:
            if _IGNORABLE.search(key):
                report.ignored.append(key)
                continue
            found[LLM_PREFIX + (key if bare else key.removeprefix("model."))] = (key, shape)
        else:
            report.ignored.append(key)  # e.g. a classification head: not part of Cheers

    expected = _model_shapes(model, LLM_PREFIX)
    expected[LM_HEAD] = tuple(model.lm_head.weight.shape)
    model_embed, model_tied = LLM_PREFIX + EMBED, text.tie_word_embeddings
    head_stored = LM_HEAD in found
    if not head_stored:
        if source["tie_word_embeddings"] is False:
            raise CheckpointError(
                f"{path / 'config.json'} says tie_word_embeddings is false but no "
                f"{LM_HEAD} is stored in {path}; the checkpoint is incomplete, re-download it"
            )
        del expected[LM_HEAD]  # a tied checkpoint stores its head once, as the embeddings
    # The token dimension may be shorter than the model's (rows added later); check the rest.
    source_rows: dict[str, int] = {}
    for key in (model_embed, LM_HEAD):
        if key in found and key in expected:
            source_key, shape = found[key]
            rows, want = shape[0], expected[key][0]
            if len(shape) == 2 and shape[1:] == expected[key][1:] and rows <= want:
                source_rows[key] = rows
                found[key] = (source_key, expected[key])  # checked; not a shape problem
            elif len(shape) == 2 and shape[1:] == expected[key][1:]:
                raise CheckpointError(
                    f"{source_key}: checkpoint has {rows} token rows but the model's "
                    f"vocab_size is {want}; a larger vocabulary cannot be truncated safely "
                    f"(set text_config.vocab_size to at least {rows})"
                )
    _raise_problems(
        f"the Qwen2 checkpoint in {path} does not fit the model",
        _key_problems(expected, found),
        "Check that the folder holds the complete checkpoint that its config.json describes.",
    )
    if source_rows.get(LM_HEAD, -1) not in (-1, source_rows[model_embed]):
        raise CheckpointError(
            f"{LM_HEAD} has {source_rows[LM_HEAD]} rows but embed_tokens "
            f"{source_rows[model_embed]} in {path}; the checkpoint is inconsistent, re-download it"
        )

    embed_source_key = found[model_embed][0]
    if head_stored and model_tied:
        # The model has one matrix for both; a checkpoint with two different ones cannot fit.
        if not torch.equal(tensors.get(LM_HEAD), tensors.get(embed_source_key)):
            raise CheckpointError(
                f"{path} stores an {LM_HEAD} that differs from its embed_tokens (an untied "
                "head), but the model's text_config ties them; set "
                "text_config.tie_word_embeddings to false to keep both"
            )
        report.ignored.append(LM_HEAD)
        report.notes.append(f"{LM_HEAD} equals embed_tokens in the checkpoint; kept tied")
        del found[LM_HEAD]

    targets = model.state_dict(keep_vars=True)
    by_source = {source_key: key for key, (source_key, _) in found.items()}
    with torch.no_grad():
        for source_key, tensor in tensors.read(by_source):
            key = by_source[source_key]
            rows = source_rows.get(key)
            _copy(targets[key][:rows] if rows is not None else targets[key], tensor)
            report.loaded_keys.append(key)
        if model_tied:
            report.loaded_keys.append(LM_HEAD)  # the same tensor as the embeddings
        elif not head_stored:
            _copy(targets[LM_HEAD][: source_rows[model_embed]], tensors.get(embed_source_key))
            report.loaded_keys.append(LM_HEAD)
            report.notes.append(
                f"the checkpoint ties its head to embed_tokens; the model's untied {LM_HEAD} "
                "starts as a copy of them"
            )
            source_rows[LM_HEAD] = source_rows[model_embed]
        for key, rows in source_rows.items():
            vocab = targets[key].shape[0]
            if rows < vocab and not (key == LM_HEAD and model_tied):
                _fill_rows_with_mean(targets[key], rows)
                report.initialised.append(key)
                report.notes.append(
                    f"{key}: rows {rows}..{vocab - 1} (tokens beyond the checkpoint's "
                    "vocabulary) set to the mean of the stored rows"
                )
    report.loaded_keys.sort()
    return report
