"""What a pipeline is made of and how it runs: loading and saving, CPU offload, static
decoding, compilation and LoRA adapters. :class:`~cheers.pipeline.facade.CheersPipeline` adds
the requests on top; nothing here runs the model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

import torch

from cheers.checkpoint import load_model, resolve_model_path, save_model
from cheers.errors import CheersError
from cheers.model import Cheers
from cheers.pipeline.llm_inputs import InputBuilder
from cheers.pipeline.loops import StartDecoding, start_decoding
from cheers.pipeline.memory import MemoryBudget
from cheers.pipeline.static_decoding import StaticDecoding
from cheers.tokenizer import CheersTokenizer
from cheers.transforms import lora
from cheers.transforms.channels_last import convolutions_channels_last
from cheers.transforms.compile import compile_regions
from cheers.transforms.offload import ModelOffload, enable_model_cpu_offload


class PipelineSetup:
    """A model with its tokenizer, and the switches that change how it runs (not what)."""

    def __init__(self, model: Cheers, tokenizer: CheersTokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.offload: ModelOffload | None = None
        self.compiled = False  # set by compile()
        #: How text requests are prefilled and decoded (:meth:`enable_static_decoding`).
        self.text_decoding: StartDecoding = start_decoding
        self.special = tokenizer.special
        #: Requests → LLM input rows (token ids, pixels, sequences), for custom decoding loops.
        self.inputs = InputBuilder(model, tokenizer)
        #: What one call may allocate (:mod:`cheers.pipeline.memory`): by default what the
        #: device has free; a call estimated not to fit is refused before it allocates anything.
        self.memory = MemoryBudget()
        vocab = model.config.text_config.vocab_size
        if len(tokenizer) > vocab:
            raise CheersError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary only "
                f"{vocab}; load the tokenizer that belongs to this checkpoint"
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        quantize: str | None = None,
        kv_cache: str = "float",
    ) -> Self:
        """Load a model folder (or a Hub id) with its tokenizer.

        ``dtype`` (the compute dtype) defaults to bfloat16 on CUDA and float32 elsewhere;
        ``quantize="int8"`` keeps the LLM's, the ViT's and the flow heads' linear weights in
        int8 (see :func:`cheers.checkpoint.load_model`); a folder written by ``cheers
        quantize`` loads with its 2-/4-bit weights. ``kv_cache="int4"`` stores the KV caches
        of generation in 4 bits after a Hadamard rotation (SAW-INT4; see
        :meth:`Cheers.set_kv_cache <cheers.model.Cheers.set_kv_cache>`). In bfloat16 the
        convolutions are put in channels-last order (:mod:`cheers.transforms.channels_last`).
        """
        folder = resolve_model_path(name_or_path)
        model = load_model(folder, dtype=dtype, device=device, quantize=quantize)
        model.set_kv_cache(kv_cache)
        if model.dtype == torch.bfloat16:
            # cuDNN's and oneDNN's bfloat16 convolutions (AMX on recent x86 CPUs) work in NHWC
            # and transpose NCHW input at every call: docs/performance.md §4 and §5.
            convolutions_channels_last(model)
        return cls(model, CheersTokenizer.from_folder(folder))

    def save_pretrained(self, folder: str | os.PathLike[str], max_shard_bytes: int | None = None):
        """Write config, weights and tokenizer in the released format."""
        save_model(self.model, folder, max_shard_bytes=max_shard_bytes)
        self.tokenizer.save(folder)
        return Path(folder)

    def enable_model_cpu_offload(
        self, device: str | torch.device = "cuda", max_resident_bytes: int = 0
    ) -> ModelOffload:
        """Keep the large components on the CPU and move each to ``device`` when it runs
        (for GPUs smaller than the model; see :mod:`cheers.transforms.offload`).
        ``max_resident_bytes`` of components may stay on ``device`` at once (0: one at a time).

        Raises:
            CheersError: after :meth:`compile` (compiled blocks would hold the moving weights).
        """
        if self.compiled:
            raise CheersError(
                "CPU offload cannot follow compile(): offload moves the weights between "
                "devices at every call; load the model again and offload it without compiling"
            )
        if self.offload is not None:
            self.offload.remove()
        self.offload = enable_model_cpu_offload(self.model, device, max_resident_bytes)
        return self.offload

    def enable_static_decoding(
        self, max_length: int = 2048, compile_options: dict[str, Any] | None = None
    ) -> StaticDecoding:
        """Decode text with the same shapes at every token, over a cache of ``max_length``
        positions kept between requests (:mod:`cheers.pipeline.static_decoding`); longer
        requests decode as before. With ``compile_options`` the decoding step is compiled once
        per batch size: ``{"mode": "reduce-overhead"}`` on a GPU replays every token as one CUDA
        graph. The answers are those of the default decoding up to float rounding."""
        self.text_decoding = StaticDecoding(max_length, compile_options)
        return self.text_decoding

    def compile(self, decoding_length: int | None = 2048, **options: Any) -> list[str]:
        """Make the calls after the first ones faster with ``torch.compile``: the repeated
        blocks compiled in place (:mod:`cheers.transforms.compile`), on CUDA the convolutions
        in channels-last order, and text decoding with static shapes over a kept cache of
        ``decoding_length`` positions (``None``: growing shapes), its step compiled whole —
        replayed as a CUDA graph on a GPU. ``options`` go to every ``torch.compile`` (e.g.
        ``backend=``). The first calls of each shape compile (seconds to minutes); outputs
        change by float rounding only. Returns the names of the compiled blocks.

        Raises:
            CheersError: with CPU offload on (compiled blocks would hold the moving weights).
        """
        import torch._dynamo as dynamo

        if self.offload is not None:
            raise CheersError(
                "compile() and CPU offload do not go together: offload moves the weights "
                "between devices at every call; load without offload to compile"
            )
        # Every block shape of the official preset is one entry of the blocks' shared cache.
        dynamo.config.cache_size_limit = max(dynamo.config.cache_size_limit, 64)
        if self.device.type == "cuda":
            convolutions_channels_last(self.model)
        names = compile_regions(self.model, **options)
        self.compiled = True
        if decoding_length is not None:
            step_options = {"mode": "reduce-overhead"} if self.device.type == "cuda" else {}
            self.enable_static_decoding(decoding_length, {**step_options, **options})
        return names

    def disable_static_decoding(self) -> None:
        """Back to the default decoding; frees the kept cache."""
        if isinstance(self.text_decoding, StaticDecoding):
            self.text_decoding.clear()
        self.text_decoding = start_decoding

    def load_lora(self, folder: str | os.PathLike[str], scale: float = 1.0) -> None:
        """Put the LoRA adapter of ``folder`` (the PEFT layout a LoRA run writes) on the model;
        ``scale`` multiplies its effect. :meth:`unload_lora` removes it again.

        Raises:
            CheckpointError: when the folder is no adapter or does not fit this model.
        """
        lora.load_lora(self.model, folder, scale=scale)
        self.model.eval()

    def unload_lora(self) -> int:
        """Remove every adapter: the model computes exactly what it did before; returns how many
        layers were adapted."""
        return lora.unload_lora(self.model)

    @property
    def device(self) -> torch.device:
        """Where inputs go (the execution device, also under offload)."""
        return self.model.device

    @property
    def resolution(self) -> int:
        return self.model.config.image_size
