"""Where a model comes from and where it runs: the embedded default, the device, the load.

Every front end (the CLI, the evaluation exports, the integrations, the server) loads its model
through :func:`load_pipeline`, so ``--model`` left out, ``--device`` and ``--dtype`` mean the same
everywhere.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cheers.errors import CheersError

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline

#: Help of the ``--lora`` flag, the same on every command that loads a model.
LORA_FLAG_HELP = (
    "put a LoRA adapter on the model: the adapter folder a LoRA run writes "
    "(adapter_config.json + adapter_model.safetensors), optionally with a scale that "
    "multiplies its effect, e.g. runs/mine/checkpoints/step-0000100/adapter:0.8"
)

#: Where the model shipped inside the package lives; used when no model is named.
DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"

#: What the embedded model can do (said when it loads, and in the demo's page).
SHAPES_ONLY = (
    "The embedded model is tiny and knows only the Shapes world: circles, squares and "
    "triangles in six colours. Pass --model with the released Cheers for anything else."
)


def default_model_path() -> Path:
    """The folder of the model embedded in the package, used when ``--model`` is omitted.

    Raises :class:`CheersError` when the package ships no model (no ``config.json`` there).
    """
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return DEFAULT_MODEL_DIR
    raise CheersError(
        "no model given and none is embedded in this installation; pass --model DIR with a "
        "downloaded ai9stars/Cheers folder (config.json, weights, tokenizer) or a Hub id such "
        "as --model ai9stars/Cheers"
    )


def is_embedded(model: str | Path | None) -> bool:
    """Whether ``model`` names the model embedded in the package (or is left out)."""
    if model is None:
        return True
    return Path(model).resolve() == DEFAULT_MODEL_DIR.resolve()


def parse_device_flag(device: str | None) -> str:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N`` (``None`` picks cuda when there is a GPU),
    checked against this machine by the library's one resolver, ``checkpoint.resolve_device``."""
    import torch

    from cheers.checkpoint import resolve_device
    from cheers.errors import CheckpointError

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise CheersError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    try:
        resolve_device(device)
    except CheckpointError as err:
        raise CheersError(f"--device {device}: {err}") from err
    return device


def cpu_has_bfloat16_matrix_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX), where bfloat16
    convolutions run several times faster than float32 ones (docs/performance.md §5)."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private: may go away
    return bool(probe is not None and probe())


def load_pipeline(
    model: str | None,
    dtype: str | None = None,
    device: str | None = None,
    lora: str | None = None,
    quantize: str | None = None,
    offload: bool = False,
    compile: bool = False,
    kv_cache: str | None = None,
) -> CheersPipeline:
    """Load ``model`` (a folder or Hub id; ``None`` = the embedded default) onto ``device``,
    with the LoRA adapter ``lora`` (``DIR`` or ``DIR:SCALE``) on it when given.

    ``quantize="int8"`` keeps the large linear layers in int8; ``offload`` keeps the large
    components on the CPU and runs each on the (CUDA) ``device`` when used; ``compile`` applies
    :meth:`CheersPipeline.compile <cheers.pipeline.CheersPipeline.compile>`; ``kv_cache``
    ("float", "int4", "int4-naive"; None: float) is the format of the KV caches. Says on stderr
    what is loaded where, and that the embedded model knows only the Shapes world.
    """
    from cheers.adapters import parse_lora_spec
    from cheers.pipeline import CheersPipeline

    source = model if model is not None else str(default_model_path())
    adapter = None if lora is None else parse_lora_spec(lora)  # fails before the slow load
    device = parse_device_flag(device)
    if offload and device == "cpu":
        raise CheersError(
            "--offload moves parts of the model to a GPU when they run; on the CPU the model "
            "is in CPU memory already: drop --offload (or pass --device cuda)"
        )
    if offload and compile:
        raise CheersError(
            "--compile and --offload do not go together (offload moves the weights at every "
            "call); drop one of them"
        )
    print(f"loading the model from {source} on {device}…", file=sys.stderr)
    if is_embedded(source):
        print(SHAPES_ONLY, file=sys.stderr)
    elif device == "cpu" and dtype is None and cpu_has_bfloat16_matrix_units():
        print(
            "this CPU has bfloat16 matrix units (AMX): --dtype bfloat16 runs images several "
            "times faster than the float32 default, at bfloat16 precision (docs/performance.md)",
            file=sys.stderr,
        )
    # Offloaded models load into CPU memory in the compute dtype the GPU would use.
    pipe = CheersPipeline.from_pretrained(
        source,
        dtype=dtype or ("bfloat16" if offload else None),
        device="cpu" if offload else device,
        quantize=quantize,
        kv_cache=kv_cache or "float",
    )
    if adapter is not None:  # before offloading, so the adapters travel with their layers
        print(f"with the LoRA adapter {adapter.folder} at scale {adapter.scale:g}", file=sys.stderr)
        pipe.load_lora(adapter.folder, adapter.scale)
    if offload:
        pipe.enable_model_cpu_offload(device)
    if compile:
        print("compiling: the first calls are slow, the later ones faster", file=sys.stderr)
        pipe.compile()
    return pipe


# ----------------------------------------------------------------- the flags of a model load
MODEL_HELP = (
    "the model: a folder holding config.json, the *.safetensors weights and the tokenizer files "
    "(e.g. a downloaded copy of ai9stars/Cheers), or a Hugging Face Hub id such as "
    "ai9stars/Cheers (downloaded on first use; needs `pip install 'cheers[hub]'`) "
    "(default: the model embedded in the package, if there is one)"
)


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The ``model`` flag group of every command that loads one: ``--model --dtype --device
    --quantize --kv-cache --offload --lora --compile``, read back by :func:`load_from_args`."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="DIR", help=MODEL_HELP)
    group.add_argument(
        "--dtype",
        choices=["float32", "bfloat16"],
        help="precision of the weights (default: bfloat16 on CUDA, float32 on CPU)",
    )
    group.add_argument(
        "--device",
        metavar="{cpu,cuda,cuda:N}",
        help="where to run the model (default: cuda if a GPU is available, else cpu)",
    )
    group.add_argument(
        "--quantize",
        choices=["int8"],
        help="store the LLM's, the ViT's and the flow heads' linear weights in int8 "
        "(about 0.4× the float32 memory; see docs/finetuning.md)",
    )
    group.add_argument(
        "--offload",
        action="store_true",
        help="keep the large components in CPU memory and move each to the GPU only while "
        "it runs (for GPUs smaller than the model; slower)",
    )
    group.add_argument(
        "--kv-cache",
        choices=["float", "int4", "int4-naive"],
        help="how generation keeps the LLM's keys and values: float (the compute dtype, "
        "default), int4 (SAW-INT4: 4 bits after a Hadamard rotation; at the official head "
        "size 0.27× the bfloat16 bytes a token, see docs/finetuning.md) or int4-naive (4 bits, "
        "no rotation: the baseline)",
    )
    group.add_argument("--lora", metavar="DIR[:SCALE]", help=LORA_FLAG_HELP)
    group.add_argument(
        "--compile",
        action="store_true",
        help="for GPUs: torch.compile the model's blocks and its text decoding; the first "
        "requests compile (a minute or more), later ones run faster (on one H100: 1.4× per "
        "image, 2.7× tokens/s; on a 2-core CPU it measured 1.2× slower; see "
        "docs/performance.md). Pays off for a server or many requests",
    )


def load_from_args(args: argparse.Namespace) -> CheersPipeline:
    """:func:`load_pipeline` with the flags :func:`add_model_flags` added."""
    return load_pipeline(
        args.model,
        args.dtype,
        args.device,
        lora=args.lora,
        quantize=args.quantize,
        offload=args.offload,
        compile=args.compile,
        kv_cache=args.kv_cache,
    )
