"""Initialise a Cheers model from its pretrained *components*, as training from scratch does.

The paper assembles Cheers from three public checkpoints: a Qwen2 language model
(Qwen2.5-1.5B-Instruct), a SigLIP2 vision tower (siglip2-so400m-patch16-512, the fixed-resolution
variant) and the FLUX.2 autoencoder. Each loader here reads one of them in its *own* published
format, checks it against the Cheers config, and copies its tensors into the matching part of a
:class:`~cheers.model.Cheers`:

====================  ==========================================  ===============================
loader                source keys                                 model keys
====================  ==========================================  ===============================
load_language_model   ``model.*``, ``lm_head.weight``             ``model.language_model.*``,
                                                                  ``lm_head.weight``
load_vision_model     ``vision_model.*``                          ``model.vision_representation.*``
load_vae              ``encoder.*``, ``decoder.*``, ``bn.*``      ``model.vae_model.*`` and
                                                                  ``model.vae_decoder_projector.*``
====================  ==========================================  ===============================

Every loader validates *everything* (config fields, key sets, shapes) before it writes a single
tensor, so a failed call leaves the model as it was. The modules that have no pretrained
counterpart (``und_projector``, ``time_embed``, ``gen_projector``, ``hi_gate``, ``hi_projector``)
keep their initialisation; training learns them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cheers.checkpoint import open_weights, resolve_model_path, weight_files
from cheers.errors import CheckpointError
from cheers.model import Cheers

__all__ = [
    "LoadReport",
    "init_from_components",
    "load_language_model",
    "load_vae",
    "load_vision_model",
]

LLM_PREFIX = "model.language_model."
VIT_PREFIX = "model.vision_representation."
VAE_PREFIX = "model.vae_model."
PROJECTOR_PREFIX = "model.vae_decoder_projector."
LM_HEAD = "lm_head.weight"
EMBED = "embed_tokens.weight"

# File names a FLUX-style autoencoder is published under, in the order they are looked for.
VAE_FILE_NAMES = ("ae.safetensors", "vae.safetensors", "diffusion_pytorch_model.safetensors")

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
_IGNORABLE = re.compile(r"(^|\.)(rotary_emb\.inv_freq|position_ids)$")


# ---------------------------------------------------------------------------------- report
@dataclass
class LoadReport:
    """What one component loader did to the model, for logs and for tests.

    ``loaded_keys`` are model keys filled from the checkpoint; ``initialised`` model keys set by
    a documented rule instead (identity convolutions, mean-initialised rows, default latent
    statistics); ``kept`` model keys left exactly as they were; ``ignored`` checkpoint keys that
    were not used (e.g. SigLIP's text tower). ``notes`` explain each rule that fired.
    """

    component: str
    source: str
    loaded_keys: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        """Number of model tensors filled from the checkpoint."""
        return len(self.loaded_keys)

    def __str__(self) -> str:
        lines = [
            f"{self.component} from {self.source}: loaded {self.loaded} tensor(s), "
            f"initialised {len(self.initialised)}, kept {len(self.kept)}, "
            f"ignored {len(self.ignored)} checkpoint tensor(s)"
        ]
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------- safetensors I/O
class _Tensors:
    """Names and shapes of the tensors in safetensors files, with reads of chosen names only.

    :func:`cheers.checkpoint.iter_tensors` reads every tensor; a full SigLIP checkpoint is
    mostly its text tower (a 256k-token embedding), so here only the names a loader uses are
    read, and shapes come from the headers so that everything is validated before any read.
    """

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._file_of: dict[str, Path] = {}
        for file in files:
            with open_weights(file) as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    self.shapes[name] = tuple(handle.get_slice(name).get_shape())
                    self._file_of[name] = file

    def read(self, names: Iterable[str]) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) for ``names``, opening each file once."""
        by_file: dict[Path, list[str]] = {}
        for name in names:
            by_file.setdefault(self._file_of[name], []).append(name)
        for file, group in by_file.items():
            with open_weights(file) as handle:
                # One tensor at a time: a shard never has to fit in memory at once.
                for name in group:
                    yield name, handle.get_tensor(name)

    def get(self, name: str) -> torch.Tensor:
        return next(self.read([name]))[1]


def _read_hf_config(folder: Path, what: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(
            f"no config.json in {folder}; pass the Hugging Face {what} folder as downloaded "
            "(it holds config.json and the *.safetensors weights)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err}); fix or re-download it") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object; re-download it")
    return data


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and math.isclose(a, b, rel_tol=1e-9)
    return a == b


def _shown(keys: list[str], limit: int = 10) -> str:
    more = f" … and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _raise_problems(header: str, problems: list[str], fix: str) -> None:
    if problems:
        raise CheckpointError(f"{header}:\n  - " + "\n  - ".join(problems) + f"\n{fix}")


def _key_problems(
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[str, tuple[int, ...]]],
) -> list[str]:
    """Missing, unexpected and mis-shaped tensors.

    ``expected`` maps model keys to the model's shapes; ``found`` maps the model key each
    checkpoint tensor would fill to (checkpoint key, checkpoint shape).
    """
    problems: list[str] = []
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(found[k][0] for k in set(found) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing tensor(s) (model keys): {_shown(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_shown(unexpected)}")
    for key in sorted(set(expected) & set(found)):
        source_key, shape = found[key]
        if shape != expected[key]:
            problems.append(
                f"{source_key}: checkpoint shape {shape}, model shape {expected[key]} "
                f"(model key {key})"
            )
    return problems


def _model_shapes(model: Cheers, prefix: str) -> dict[str, tuple[int, ...]]:
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict(keep_vars=True).items()
        if k.startswith(prefix)
    }


def _require_materialised(model: Cheers) -> None:
    # Copying into meta tensors would silently do nothing.
    if any(t.is_meta for t in model.state_dict(keep_vars=True).values()):
        raise CheckpointError(
            "the model has tensors on the meta device, so there is nowhere to copy weights to; "
            "build it on a real device, or call model.to_empty(device=...) first"
        )


@torch.no_grad()
def _copy(target: torch.Tensor, source: torch.Tensor) -> None:
    # copy_ converts dtype and device: the checkpoint's bf16/f32 become the model's dtype.
    target.copy_(source.to(dtype=target.dtype))


@torch.no_grad()
def _fill_rows_with_mean(weight: torch.Tensor, existing: int) -> None:
    """Set rows ``existing:`` of an embedding or output matrix to the mean of the others.

    New tokens start at the mean embedding rather than at random values: their input
    embedding then lies inside the distribution the pretrained layers were trained on, and
    (for the output projection) their logit starts at the average logit, so adding them
    barely moves the pretrained model's next-token distribution. Random rows of the usual
    init scale can get large logits and derail the first training steps.
    """
    mean = weight[:existing].float().mean(dim=0)
    weight[existing:] = mean.to(weight.dtype)


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


def _copy_all(
    model: Cheers, tensors: _Tensors, plan: dict[str, list[str]], report: LoadReport
) -> None:
    targets = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for source_key, tensor in tensors.read(plan):
            for key in plan[source_key]:
                _copy(targets[key], tensor)
                report.loaded_keys.append(key)
    report.loaded_keys.sort()


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


# --------------------------------------------------------------------------------- all three
def init_from_components(
    model: Cheers,
    *,
    language_model: str | os.PathLike[str] | None = None,
    vision_model: str | os.PathLike[str] | None = None,
    vae: str | os.PathLike[str] | None = None,
) -> list[LoadReport]:
    """Load each given component checkpoint into ``model``; returns one report per component.

    Order: language model, vision tower, VAE. Each loader validates before writing, but a
    later component's failure does not undo an earlier component's load. Modules without a
    pretrained counterpart (projectors, flow heads, gate, time embedder) are left untouched.
    """
    if language_model is None and vision_model is None and vae is None:
        raise CheckpointError(
            "init_from_components got no checkpoint; pass language_model=, vision_model= "
            "and/or vae="
        )
    reports: list[LoadReport] = []
    if language_model is not None:
        reports.append(load_language_model(model, language_model))
    if vision_model is not None:
        reports.append(load_vision_model(model, vision_model))
    if vae is not None:
        reports.append(load_vae(model, vae))
    return reports
