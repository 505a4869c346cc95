"""Training configuration: a TOML file of model initialisation, data, stages and run settings.

*Length*: over 400 lines because the recipe's schema (dataclasses), its TOML reader and every
check with its error message are one description of the file format, read top to bottom.

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
import difflib
import math
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cheers.data.loader import DataSource
from cheers.errors import CheersError, ConfigError
from cheers.transforms.lora import LoraConfig
from cheers.transforms.targets import TARGET_GROUPS

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
    # [model.lora]: train low-rank adapters on from_pretrained's frozen weights instead of
    # whole modules (rank, alpha, dropout, targets: groups of cheers.transforms.targets).
    lora: LoraConfig | None = None


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
    # Weight of the flow-matching loss against the text loss ("cheers" stages; the paper: 1).
    image_loss_weight: float = 1.0
    # This stage's visits per epoch of each [data] file, in order (default: the files' own
    # weights): a curriculum, e.g. text-to-image first, then understanding mixed in.
    data_weights: tuple[float, ...] | None = None
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
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ConfigError(f"the training config must be a path to a TOML file, got {path!r}")
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"training config {path} is a folder; pass the TOML file in it")
        if not path.is_file():
            raise ConfigError(f"training config {path} does not exist")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path} is not valid TOML: {err}; fix the syntax there") from err
        except OSError as err:
            raise ConfigError(f"cannot read training config {path}: {err}") from err
        try:
            return cls.from_dict(raw, base=path.parent, path=path)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path, path: Path | None = None) -> TrainConfig:
        def build(kind, data, where):
            if not isinstance(data, dict):
                raise ConfigError(
                    f"{where} is {_type_name(data)}, not a table. Write it as a TOML table "
                    f"({'[[stages]]' if where.startswith('stages') else f'[{where}]'} followed "
                    "by key = value lines)."
                )
            names = [f.name for f in dataclasses.fields(kind) if f.name != "files"]
            _reject_unknown(data, names, where)
            required = [
                f.name
                for f in dataclasses.fields(kind)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ]
            missing = [name for name in required if name not in data]
            if missing:
                raise ConfigError(
                    f"{where} lacks {', '.join(missing)}, which has no default. Add e.g. "
                    + ", ".join(f"{name} = {_RULES[name].example}" for name in missing)
                    + "."
                )
            return kind(**data)

        if not isinstance(raw, dict):
            raise ConfigError(f"a training config is a table of sections, got {_type_name(raw)}")
        _reject_unknown(raw, ["model", "data", "stages", "run"], "the config (top level)")
        model_raw = raw.get("model", {})
        model_raw = dict(model_raw) if isinstance(model_raw, dict) else model_raw
        lora_raw = model_raw.pop("lora", None) if isinstance(model_raw, dict) else None
        model = build(ModelInit, model_raw, "model")
        if lora_raw is not None:
            model.lora = _lora(lora_raw)
            stages_given = raw.get("stages", [])
            for i, stage in enumerate(stages_given if isinstance(stages_given, list) else []):
                if isinstance(stage, dict) and "trainable" in stage:
                    raise ConfigError(
                        f"stages[{i}].trainable: with [model.lora] the adapters are what "
                        "trains; remove trainable from the stage (or remove [model.lora] to "
                        "train whole modules)"
                    )
        data_raw = raw.get("data", {})
        data_raw = dict(data_raw) if isinstance(data_raw, dict) else data_raw
        files = data_raw.pop("files", []) if isinstance(data_raw, dict) else []
        data = build(DataConfig, data_raw, "data")
        if not isinstance(files, list):
            raise ConfigError(
                f"data.files is {_type_name(files)}, not a list. Write "
                'files = [{ path = "train.jsonl" }] (or a list of paths).'
            )
        data.files = [_source(f, base, i) for i, f in enumerate(files)]
        stages_raw = raw.get("stages", [])
        if not isinstance(stages_raw, list):
            raise ConfigError(
                f"stages is {_type_name(stages_raw)}, not a list of tables. Write each stage "
                "as a [[stages]] table."
            )
        stages = [build(StageConfig, s, f"stages[{i}]") for i, s in enumerate(stages_raw)]
        run = build(RunConfig, raw.get("run", {}), "run")
        for section, where in (
            (model, "model"),
            (data, "data"),
            *((stage, f"stages[{i}]") for i, stage in enumerate(stages)),
            (run, "run"),
        ):
            _check_fields(section, where)
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
        """Check every field's type and range, then the rules that tie fields together.

        Raises :class:`ConfigError` naming the field, the problem and a valid value.
        """
        _check_fields(self.model, "model")
        _check_fields(self.data, "data")
        for i, stage in enumerate(self.stages):
            _check_fields(stage, f"stages[{i}]")
        _check_fields(self.run, "run")
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
        if m.lora is not None:
            if m.from_pretrained is None:
                raise ConfigError(
                    "[model.lora] adapts a released model: set [model] from_pretrained "
                    "(an adapter on random weights would be of no use)"
                )
            for i, stage in enumerate(self.stages):
                if stage.kind == "vae":
                    raise ConfigError(
                        f"stages[{i}] ({stage.name!r}) is a 'vae' stage, which trains the "
                        'autoencoder whole; with [model.lora] use kind = "cheers" stages'
                    )
        if not self.data.files:
            raise ConfigError(
                "[data] files is empty: list the JSONL files to train on, e.g. files = "
                '[{ path = "train.jsonl" }]'
            )
        names = set()
        for i, stage in enumerate(self.stages):
            stage.trainable_groups()
            if stage.name in names:
                raise ConfigError(
                    f"stages[{i}].name: two stages are named {stage.name!r}; give each stage "
                    "its own name"
                )
            names.add(stage.name)
            if stage.batch_size % stage.grad_accum:
                raise ConfigError(
                    f"stages[{i}] ({stage.name!r}): batch_size {stage.batch_size} is not "
                    f"divisible by grad_accum {stage.grad_accum}; make batch_size a multiple "
                    "of grad_accum"
                )


# -- the schema: every field's type and range, checked in one place ----------------------------


@dataclass(frozen=True)
class _Rule:
    """What one field accepts: a kind of value, a range (as a test and in words) and an example."""

    kind: str  # int | float | str | bool | optional_str | betas | weights | trainable | targets
    # | choice
    example: str
    test: Callable[[Any], bool] | None = None
    need: str = ""
    choices: tuple[str, ...] = ()


def _at_least(low: float) -> Callable[[Any], bool]:
    return lambda v: v >= low


def _positive(v: float) -> bool:
    return v > 0


def _fraction(v: float) -> bool:
    return 0 <= v <= 1


def _choice(example: str, *choices: str) -> _Rule:
    return _Rule("choice", repr(example).replace("'", '"'), choices=choices)


_PATH = _Rule("optional_str", '"path/to/folder"')
_RULES: dict[str, _Rule] = {
    # [model]
    "from_pretrained": _PATH,
    "preset": _Rule(
        "optional_str", '"tiny"', lambda v: v in ("official", "tiny"), "'official' or 'tiny'"
    ),
    "config": _Rule("optional_str", '"config.json"'),
    "language_model": _PATH,
    "vision_model": _PATH,
    "vae": _Rule("optional_str", '"ae.safetensors"'),
    "tokenizer": _PATH,
    # [model.lora]
    "rank": _Rule("int", "8", _at_least(1), "≥ 1"),
    "alpha": _Rule("float", "16.0", _positive, "> 0 (the update is scaled by alpha / rank)"),
    "dropout": _Rule("float", "0.0", lambda v: 0 <= v < 1, "in [0, 1)"),
    "targets": _Rule("targets", '["llm_attention", "llm_mlp"]'),
    # [data]
    "max_length": _Rule("int", "2048", _at_least(1), "≥ 1"),
    "bad_samples": _choice("fail", "fail", "skip"),
    "group_window": _Rule("int", "8", _at_least(1), "≥ 1"),
    # [[stages]]
    "name": _Rule("str", '"align"', lambda v: bool(v.strip()), "a non-empty name"),
    "steps": _Rule("int", "1000", _at_least(1), "≥ 1"),
    "trainable": _Rule("trainable", '"all"'),
    "kind": _choice("cheers", "cheers", "vae"),
    "lr": _Rule("float", "1e-4", _positive, "> 0"),
    "min_lr_ratio": _Rule("float", "0.0", _fraction, "in [0, 1]"),
    "schedule": _choice("cosine", "cosine", "linear", "constant"),
    "warmup": _Rule("float", "0.02", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    "batch_size": _Rule("int", "8", _at_least(1), "≥ 1"),
    "grad_accum": _Rule("int", "1", _at_least(1), "≥ 1"),
    "clip": _Rule("float", "1.0", _positive, "> 0"),
    "weight_decay": _Rule("float", "0.0", _at_least(0), "≥ 0"),
    "betas": _Rule("betas", "[0.9, 0.95]"),
    "guidance_dropout": _Rule("float", "0.2", _fraction, "in [0, 1]"),
    "time_shift": _Rule(
        "float", "1.0", _positive, "> 0 (1 samples t uniformly, below 1 favours noise)"
    ),
    "image_loss_weight": _Rule("float", "1.0", _at_least(0), "≥ 0"),
    "data_weights": _Rule("weights", "[1.0, 0.0]"),
    "kl_weight": _Rule("float", "1e-6", _at_least(0), "≥ 0"),
    # [run]
    "output_dir": _Rule("str", '"runs/cheers"', lambda v: bool(v.strip()), "a non-empty path"),
    # Seeds feed torch generators after arithmetic (seed·1000003 + epoch): keep them 32-bit.
    "seed": _Rule("int", "0", lambda v: 0 <= v < 2**32, "in [0, 2³²)"),
    "save_every": _Rule("int", "500", _at_least(1), "≥ 1"),
    "log_every": _Rule("int", "1", _at_least(1), "≥ 1"),
    "keep_last": _Rule("int", "2", _at_least(1), "≥ 1"),
    "gradient_checkpointing": _Rule("bool", "false"),
    "device": _Rule("optional_str", '"cuda"', None, "a torch device such as 'cuda' or 'cpu'"),
    "strategy": _choice("ddp", "ddp", "fsdp"),
    "progress": _Rule("bool", "true"),
}


def _valid_device(value: str) -> bool:
    import torch

    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return False
    return True


_RULES["device"] = dataclasses.replace(_RULES["device"], test=_valid_device)


def _type_name(value: Any) -> str:
    """The TOML kind of ``value`` with its article ("an integer"), for messages."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), f"a {type(value).__name__}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_fields(section: Any, where: str) -> None:
    """Check (and normalise: ints → floats, lists → tuples) every field of one section."""
    for f in dataclasses.fields(section):
        rule = _RULES.get(f.name)
        if rule is None:  # data.files: checked entry by entry in _source
            continue
        value = getattr(section, f.name)
        setattr(section, f.name, _check_value(value, rule, f"{where}.{f.name}", f.name))


def _check_value(value: Any, rule: _Rule, where: str, key: str) -> Any:
    given = value  # the message quotes the value as written, before any normalisation

    def fail(problem: str, fix: str | None = None) -> ConfigError:
        fix = fix or f"write e.g. {key} = {rule.example}"
        return ConfigError(f"{where} = {given!r}: {problem}; {fix}")

    kind = rule.kind
    if kind == "optional_str" and value is None:
        return None
    if kind in ("str", "optional_str", "choice") and not isinstance(value, str):
        raise fail(f"must be a string (in quotes), got {_type_name(value)}")
    if kind == "choice" and value not in rule.choices:
        close = difflib.get_close_matches(value, rule.choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise fail(f"must be one of {', '.join(map(repr, rule.choices))}{hint}")
    if kind == "bool" and not isinstance(value, bool):
        raise fail(f"must be true or false (no quotes), got {_type_name(value)}")
    if kind == "int":
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            raise fail(
                "must be an integer", f"write it without a decimal point: {key} = {int(value)}"
            )
        if not _is_int(value):
            hint = " (remove the quotes)" if isinstance(value, str) else ""
            raise fail(f"must be an integer, got {_type_name(value)}{hint}")
    if kind == "float":
        if not _is_number(value):
            hint = " (remove the quotes)" if isinstance(value, str) else ""
            raise fail(f"must be a number, got {_type_name(value)}{hint}")
        if not math.isfinite(value):
            raise fail("must be a finite number")
        value = float(value)
    if kind == "betas":
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(_is_number(b) and math.isfinite(b) for b in value)
        ):
            raise fail("must be two numbers (β1, β2)")
        if not all(0 <= b < 1 for b in value):
            raise fail("each beta must be in [0, 1)")
        return (float(value[0]), float(value[1]))
    if kind == "weights":
        if value is None:
            return None
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(_is_number(w) and math.isfinite(w) for w in value)
        ):
            raise fail("must be a list of numbers, one per [data] file")
        if any(w < 0 for w in value) or not any(w > 0 for w in value):
            raise fail("each weight must be ≥ 0 and at least one > 0")
        return tuple(float(w) for w in value)
    if kind == "trainable":
        if isinstance(value, list) and all(isinstance(g, str) for g in value) and value:
            return value
        if not isinstance(value, str):
            raise fail(
                f"must be a preset ({', '.join(map(repr, TRAINABLE_PRESETS))}) or a non-empty "
                f"list of module groups ({', '.join(sorted(MODULE_GROUPS))})"
            )
    if kind == "targets":
        if not isinstance(value, list) or not value or not all(isinstance(g, str) for g in value):
            raise fail(f"must be a non-empty list of target groups ({', '.join(TARGET_GROUPS)})")
        for group in value:
            if group not in TARGET_GROUPS:
                close = difflib.get_close_matches(group, list(TARGET_GROUPS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise fail(
                    f"{group!r} is not a target group{hint}; choose from {', '.join(TARGET_GROUPS)}"
                )
        return tuple(value)
    if rule.test is not None and not rule.test(value):
        raise fail(f"must be {rule.need}")
    return value


def _lora(data: Any) -> LoraConfig:
    """The ``[model.lora]`` table as a :class:`LoraConfig` (defaults: LoraConfig's)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"model.lora is {_type_name(data)}, not a table. Write it as a [model.lora] table "
            "(rank = 8, alpha = 16, targets = [...])."
        )
    names = [f.name for f in dataclasses.fields(LoraConfig)]
    _reject_unknown(data, names, "model.lora")
    checked = {k: _check_value(v, _RULES[k], f"model.lora.{k}", k) for k, v in data.items()}
    try:
        return LoraConfig(**checked)
    except CheersError as err:  # every field was checked above; kept for rules added there
        raise ConfigError(f"model.lora: {err}") from err


def _reject_unknown(data: dict[str, Any], known: list[str], where: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where} has an unknown key {key!r}; {hint}known keys: {', '.join(known)}"
            )


def _source(entry: Any, base: Path, index: int = 0) -> DataSource:
    where = f"data.files[{index}]"
    if isinstance(entry, str):
        entry = {"path": entry}
    if not isinstance(entry, dict) or "path" not in entry:
        raise ConfigError(
            f"{where} = {entry!r}: each entry needs a path; write "
            '{ path = "train.jsonl" } or "train.jsonl"'
        )
    _reject_unknown(entry, ["path", "weight", "image_root"], where)
    path_value = entry["path"]
    if not isinstance(path_value, str) or not path_value.strip():
        raise ConfigError(f"{where}.path = {path_value!r}: must be a non-empty path string")
    weight = entry.get("weight", 1.0)
    if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
        raise ConfigError(
            f"{where}.weight = {weight!r}: must be a finite number ≥ 0 (visits per epoch); "
            "write e.g. weight = 1.0"
        )
    root = entry.get("image_root")
    if root is not None and not isinstance(root, str):
        raise ConfigError(f"{where}.image_root = {root!r}: must be a folder path string")
    path = Path(path_value)
    return DataSource(
        path=str(path if path.is_absolute() else base / path),
        weight=float(weight),
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
