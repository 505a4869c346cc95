"""Model configuration: dataclasses that read and write the released ``config.json``.

The released file names only some fields; every other field takes the reference's default
(docs/architecture.md §11). :func:`CheersConfig.official` is the released model,
:func:`CheersConfig.tiny` a small model with the same architecture for tests and CPU training.

Couplings the architecture relies on are *derived* (see the properties of
:class:`CheersConfig`) and checked by :meth:`CheersConfig.validate`.

*Length*: over 400 lines because the four sub-configs, the presets, the released file's
reading and writing and the one place that validates every coupling belong together: a field
added in one of them must be seen in the others.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cheers.errors import ConfigError


@dataclass
class VAEConfig:
    """One half (encoder or decoder) of the FLUX-style convolutional autoencoder."""

    resolution: int = 512
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 32

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass
class VisionConfig:
    """SigLIP2-style ViT (the semantic encoder)."""

    hidden_size: int = 1152
    intermediate_size: int = 4304
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 512
    patch_size: int = 16
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-6
    attention_dropout: float = 0.0

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


@dataclass
class TextConfig:
    """Qwen2 decoder (the language model)."""

    vocab_size: int = 151936
    hidden_size: int = 1536
    intermediate_size: int = 8960
    num_hidden_layers: int = 28
    num_attention_heads: int = 12
    num_key_value_heads: int = 2
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = True
    rope_theta: float = 1_000_000.0
    rope_scaling: dict[str, Any] | None = None
    use_sliding_window: bool = False
    sliding_window: int = 32768
    max_window_layers: int = 21
    attention_dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


# Keys of the released config.json and the dataclass each maps to.
_SUB_CONFIGS: dict[str, type] = {
    "vae_encoder_config": VAEConfig,
    "vae_decoder_config": VAEConfig,
    "vision_representation_config": VisionConfig,
    "text_config": TextConfig,
}
# Fixed in the reference code (not in its config); written to config.json only when changed.
_HEAD_DEFAULTS = {
    "semantic_head_layers": 7,
    "detail_head_layers": 3,
    "dummy_image_prefix": True,
    "detail_injection": True,
    "token_merge": 2,
    "vit_input": "pixels",
    "flow_prediction": "velocity",
}
VIT_INPUTS = ("pixels", "latents")
FLOW_PREDICTIONS = ("velocity", "sample", "skip")
# The paper's design choices measured in docs/ablations.md: each variant flips one switch of
# CheersConfig (apply with ``dataclasses.replace(config, **ABLATIONS[name])``).
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no_injection": {"detail_injection": False},
    "no_merge": {"token_merge": 1},
    "latents_to_vit": {"vit_input": "latents"},
}
# Fields of the released file that describe the HF packaging, kept verbatim on a round trip.
_RELEASE_METADATA: dict[str, Any] = {
    "architectures": ["Cheers"],
    "auto_map": {
        "AutoConfig": "configuration_umm.UMMConfig",
        "AutoModel": "modeling_umm.UMMModel",
        "AutoModelForCausalLM": "modeling_umm.Cheers",
    },
    "model_type": "umm",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.3",
}


@dataclass
class CheersConfig:
    """The whole model. Field names follow the released ``config.json``."""

    vae_encoder_config: VAEConfig = field(default_factory=VAEConfig)
    vae_decoder_config: VAEConfig = field(default_factory=VAEConfig)
    vision_representation_config: VisionConfig = field(default_factory=VisionConfig)
    text_config: TextConfig = field(default_factory=TextConfig)
    semantic_head_layers: int = 7
    detail_head_layers: int = 3
    # The released model was run with a random noise image in front of image-less requests
    # (docs/architecture.md §10); models trained here see none, so inference follows this flag
    # by default.
    dummy_image_prefix: bool = True
    # Ablation switches (docs/ablations.md); the defaults are the paper's architecture.
    # detail_injection: the gate adds the ViT patch embeddings to the semantic head's output.
    detail_injection: bool = True
    # token_merge: side of the cell of ViT tokens merged into one LLM token (2 = 4× compression).
    token_merge: int = 2
    # vit_input: "pixels" (latent → decoder projector → ViT) or "latents" (latent → ViT directly).
    vit_input: str = "pixels"
    # flow_prediction: what the detail head's output means. "velocity" (the reference) is the
    # velocity itself; "sample" is the clean latent x̂1, turned into the velocity
    # (x̂1 − x_t)/(1 − t); "skip" is the velocity plus x_t (v = output − x_t), so that near noise
    # the head's target is x1, which the prompt decides, not x1 − x0, whose noise part only x_t
    # carries (cheers.samplers.base.velocity_from_head; docs/training.md, "Generation that
    # listens").
    flow_prediction: str = "velocity"
    # Fields of the file we do not interpret (architectures, auto_map, torch_dtype, ...).
    extra: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- presets
    @classmethod
    def official(cls) -> CheersConfig:
        """The released ``ai9stars/Cheers`` model (2.57 B parameters)."""
        return cls(
            vae_encoder_config=VAEConfig(resolution=512),
            vae_decoder_config=VAEConfig(resolution=512),
            vision_representation_config=VisionConfig(),
            text_config=TextConfig(),
            extra=json.loads(json.dumps(_RELEASE_METADATA)),
        )

    @classmethod
    def tiny(cls, image_size: int = 64, vocab_size: int = 151670) -> CheersConfig:
        """A few-million-parameter model with every part of the architecture, for tests."""
        return cls(
            # z = 8 keeps the latent at 32 channels, so the decoder (whose width must equal the
            # latent channels) stays cheap at full resolution.
            vae_encoder_config=VAEConfig(
                resolution=image_size, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1, z_channels=8
            ),
            vae_decoder_config=VAEConfig(
                resolution=image_size, ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=0, z_channels=8
            ),
            vision_representation_config=VisionConfig(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=image_size,
            ),
            text_config=TextConfig(
                vocab_size=vocab_size,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
            ),
            semantic_head_layers=2,
            detail_head_layers=1,
            dummy_image_prefix=False,
            extra=json.loads(json.dumps({**_RELEASE_METADATA, "torch_dtype": "float32"})),
        )

    # ------------------------------------------------------- derived couplings
    @property
    def image_size(self) -> int:
        """Side of the square images the model sees and generates (the ViT's image size)."""
        return self.vision_representation_config.image_size

    @property
    def latent_channels(self) -> int:
        """Channels of the normalised latent: 2×2 space-to-depth of the VAE's z channels."""
        return 4 * self.vae_encoder_config.z_channels

    @property
    def image_stride(self) -> int:
        """Pixels per latent cell: VAE downsampling times the 2×2 space-to-depth."""
        return self.vae_encoder_config.downsample_factor * 2

    @property
    def grid_size(self) -> int:
        """Side of the latent grid, equal to the ViT patch grid."""
        return self.image_size // self.image_stride

    @property
    def tokens_per_image(self) -> int:
        """LLM tokens per image after the token merge (P in the spec; G²/4 with the 2×2 merge)."""
        return (self.grid_size // self.token_merge) ** 2

    def validate(self) -> CheersConfig:
        """Check every coupling of docs/architecture.md §11.

        Raises :class:`ConfigError` naming the broken coupling and the fix.
        """
        enc, dec = self.vae_encoder_config, self.vae_decoder_config
        vit, text = self.vision_representation_config, self.text_config
        problems: list[str] = []
        for name, half in (("vae_encoder_config", enc), ("vae_decoder_config", dec)):
            for mult in half.ch_mult:
                if (half.ch * mult) % 32:
                    problems.append(
                        f"{name}: ch·ch_mult = {half.ch}·{mult} = {half.ch * mult} is not "
                        "divisible by 32 (GroupNorm(32) needs it); choose ch a multiple of 32"
                    )
            if not half.ch_mult:
                problems.append(f"{name}.ch_mult is empty; give at least one level")
        if enc.z_channels != dec.z_channels:
            problems.append(
                f"vae_encoder_config.z_channels ({enc.z_channels}) != vae_decoder_config."
                f"z_channels ({dec.z_channels}); they must be equal"
            )
        if dec.ch != self.latent_channels:
            problems.append(
                f"vae_decoder_config.ch ({dec.ch}) must equal 4·z_channels "
                f"({self.latent_channels}): the detail head's output width is taken from it "
                "and must match the latent channels"
            )
        if len(dec.ch_mult) != len(enc.ch_mult):
            problems.append(
                f"the VAE encoder has {len(enc.ch_mult)} levels but the decoder "
                f"{len(dec.ch_mult)}; give both ch_mult lists the same length"
            )
        if self.image_stride != vit.patch_size:
            problems.append(
                f"VAE stride {enc.downsample_factor}×2 = {self.image_stride} must equal the "
                f"ViT patch_size ({vit.patch_size}) so the latent grid equals the ViT grid"
            )
        if vit.image_size % vit.patch_size:
            problems.append(
                f"vision image_size ({vit.image_size}) is not a multiple of patch_size "
                f"({vit.patch_size})"
            )
        elif self.token_merge < 1:
            problems.append(f"token_merge ({self.token_merge}) must be at least 1 (1 = no merge)")
        elif vit.grid_size % self.token_merge:
            problems.append(
                f"the ViT grid ({vit.grid_size}×{vit.grid_size}) must be divisible by "
                f"token_merge ({self.token_merge}) for the "
                f"{self.token_merge}×{self.token_merge} token merge; change image_size or "
                "patch_size"
            )
        if self.vit_input not in VIT_INPUTS:
            problems.append(f"vit_input must be one of {VIT_INPUTS}, not {self.vit_input!r}")
        if self.flow_prediction not in FLOW_PREDICTIONS:
            problems.append(
                f"flow_prediction must be one of {FLOW_PREDICTIONS}, not {self.flow_prediction!r}"
            )
        if vit.hidden_size % vit.num_attention_heads:
            problems.append(
                f"vision hidden_size ({vit.hidden_size}) is not divisible by its "
                f"num_attention_heads ({vit.num_attention_heads})"
            )
        if text.hidden_size % text.num_attention_heads:
            problems.append(
                f"text hidden_size ({text.hidden_size}) is not divisible by "
                f"num_attention_heads ({text.num_attention_heads})"
            )
        if text.num_attention_heads % text.num_key_value_heads:
            problems.append(
                f"text num_attention_heads ({text.num_attention_heads}) is not a multiple of "
                f"num_key_value_heads ({text.num_key_value_heads})"
            )
        if vit.num_attention_heads % text.num_key_value_heads:
            problems.append(
                f"the detail head uses the ViT's {vit.num_attention_heads} heads with the LLM's "
                f"{text.num_key_value_heads} KV heads; the first must be a multiple of the second"
            )
        if text.head_dim % 2 or vit.hidden_size // vit.num_attention_heads % 2:
            problems.append("attention head dimensions must be even for RoPE")
        if self.semantic_head_layers < 1 or self.detail_head_layers < 1:
            problems.append("semantic_head_layers and detail_head_layers must be at least 1")
        problems += _value_problems(self)
        if text.use_sliding_window:
            problems.append(
                "text_config.use_sliding_window is true, but Cheers uses full attention; "
                "set it to false"
            )
        if problems:
            raise ConfigError("Invalid Cheers config:\n  - " + "\n  - ".join(problems))
        return self

    # ------------------------------------------------------------ (de)serialise
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheersConfig:
        """Build from a released-format dict (missing fields take the reference defaults)."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a JSON object, got {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        _reject_typos(data, [*_SUB_CONFIGS, *_HEAD_DEFAULTS], "config.json")
        for key, value in data.items():
            if key in _SUB_CONFIGS:
                kwargs[key] = _sub_config_from_dict(_SUB_CONFIGS[key], key, value)
            elif key in _HEAD_DEFAULTS:
                expected = type(_HEAD_DEFAULTS[key])
                if type(value) is not expected:
                    raise ConfigError(f"{key} must be {expected.__name__}, got {value!r}")
                kwargs[key] = value
            else:
                extra[key] = value
        return cls(**kwargs, extra=extra).validate()

    @classmethod
    def from_json(cls, path: str | Path) -> CheersConfig:
        """Read a released-format ``config.json`` (a file, or a folder holding one)."""
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(f"the config path must be a str or pathlib.Path, got {path!r}")
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise ConfigError(
                f"No config.json at {path}; point at a Cheers model folder "
                "(it holds config.json and the safetensors weights)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid JSON ({err}); fix or re-download it") from err
        except OSError as err:
            raise ConfigError(
                f"cannot read {path} ({err.strerror or err}); check its permissions"
            ) from err
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The released format: every sub-config written out, metadata kept."""
        out: dict[str, Any] = {}
        for key in ("architectures", "auto_map"):
            if key in self.extra:
                out[key] = self.extra[key]
        for key in _SUB_CONFIGS:
            sub = dataclasses.asdict(getattr(self, key))
            if "ch_mult" in sub:
                sub["ch_mult"] = list(sub["ch_mult"])
            if key == "vision_representation_config":
                sub["num_patches"] = self.vision_representation_config.num_patches
                sub["model_type"] = "umm"
            if key == "text_config":
                sub["layer_types"] = ["full_attention"] * self.text_config.num_hidden_layers
            out[key] = sub
        for key, default in _HEAD_DEFAULTS.items():
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` into ``folder``; returns the file's path."""
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path


_MAY_BE_ZERO = {"num_res_blocks", "max_window_layers", "sliding_window"}
# Activations the modules implement (modules/language.py, modules/vision.py).
_TEXT_ACTIVATIONS = ("silu",)
_VISION_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu")


def _value_problems(config: CheersConfig) -> list[str]:
    """Field values the modules cannot honour (caught here, not as a ValueError at build)."""
    vit, text = config.vision_representation_config, config.text_config
    problems = []
    if text.hidden_act not in _TEXT_ACTIVATIONS:
        problems.append(
            f"text_config.hidden_act {text.hidden_act!r} is not one of {_TEXT_ACTIVATIONS}"
        )
    if vit.hidden_act not in _VISION_ACTIVATIONS:
        problems.append(
            f"vision_representation_config.hidden_act {vit.hidden_act!r} is not one of "
            f"{_VISION_ACTIVATIONS}"
        )
    if text.rope_scaling is not None:
        problems.append(
            f"text_config.rope_scaling is {text.rope_scaling!r}, but Cheers implements plain "
            "RoPE only (it would be ignored, changing the model); set it to null"
        )
    for name, value in (
        ("text_config.rms_norm_eps", text.rms_norm_eps),
        ("text_config.rope_theta", text.rope_theta),
        ("vision_representation_config.layer_norm_eps", vit.layer_norm_eps),
    ):
        if not value > 0:
            problems.append(f"{name} must be > 0, got {value!r}")
    for name, value in (
        ("text_config.attention_dropout", text.attention_dropout),
        ("vision_representation_config.attention_dropout", vit.attention_dropout),
    ):
        if not 0 <= value < 1:
            problems.append(f"{name} must be in [0, 1), got {value!r}")
    return problems


def _sub_config_from_dict(kind: type, key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"config field {key!r} must be an object, got {value!r}")
    kwargs: dict[str, Any] = {}
    # Fields not listed (model_type, num_patches, layer_types, newer additions) are derived or
    # unused by the architecture; they are never guessed at. A key that is nearly a field's name
    # is a typo, though: ignoring it would silently build a different model.
    _reject_typos(value, [f.name for f in dataclasses.fields(kind)], key)
    for f in dataclasses.fields(kind):
        if f.name not in value:
            continue
        item, default = value[f.name], f.default if f.default is not dataclasses.MISSING else None
        if f.name == "ch_mult":
            if not isinstance(item, list | tuple) or not all(_is_int(m) for m in item):
                raise ConfigError(f"{key}.ch_mult must be a list of integers, got {item!r}")
            item = tuple(item)
        elif _is_int(default) and not _is_int(item):
            raise ConfigError(f"{key}.{f.name} must be an integer, got {item!r}")
        elif isinstance(default, float) and (
            isinstance(item, bool) or not isinstance(item, int | float) or not math.isfinite(item)
        ):
            raise ConfigError(f"{key}.{f.name} must be a number, not NaN or infinity, got {item!r}")
        elif isinstance(default, bool) and not isinstance(item, bool):
            raise ConfigError(f"{key}.{f.name} must be true or false, got {item!r}")
        elif isinstance(default, str) and not isinstance(item, str):
            raise ConfigError(f"{key}.{f.name} must be a string, got {item!r}")
        elif _is_int(default) and (item < 0 or (item == 0 and f.name not in _MAY_BE_ZERO)):
            raise ConfigError(f"{key}.{f.name} must be positive, got {item!r}")
        kwargs[f.name] = item
    try:
        sub = kind(**kwargs)
    except TypeError as err:
        raise ConfigError(f"config field {key!r}: {err}") from err
    patches = value.get("num_patches") if key == "vision_representation_config" else None
    if patches is not None and patches != sub.num_patches:
        raise ConfigError(
            f"vision_representation_config.num_patches is {value['num_patches']} but "
            f"(image_size/patch_size)² = {sub.num_patches}; fix one of them"
        )
    return sub


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# Keys of Hugging Face configs that are not Cheers fields; never taken for typos.
_METADATA_KEYS = {"model_type", "torch_dtype", "transformers_version", "architectures", "auto_map"}


def _reject_typos(data: dict[str, Any], known: list[str], where: str) -> None:
    """Raise for a key that is not a field but is close to one's name (a likely misspelling).

    Other unknown keys are Hugging Face bookkeeping (``model_type``, ``layer_types``…) and are
    kept or ignored, so configs written by other tools still load.
    """
    for key in data:
        if key in known or key in _METADATA_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        if close:
            raise ConfigError(
                f"{where} has the key {key!r}, which is not a Cheers config field; did you mean "
                f"{close[0]!r}? Rename it: an unknown key is ignored, so the model would be built "
                f"with the default {close[0]} instead"
            )
