"""Reading and writing model folders in the released format (safetensors only, never pickle).

*Length*: over 400 lines because loading and saving a folder mirror each other check for check
(names, shapes, dtypes, shards, the quantized layout); kept together so that each check sits
beside its mirror.

A model folder holds ``config.json``, the weights as ``model.safetensors`` or as shards listed
by a ``*.safetensors.index.json``, and the tokenizer files. :func:`load_model` builds the model
on the meta device and fills it tensor by tensor, so a 5.6 GB checkpoint never exists twice: a
tensor already in the requested dtype (on CPU) becomes the module's storage as it is mapped
from the file (no copy); every other one is read through a mapping of its own, converted (or
quantized), and its mapping closed before the next is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cheers._files import ensure_folder, staged_files
from cheers.config import CheersConfig
from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.transforms.lowbit import CONFIG_KEY, restore_structure

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
# safetensors' dtype codes of the dtypes a model loads in, and of every floating dtype.
_CODES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
_FLOAT_CODES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})
QUANTIZE_CHOICES = ("int8",)
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


@contextlib.contextmanager
def open_weights(file: Path) -> Iterator[Any]:
    """``safe_open`` one weight file; an empty, truncated or corrupt file (found on opening it
    or on any read inside the ``with``) is a CheckpointError naming it and the fix."""
    if file.stat().st_size == 0:
        raise CheckpointError(f"{file} is empty (0 bytes); re-download or re-save it")
    try:
        with safe_open(str(file), framework="pt") as handle:
            yield handle
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"{file} is truncated or corrupt and cannot be read ({err}); re-download or re-save it"
        ) from err


def iter_tensors(
    files: list[Path],
    skip: frozenset[str] = frozenset(),
    mapped: Callable[[str, str], bool] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Every (name, tensor) of the files but ``skip``, read lazily (memory-mapped); corrupt
    files raise CheckpointError.

    ``mapped(name, dtype_code)`` says which tensors are kept as stored (they share the file's
    mapping, which lives as long as any of them); every other tensor comes through a mapping
    of its own, released when the caller drops the tensor, so reading and converting
    tensor after tensor holds at most one of them in memory. ``None`` keeps every tensor.
    """
    for file in files:
        with open_weights(file) as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if name in skip:
                    continue
                if mapped is None or mapped(name, handle.get_slice(name).get_dtype()):
                    yield name, handle.get_tensor(name)
                else:
                    with safe_open(str(file), framework="pt") as own:
                        tensor = own.get_tensor(name)
                    yield name, tensor
                    del tensor  # the caller holds the only reference now


def stored_shapes(files: list[Path], skip: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Every stored tensor as an empty ``meta`` tensor of its shape (headers only)."""
    shapes: dict[str, torch.Tensor] = {}
    for file in files:
        with open_weights(file) as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if name not in skip:
                    shape = handle.get_slice(name).get_shape()
                    shapes[name] = torch.empty(shape, device="meta")
    return shapes


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
    quantize: str | None = None,
) -> Cheers:
    """Load a Cheers model folder (local path or Hub id) in eval mode, tensor by tensor.

    ``dtype``: the compute dtype, "float32" / "bfloat16" / a torch dtype; by default bfloat16
    on CUDA and float32 elsewhere. ``device``: where the weights go (default CPU).
    ``quantize``: "int8" stores the linear layers of the LLM, the ViT and the flow heads as
    int8 weights (:mod:`cheers.transforms.quantize`), each quantized as it is read. A folder
    written by ``cheers quantize`` (2-/4-bit weights, :mod:`cheers.quantization`) loads as
    it was saved; its config's ``quantization_config`` says which layers are quantized.
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise CheckpointError(
            f"unknown quantization {quantize!r}; use one of {', '.join(QUANTIZE_CHOICES)} or none"
        )
    folder = resolve_model_path(name_or_path)
    config = CheersConfig.from_json(folder)
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    files = weight_files(folder)
    tied = config.text_config.tie_word_embeddings
    # A tied head is the embedding table: its second stored copy (as large as the table) is
    # never read; a sample of its rows still catches a checkpoint whose head differs.
    skip = frozenset({LM_HEAD_KEY} if tied else ())
    shapes = stored_shapes(files, skip)
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
    if CONFIG_KEY in config.extra:  # a folder `cheers quantize` wrote
        restore_structure(model, str(folder))
        if quantize is not None:
            raise CheckpointError(
                f"{folder} holds {config.extra[CONFIG_KEY]['bits']}-bit quantized weights "
                f"already; load it without quantize={quantize!r} (--quantize)"
            )
    check_state_dict(model, shapes, source=f"checkpoint in {folder}")
    if quantize == "int8":
        from cheers.transforms.quantize import quantize_int8

        quantize_int8(model)
    owners = {name: _owner(model, name) for name in shapes}
    kept: set[str] = set()

    def mapped(name: str, code: str) -> bool:
        # Kept as stored (zero copy) when nothing would change it: CPU, the requested dtype,
        # and no transform that stores it otherwise.
        owner, _ = owners[name]
        keep = (
            device.type == "cpu"
            and (code == _CODES.get(dtype) or code not in _FLOAT_CODES)
            and not hasattr(owner, "load_checkpoint_tensor")
        )
        if keep:
            kept.add(name)
        return keep

    for name, tensor in iter_tensors(files, skip, mapped):
        owner, leaf = owners[name]
        target = dtype if tensor.is_floating_point() else tensor.dtype
        value = tensor.to(device=device, dtype=target)
        if value is tensor and name not in kept:
            value = tensor.clone()  # what is not kept must not pin its own file mapping
        _assign(owner, leaf, value)
        del tensor, value  # a converted tensor's source mapping closes here
    model.tie_weights()
    empty = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if empty:  # check_state_dict covers the stored names; this guards the transforms
        raise CheckpointError(f"{len(empty)} tensor(s) not filled from {folder}: {empty[:5]}")
    model.compute_dtype = dtype
    return model.eval()


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The module holding the checkpoint tensor ``name`` and the tensor's name in it."""
    prefix, _, leaf = name.rpartition(".")
    return (model.get_submodule(prefix) if prefix else model), leaf


def _assign(owner: nn.Module, leaf: str, tensor: torch.Tensor) -> None:
    """Make ``tensor`` the storage of ``owner.<leaf>`` (no copy), or hand it to a transform's
    module that stores it its own way (``load_checkpoint_tensor``, e.g. int8 weights)."""
    load = getattr(owner, "load_checkpoint_tensor", None)
    if load is not None:
        load(leaf, tensor)
    elif leaf in owner._parameters:
        old = owner._parameters[leaf]
        setattr(owner, leaf, nn.Parameter(tensor, requires_grad=old.requires_grad))
    else:
        setattr(owner, leaf, tensor)


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
    state = {k: v.detach() for k, v in state.items()}
    floating = [v.dtype for v in state.values() if v.is_floating_point()]
    dtype_name = str(floating[0] if floating else torch.float32).removeprefix("torch.")
    shards = _split(state, max_shard_bytes)
    with staged_files(folder) as (staging, names):
        if len(shards) == 1:
            save_file(
                _own(shards[0]), str(staging / "model.safetensors"), metadata={"format": "pt"}
            )
            names.append("model.safetensors")
        else:
            weight_map: dict[str, str] = {}
            for i, shard in enumerate(shards, start=1):
                name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(_own(shard), str(staging / name), metadata={"format": "pt"})
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


def _own(shard: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of one shard's tensors (safetensors refuses tensors sharing storage, as the
    tied head does); one shard at a time, so saving never holds a second copy of the model."""
    return {k: v.to("cpu").contiguous().clone() for k, v in shard.items()}


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
