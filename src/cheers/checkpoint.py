"""Reading and writing model folders in the released format (safetensors only, never pickle).

A model folder holds ``config.json``, the weights as ``model.safetensors`` or as shards listed
by a ``*.safetensors.index.json``, and the tokenizer files. :func:`load_model` builds the model
on the meta device and fills it tensor by tensor, so a 5.6 GB checkpoint never exists twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cheers._files import ensure_folder, staged_files
from cheers.config import CheersConfig
from cheers.errors import CheckpointError
from cheers.model import Cheers

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
EMBED_KEY = "model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None`` picks bfloat16 on CUDA and float32 elsewhere."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise CheckpointError(
                f"dtype {dtype} is not a floating-point type; use torch.float32, bfloat16 or "
                "float16 (int8 weights: cheers.transforms.quantize)"
            )
        return dtype
    if not isinstance(dtype, str) or dtype not in _DTYPES:
        raise CheckpointError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A local folder, or a Hub repository id (``ai9stars/Cheers``) downloaded when online."""
    check_path(name_or_path, "the model folder")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(
                f"{path} is a file; pass the model folder that holds config.json and the weights"
            )
        return path
    if _REPO_ID.match(str(name_or_path)) and not str(name_or_path).startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download
        except ImportError as err:
            raise CheckpointError(
                f"{name_or_path!r} is not a local folder and huggingface_hub is not installed; "
                "download the model folder yourself or `pip install 'cheers[hub]'`"
            ) from err
        try:
            return Path(
                snapshot_download(
                    str(name_or_path),
                    allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
                )
            )
        except Exception as err:  # network, authentication, missing repository
            raise CheckpointError(
                f"could not download {name_or_path!r} from the Hugging Face Hub ({err}); "
                "check the name and your connection, or pass a local folder"
            ) from err
    raise CheckpointError(
        f"model folder {str(name_or_path)!r} does not exist; pass a folder holding config.json "
        "and model.safetensors (or a sharded *.safetensors.index.json)"
    )


def check_path(value: object, what: str) -> None:
    """Raise :class:`CheckpointError` unless ``value`` is a non-empty path (str or PathLike)."""
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise CheckpointError(
            f"{what} must be a path (a str or pathlib.Path), got {value!r}; pass the folder "
            "that holds config.json and the weights"
        )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device that exists on this machine (default: the CPU)."""
    try:
        resolved = torch.device(device or "cpu")
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(
            f"device {device!r} is not a device name; use 'cpu', 'cuda', 'cuda:1' or 'mps'"
        ) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(
            f"device {device!r} asks for a GPU but CUDA is not available here (no GPU, or a "
            "CPU-only PyTorch); use device='cpu'"
        )
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise CheckpointError(
            f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
            "GPU(s), numbered from 0"
        )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise CheckpointError(f"device {device!r} is not available here; use device='cpu'")
    return resolved


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a folder: the index's shards, or the single file."""
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        index = indexes[0]
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CheckpointError(
                f"{index} is not a valid safetensors index ({err}); it needs a 'weight_map' "
                "object mapping tensor names to shard files"
            ) from err
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise CheckpointError(
                f"{index.name} lists shard(s) missing from {folder}: {', '.join(missing)}; "
                "download the complete checkpoint"
            )
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    pickled = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
    hint = (
        f" Found {', '.join(pickled)}: pickle checkpoints are not loaded (they can run code); "
        "convert them to safetensors first."
        if pickled
        else ""
    )
    raise CheckpointError(
        f"no weights in {folder}: expected model.safetensors or a "
        f"*.safetensors.index.json with its shards.{hint}"
    )


def iter_tensors(
    files: list[Path], skip: frozenset[str] = frozenset()
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (name, tensor) of the files but ``skip``, read lazily; corrupt files raise
    CheckpointError."""
    for file in files:
        if file.stat().st_size == 0:
            raise CheckpointError(f"{file} is empty (0 bytes); re-download or re-save it")
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if name not in skip:
                        yield name, handle.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"{file} is truncated or corrupt and cannot be read ({err}); "
                "re-download or re-save it"
            ) from err


def _sample_rows(files: list[Path], key: str, rows: int = 4) -> torch.Tensor | None:
    """The first and last ``rows`` rows of tensor ``key`` without reading the rest of it."""
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            if key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                part = handle.get_slice(key)
                n = part.get_shape()[0]
                return torch.cat([part[: min(rows, n)], part[max(n - rows, 0) :]])
    return None


def load_state_dict(folder: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All tensors of a model folder, as stored."""
    return dict(iter_tensors(weight_files(resolve_model_path(folder))))


def check_state_dict(
    model: Cheers, state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Raise CheckpointError naming every missing, unexpected or mis-shaped tensor."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict(keep_vars=True).items()}
    problems: list[str] = []
    missing = sorted(set(expected) - set(state))
    if model.config.text_config.tie_word_embeddings:
        # A tied head may be stored only once (and load_model never reads its second copy).
        missing = [k for k in missing if k != LM_HEAD_KEY]
    unexpected = sorted(set(state) - set(expected))
    for kind, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            shown = ", ".join(keys[:10]) + (
                f" … and {len(keys) - 10} more" if len(keys) > 10 else ""
            )
            problems.append(f"{len(keys)} {kind} tensor(s): {shown}")
    for key in sorted(set(expected) & set(state)):
        got = tuple(state[key].shape)
        if got != expected[key]:
            problems.append(f"{key}: {source} has shape {got}, the config implies {expected[key]}")
    if problems:
        raise CheckpointError(
            f"the {source} does not match config.json:\n  - "
            + "\n  - ".join(problems)
            + "\nCheck that config.json belongs to these weights."
        )
    if LM_HEAD_KEY in state and EMBED_KEY in state:
        head, embed = state[LM_HEAD_KEY], state[EMBED_KEY]
        tied = model.config.text_config.tie_word_embeddings
        if tied and not torch.equal(head, embed):
            raise CheckpointError(
                f"config.json ties the word embeddings but {LM_HEAD_KEY} differs from "
                f"{EMBED_KEY} in the {source}; set text_config.tie_word_embeddings to false "
                "or fix the checkpoint"
            )


def load_model(
    name_or_path: str | os.PathLike[str],
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
) -> Cheers:
    """Load a Cheers model folder (local path or Hub id) in eval mode.

    ``dtype``: "float32" / "bfloat16" / a torch dtype; by default bfloat16 on CUDA and float32
    elsewhere. ``device``: where the weights go (default CPU).
    """
    folder = resolve_model_path(name_or_path)
    config = CheersConfig.from_json(folder)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    files = weight_files(folder)
    tied = config.text_config.tie_word_embeddings
    # A tied head is the embedding table: its second stored copy (as large as the table) is
    # never read; a sample of its rows still catches a checkpoint whose head differs.
    state = dict(iter_tensors(files, skip=frozenset({LM_HEAD_KEY} if tied else ())))
    if tied:
        head, embed = _sample_rows(files, LM_HEAD_KEY), _sample_rows(files, EMBED_KEY)
        if head is not None and embed is not None and not torch.equal(head, embed):
            raise CheckpointError(
                f"config.json ties the word embeddings but {LM_HEAD_KEY} differs from "
                f"{EMBED_KEY} in the checkpoint in {folder}; set "
                "text_config.tie_word_embeddings to false or fix the checkpoint"
            )
    with torch.device("meta"):
        model = Cheers(config)
    check_state_dict(model, state, source=f"checkpoint in {folder}")
    if LM_HEAD_KEY not in state:
        state[LM_HEAD_KEY] = state[EMBED_KEY]
    state = {
        k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        for k, v in state.items()
    }
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def save_model(
    model: Cheers, folder: str | os.PathLike[str], max_shard_bytes: int | None = None
) -> Path:
    """Write ``config.json`` and the weights in the released format, atomically per file.

    Both ``lm_head.weight`` and the token embeddings are stored (as in the release). With
    ``max_shard_bytes`` the weights are split into ``model-0000k-of-0000n.safetensors`` shards
    with a ``model.safetensors.index.json``.
    """
    return save_state(model.state_dict(), model.config, folder, max_shard_bytes)


def save_state(
    state: dict[str, torch.Tensor],
    config: CheersConfig,
    folder: str | os.PathLike[str],
    max_shard_bytes: int | None = None,
) -> Path:
    """:func:`save_model` for a state dict (e.g. one gathered from a sharded training run)."""
    check_path(folder, "the folder to save to")
    if max_shard_bytes is not None and (
        not isinstance(max_shard_bytes, int)
        or isinstance(max_shard_bytes, bool)
        or max_shard_bytes < 1
    ):
        raise CheckpointError(
            f"max_shard_bytes must be a positive int (e.g. 5 * 2**30) or None, got "
            f"{max_shard_bytes!r}"
        )
    folder = Path(folder)
    ensure_folder(folder)  # a clear error for a file path, before the (slow) copy below
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    floating = [v.dtype for v in state.values() if v.is_floating_point()]
    dtype_name = str(floating[0] if floating else torch.float32).removeprefix("torch.")
    shards = _split(state, max_shard_bytes)
    with staged_files(folder) as (staging, names):
        if len(shards) == 1:
            save_file(shards[0], str(staging / "model.safetensors"), metadata={"format": "pt"})
            names.append("model.safetensors")
        else:
            weight_map: dict[str, str] = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, str(staging / name), metadata={"format": "pt"})
                weight_map.update(dict.fromkeys(shard, name))
                names.append(name)
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {
                "metadata": {"total_size": total},
                "weight_map": dict(sorted(weight_map.items())),
            }
            (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
            names.append("model.safetensors.index.json")
        config = dataclasses.replace(config, extra={**config.extra, "torch_dtype": dtype_name})
        config.save(staging)
        names.append("config.json")
    # Weights of an earlier save in another layout would make the folder ambiguous.
    stale = [*folder.glob("model*.safetensors"), *folder.glob("*.safetensors.index.json")]
    for old in stale:
        if old.name not in names:
            old.unlink()
    return folder


def _split(
    state: dict[str, torch.Tensor], max_shard_bytes: int | None
) -> list[dict[str, torch.Tensor]]:
    if max_shard_bytes is None:
        return [state]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards
