"""Training configuration: a TOML file of model initialisation, data, stages and run settings.

Example (paths are relative to the file)::

    [model]
    from_pretrained = "Cheers"          # a released Cheers folder; or preset / config + components

    [data]
    files = [{ path = "train.jsonl", weight = 1.0 }]

    [[stages]]                           # the released recipe's first stage
    name = "align"
    trainable = "new"
    steps = 1000
    lr = 1e-4

    [run]
    output_dir = "runs/align"

See ``docs/training.md`` for every field.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cheers.data.loader import DataSource
from cheers.errors import ConfigError

# Named groups of modules (prefixes under `model.`); "lm_head" is the top-level projection.
MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "vae": ("model.vae_model.",),
    "decoder_projector": ("model.vae_decoder_projector.",),
    "vision": ("model.vision_representation.",),
    "und_projector": ("model.und_projector.",),
    "language_model": ("model.language_model.",),
    "embeddings": ("model.language_model.embed_tokens.", "lm_head."),
    "time_embed": ("model.time_embed.",),
    "gen_projector": ("model.gen_projector.",),
    "hi_gate": ("model.hi_gate.",),
    "hi_projector": ("model.hi_projector.",),
}
# docs/architecture.md §9: stage I trains the new modules; later stages everything but the VAE.
TRAINABLE_PRESETS: dict[str, tuple[str, ...]] = {
    "new": (
        "decoder_projector",
        "und_projector",
        "embeddings",
        "time_embed",
        "gen_projector",
        "hi_gate",
        "hi_projector",
    ),
    "all": (
        "decoder_projector",
        "vision",
        "und_projector",
        "language_model",
        "embeddings",
        "time_embed",
        "gen_projector",
        "hi_gate",
        "hi_projector",
    ),
    "vae": ("vae",),
}
# The ViT's pooling head exists in the checkpoint but never contributes to an output.
NEVER_TRAINED = ("model.vision_representation.head.",)


@dataclass
class ModelInit:
    """Where the weights come from: a released folder, or a config/preset plus components."""

    from_pretrained: str | None = None
    preset: str | None = None  # "official" or "tiny"
    config: str | None = None  # a released-format config.json
    language_model: str | None = None  # Hugging Face Qwen2 folder
    vision_model: str | None = None  # Hugging Face SigLIP(2) folder
    vae: str | None = None  # FLUX-style autoencoder safetensors file
    tokenizer: str | None = None  # folder with tokenizer files (default: from_pretrained)


@dataclass
class DataConfig:
    files: list[DataSource] = field(default_factory=list)
    max_length: int = 2048
    bad_samples: str = "fail"  # or "skip"
    group_window: int = 8


@dataclass
class StageConfig:
    """One stage of the recipe."""

    name: str
    steps: int
    trainable: str | list[str] = "all"
    kind: str = "cheers"  # "cheers" (the joint objective) or "vae" (autoencoder from scratch)
    lr: float = 1e-4
    min_lr_ratio: float = 0.0
    schedule: str = "cosine"  # cosine | linear | constant
    warmup: float = 0.02  # fraction of the stage's steps
    batch_size: int = 8  # samples per optimizer step, over all processes
    grad_accum: int = 1
    clip: float = 1.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    guidance_dropout: float = 0.2
    # t of generation targets: α·u / (1 + (α−1)·u), u uniform; α < 1 trains more near noise
    # (the sampler's own shift, 0.5 by default); 1 is uniform.
    time_shift: float = 1.0
    kl_weight: float = 1e-6  # "vae" stages only

    def trainable_groups(self) -> tuple[str, ...]:
        if isinstance(self.trainable, str):
            if self.trainable not in TRAINABLE_PRESETS:
                raise ConfigError(
                    f"stage {self.name!r}: trainable = {self.trainable!r} is not a preset "
                    f"({', '.join(TRAINABLE_PRESETS)}); or give a list of {sorted(MODULE_GROUPS)}"
                )
            return TRAINABLE_PRESETS[self.trainable]
        unknown = [g for g in self.trainable if g not in MODULE_GROUPS]
        if unknown:
            raise ConfigError(
                f"stage {self.name!r}: unknown module group(s) {unknown}; "
                f"choose from {sorted(MODULE_GROUPS)}"
            )
        return tuple(self.trainable)


@dataclass
class RunConfig:
    output_dir: str = "runs/cheers"
    seed: int = 0
    save_every: int = 500
    log_every: int = 1
    keep_last: int = 2
    gradient_checkpointing: bool = False
    device: str | None = None  # default: cuda when available
    strategy: str = "ddp"  # with torchrun: "ddp" or "fsdp"
    progress: bool = True


@dataclass
class TrainConfig:
    model: ModelInit
    data: DataConfig
    stages: list[StageConfig]
    run: RunConfig
    path: Path | None = None  # the file it was read from

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read and validate a training config; relative paths resolve against its folder."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"training config {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from err
        return cls.from_dict(raw, base=path.parent, path=path)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path, path: Path | None = None) -> TrainConfig:
        def build(kind, data, where):
            if not isinstance(data, dict):
                raise ConfigError(f"[{where}] must be a table")
            names = {f.name for f in dataclasses.fields(kind)}
            unknown = sorted(set(data) - names)
            if unknown:
                raise ConfigError(
                    f"[{where}] has unknown field(s) {unknown}; known: {sorted(names)}"
                )
            try:
                return kind(**data)
            except TypeError as err:
                raise ConfigError(f"[{where}]: {err}") from err

        unknown = sorted(set(raw) - {"model", "data", "stages", "run"})
        if unknown:
            raise ConfigError(f"unknown section(s) {unknown}; expected model, data, stages, run")
        model = build(ModelInit, raw.get("model", {}), "model")
        data_raw = dict(raw.get("data", {}))
        files = data_raw.pop("files", [])
        data = build(DataConfig, data_raw, "data")
        data.files = [_source(f, base) for f in files]
        stages = [
            build(StageConfig, s, f"stages[{i}]") for i, s in enumerate(raw.get("stages", []))
        ]
        run = build(RunConfig, raw.get("run", {}), "run")
        for name in (
            "from_pretrained",
            "config",
            "language_model",
            "vision_model",
            "vae",
            "tokenizer",
        ):
            value = getattr(model, name)
            if value is not None and not Path(value).is_absolute() and (base / value).exists():
                setattr(model, name, str(base / value))
        if not Path(run.output_dir).is_absolute():
            run.output_dir = str(base / run.output_dir)
        config = cls(model, data, stages, run, path)
        config.validate()
        return config

    def validate(self) -> None:
        m = self.model
        if sum(x is not None for x in (m.from_pretrained, m.preset, m.config)) != 1:
            raise ConfigError(
                "[model] needs exactly one of from_pretrained (a released Cheers folder), "
                "preset ('official' or 'tiny') or config (a config.json)"
            )
        if m.from_pretrained is None and m.tokenizer is None:
            raise ConfigError("[model] tokenizer = <folder> is needed when not from_pretrained")
        if not self.stages:
            raise ConfigError("no [[stages]]: add at least one stage")
        if self.data.bad_samples not in ("fail", "skip"):
            raise ConfigError(
                f"data.bad_samples must be 'fail' or 'skip', not {self.data.bad_samples!r}"
            )
        if self.run.strategy not in ("ddp", "fsdp"):
            raise ConfigError(f"run.strategy must be 'ddp' or 'fsdp', not {self.run.strategy!r}")
        if self.run.save_every < 1 or self.run.log_every < 1:
            raise ConfigError("run.save_every and run.log_every must be ≥ 1")
        if not self.data.files:
            raise ConfigError("[data] files is empty: list the JSONL files to train on")
        names = set()
        for stage in self.stages:
            stage.trainable_groups()
            if stage.name in names:
                raise ConfigError(f"two stages are named {stage.name!r}; names must be unique")
            names.add(stage.name)
            if stage.kind not in ("cheers", "vae"):
                raise ConfigError(f"stage {stage.name!r}: kind must be 'cheers' or 'vae'")
            if stage.steps < 1:
                raise ConfigError(f"stage {stage.name!r}: steps must be ≥ 1")
            if stage.batch_size % stage.grad_accum:
                raise ConfigError(
                    f"stage {stage.name!r}: batch_size {stage.batch_size} is not divisible by "
                    f"grad_accum {stage.grad_accum}"
                )
            if stage.schedule not in ("cosine", "linear", "constant"):
                raise ConfigError(f"stage {stage.name!r}: unknown schedule {stage.schedule!r}")
            if not 0 <= stage.warmup < 1:
                raise ConfigError(f"stage {stage.name!r}: warmup is a fraction in [0, 1)")
            if not 0 <= stage.guidance_dropout <= 1:
                raise ConfigError(f"stage {stage.name!r}: guidance_dropout must be in [0, 1]")
            if not stage.time_shift > 0:
                raise ConfigError(
                    f"stage {stage.name!r}: time_shift must be > 0 (1 samples t uniformly, "
                    f"below 1 favours noise), got {stage.time_shift}"
                )


def _source(entry: Any, base: Path) -> DataSource:
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or "path" not in entry:
        raise ConfigError(f"data.files entries need a path, got {entry!r}")
    unknown = sorted(set(entry) - {"path", "weight", "image_root"})
    if unknown:
        raise ConfigError(f"data.files entry has unknown field(s) {unknown}")
    path = Path(entry["path"])
    root = entry.get("image_root")
    return DataSource(
        path=str(path if path.is_absolute() else base / path),
        weight=float(entry.get("weight", 1.0)),
        image_root=None if root is None else str(root if Path(root).is_absolute() else base / root),
    )


def lr_at(stage: StageConfig, step: int) -> float:
    """Learning rate of ``step`` (0-based) within ``stage``: linear warm-up, then decay."""
    warmup = int(stage.warmup * stage.steps)
    if step < warmup:
        return stage.lr * (step + 1) / warmup
    if stage.schedule == "constant":
        return stage.lr
    progress = (step - warmup) / max(1, stage.steps - warmup)
    floor = stage.lr * stage.min_lr_ratio
    if stage.schedule == "linear":
        return floor + (stage.lr - floor) * (1 - progress)
    import math

    return floor + (stage.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
