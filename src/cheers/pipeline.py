"""The user-facing API: text-to-image, understanding, chat and editing with one object.

    >>> from cheers import CheersPipeline
    >>> pipe = CheersPipeline.from_pretrained("path/to/Cheers")          # doctest: +SKIP
    >>> images = pipe("a red circle", num_inference_steps=80).images     # doctest: +SKIP
    >>> pipe.understand("photo.png", "What is in the picture?")          # doctest: +SKIP

Keyword names follow diffusers (``num_inference_steps``, ``guidance_scale``, ``generator``,
``latents``, ``num_images_per_prompt``, ``negative_prompt``, ``callback_on_step_end``,
``output_type``, ``return_dict``); defaults are the authors' (:data:`cheers.samplers.DEFAULTS`:
80 steps, guidance 9.5, time shift 0.5, the reference's Euler sampler). Every request is
batched: pass lists to process several at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cheers import memory
from cheers.arguments import (
    GeneratorLike,
    Generators,
    ImagePipelineOutput,
    OutputType,
    StepEndCallback,
    as_image_list,
    as_list,
    check_callable,
    check_decoding,
    check_messages,
    check_number,
    check_output_type,
    check_positive,
    check_sampling,
    match_images,
    to_generator,
    to_generators,
)
from cheers.checkpoint import load_model, resolve_model_path, save_model
from cheers.draw_requests import DrawRequest, draw_latents
from cheers.errors import CheersError, PromptError
from cheers.generation import StartDecoding, start_decoding
from cheers.image import ImageInput
from cheers.image_generation import initial_noise, sample_images, step_end_hook, to_output
from cheers.llm_inputs import IMAGE_IN_PROMPT as IMAGE_IN_PROMPT  # re-exported
from cheers.llm_inputs import InputBuilder, Messages
from cheers.memory import MemoryBudget
from cheers.model import Cheers
from cheers.offload import ModelOffload, enable_model_cpu_offload
from cheers.samplers import DEFAULTS, FlowMatchSampler, StepCache, get_sampler, noise
from cheers.static_decoding import StaticDecoding
from cheers.text_generation import answer_requests, generate_text
from cheers.text_requests import TextAnswer, TextRequest
from cheers.tokenizer import CheersTokenizer
from cheers.transforms import lora
from cheers.transforms.channels_last import convolutions_channels_last
from cheers.transforms.compile import compile_regions


class CheersPipeline:
    """Cheers inference: ``__call__`` / :meth:`text_to_image`, :meth:`understand`,
    :meth:`chat` and :meth:`edit`."""

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
        #: What one call may allocate (:mod:`cheers.memory`): by default what the device has
        #: free; a call estimated not to fit is refused before it allocates anything.
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
    ) -> CheersPipeline:
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
        (for GPUs smaller than the model; see :mod:`cheers.offload`). ``max_resident_bytes``
        of components may stay on ``device`` at once (0: one at a time).

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
        positions kept between requests (:mod:`cheers.static_decoding`); longer requests decode
        as before. With ``compile_options`` the decoding step is compiled once per batch size:
        ``{"mode": "reduce-overhead"}`` on a GPU replays every token as one CUDA graph. The
        answers are those of the default decoding up to float rounding."""
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

    def _check_images(self, images: int, guided: bool, prompt_tokens: int) -> None:
        """Refuse an image call that cannot fit (:mod:`cheers.memory`), saying how many would."""
        config, dtype = self.model.config, self.model.dtype

        def need(n: int) -> memory.MemoryEstimate:
            return memory.image_call(config, dtype, n, guided=guided, prompt_tokens=prompt_tokens)

        fits = self.memory.rows_that_fit(need, images, self.device)
        if fits < images:
            fix = (
                f"make at most {fits} image(s) per call (split the prompts or lower "
                "num_images_per_prompt / --batch-size)"
                if fits
                else "not even one image fits: free memory, use a smaller dtype "
                "(--dtype bfloat16) or --offload"
            )
            self.memory.check(need(images), self.device, fix)

    # --------------------------------------------------------- text to image
    def __call__(self, prompt: str | Sequence[str], **kwargs: Any) -> ImagePipelineOutput | tuple:
        """Alias of :meth:`text_to_image`."""
        return self.text_to_image(prompt, **kwargs)

    @torch.inference_mode()
    def text_to_image(
        self,
        prompt: str | Sequence[str],
        *,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        time_shift: float = DEFAULTS.time_shift,
        sampler: str | FlowMatchSampler | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        guidance_interval: tuple[float, float] | None = None,
        step_cache: StepCache | None = None,
        num_images_per_prompt: int = 1,
        generator: Generators = None,
        latents: torch.Tensor | None = None,
        dummy_image: ImageInput | bool | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
        callback_on_step_end: StepEndCallback | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Generate images for one prompt or a list of prompts.

        Args:
            prompt: the description(s) of the image.
            num_inference_steps: points of the time grid (the Euler sampler evaluates the
                model at each; see ``sampler.num_evaluations`` for the others).
            guidance_scale: classifier-free guidance scale; ``None`` disables guidance (and
                halves the work).
            time_shift: α of the time-grid shift α·t / (1 + (α−1)·t).
            sampler: a name from :data:`cheers.samplers.SAMPLERS` ("euler", the reference;
                "heun"; "dpm++2m") or a :class:`~cheers.samplers.FlowMatchSampler`.
            negative_prompt: text whose tokens replace the ``<no_mean>`` row of the
                unconditional branch (one, or one per prompt).
            guidance_interval: (lo, hi): guidance only for lo ≤ t ≤ hi, the conditional
                branch alone elsewhere (less work).
            step_cache: a :class:`~cheers.samplers.StepCache` that predicts some velocities
                instead of evaluating the model.
            num_images_per_prompt: images for each prompt (different noise).
            generator: a ``torch.Generator`` or an integer seed, for reproducible results, or
                a list of them, one per image.
            latents: initial noise (B·num_images_per_prompt, 4z, G, G) instead of drawing it.
            dummy_image: ``True`` encodes a random noise image in front of the prompt, as the
                reference does for requests without an image (what the released model was run
                with); an image uses that one instead (for exact comparisons); ``False`` drops
                it. ``None`` follows the model config's ``dummy_image_prefix`` (True for the
                released model, False for models trained with this library).
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"`` (see
                :class:`ImagePipelineOutput`).
            return_dict: False returns the tuple ``(images,)`` instead of the output object.
            progress: show a progress bar over the denoising steps.
            callback: called as ``callback(step, total)`` after every model evaluation.
            callback_on_step_end: called as ``(pipe, step, t, {"latents": x})`` after every
                sampler step; a returned dict's "latents" replace x.
        """
        prompts = as_list(prompt, "prompt")
        check_positive(num_images_per_prompt, "num_images_per_prompt")
        check_sampling(
            num_inference_steps,
            guidance_scale,
            time_shift,
            sampler,
            guidance_interval,
            {"callback": callback, "callback_on_step_end": callback_on_step_end},
            step_cache,
        )
        check_output_type(output_type)
        gens = to_generators(generator, len(prompts) * num_images_per_prompt)
        rows = self.inputs.text_to_image_rows(
            prompts, negative_prompt, num_images_per_prompt, dummy_image, gens
        )
        extra = self.model.tokens_per_image if any(p is not None for p in rows.prefixes) else 0
        longest = max(len(ids) for ids in [*rows.ids, *(rows.negatives or [])])
        self._check_images(len(rows.ids), guidance_scale is not None, longest + extra)
        x = initial_noise(self.model, len(rows.ids), latents, gens)
        solver = get_sampler(sampler, time_shift)
        solver.set_timesteps(num_inference_steps)
        x = sample_images(
            self.inputs,
            rows,
            x,
            solver,
            guidance_scale,
            progress,
            callback,
            guidance_interval=guidance_interval,
            step_cache=step_cache,
            on_step_end=step_end_hook(self, callback_on_step_end),
        )
        out = to_output(self.model, x, output_type)
        return out if return_dict else (out.images,)

    # --------------------------------------------------------------- editing
    @torch.inference_mode()
    def edit(
        self,
        image: ImageInput | Sequence[ImageInput],
        instruction: str | Sequence[str],
        *,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        time_shift: float = DEFAULTS.time_shift,
        strength: float = DEFAULTS.edit_strength,
        sampler: str | FlowMatchSampler | None = None,
        guidance_interval: tuple[float, float] | None = None,
        step_cache: StepCache | None = None,
        generator: Generators = None,
        latents: torch.Tensor | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
        callback_on_step_end: StepEndCallback | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Edit source image(s) following instruction(s).

        The source is in the prompt (understanding path) and sampling starts from
        ``(1−strength)·x1(source) + strength·noise`` at t0 = 1 − strength with
        ``int(strength·num_inference_steps)`` steps (the reference uses strength 0.9).
        ``latents`` replaces the noise. Other arguments as in :meth:`text_to_image`.
        """
        instructions = as_list(instruction, "instruction")
        images = match_images(image, len(instructions))
        if any(len(group) != 1 for group in images):
            raise CheersError("edit() takes exactly one source image per instruction")
        check_sampling(
            num_inference_steps,
            guidance_scale,
            time_shift,
            sampler,
            guidance_interval,
            {"callback": callback, "callback_on_step_end": callback_on_step_end},
            step_cache,
        )
        check_number(strength, "strength")
        if not 0.0 < strength <= 1.0:
            raise CheersError(f"strength must be in (0, 1], got {strength}")
        check_output_type(output_type)
        t0 = 1.0 - strength
        gens = to_generators(generator, len(instructions))
        longest = max(len(self.inputs.generation_ids(text)) for text in instructions)
        tokens = longest + self.model.tokens_per_image
        self._check_images(len(instructions), guidance_scale is not None, tokens)
        pixels = self.inputs.pixels([im for group in images for im in group])
        x1 = self.model.encode_latent(pixels)
        rows = self.inputs.edit_rows(instructions, self.model.image_tokens(x1).tokens)
        x0 = initial_noise(self.model, len(instructions), latents, gens)
        x = noise(x1.float(), x0, t0)
        solver = get_sampler(sampler, time_shift)
        solver.set_timesteps(num_inference_steps, t0=t0)
        x = sample_images(
            self.inputs,
            rows,
            x,
            solver,
            guidance_scale,
            progress,
            callback,
            guidance_interval=guidance_interval,
            step_cache=step_cache,
            on_step_end=step_end_hook(self, callback_on_step_end),
        )
        out = to_output(self.model, x, output_type)
        return out if return_dict else (out.images,)

    @torch.inference_mode()
    def draw(
        self,
        requests: Sequence[DrawRequest],
        *,
        num_inference_steps: int = DEFAULTS.num_inference_steps,
        guidance_scale: float | None = DEFAULTS.guidance_scale,
        time_shift: float = DEFAULTS.time_shift,
        strength: float = DEFAULTS.edit_strength,
        sampler: str | FlowMatchSampler | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Draw the next reply of each conversation as an image, seeing its earlier turns and
        images (:class:`~cheers.draw_requests.DrawRequest`); requests with a ``source`` are
        edits of it with ``strength`` as in :meth:`edit`. One call takes only edits or only
        drawings from noise. Other arguments as in :meth:`text_to_image`;
        :class:`cheers.conversation.Conversation` keeps such conversations.
        """
        check_sampling(num_inference_steps, guidance_scale, time_shift, sampler, None, {})
        check_callable(callback, "callback")
        check_number(strength, "strength")
        if not 0.0 < strength <= 1.0:
            raise CheersError(f"strength must be in (0, 1], got {strength}")
        check_output_type(output_type)
        x = draw_latents(
            self.inputs,
            requests,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            time_shift=time_shift,
            strength=strength,
            sampler=sampler,
            progress=progress,
            callback=callback,
        )
        out = to_output(self.model, x, output_type)
        return out if return_dict else (out.images,)

    # ---------------------------------------------------------- understanding
    @torch.inference_mode()
    def understand(
        self,
        images: ImageInput | Sequence[ImageInput] | Sequence[Sequence[ImageInput]],
        question: str | Sequence[str],
        *,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: GeneratorLike = None,
        stream: Callable[[list[str]], None] | None = None,
    ) -> str | list[str]:
        """Answer a question about image(s).

        One question (a str) with one image or a list of images returns a str; a list of
        questions with one image (or list of images) per question returns a list of str.
        ``max_new_tokens`` caps the answer's length; left out, an answer may take up to 256
        tokens, fewer when the prompt leaves less of the context (a given value is reserved in
        full, and an error says how much room is left if it does not fit).
        ``temperature`` 0 is greedy decoding; otherwise temperature + top-p sampling.
        ``stream`` receives, after every decoded token, the new text of each answer.
        """
        check_decoding(max_new_tokens, temperature, top_p, stream)
        single = isinstance(question, str)
        questions = as_list(question, "question")
        groups = [as_image_list(images)] if single else match_images(images, len(questions))
        if any(not group for group in groups):
            raise PromptError(
                "understand() needs at least one image per question; pass an image, or use "
                "chat() for a text-only question"
            )
        rows = self.inputs.understanding_rows(questions, groups)
        answers = generate_text(
            self.inputs,
            rows,
            max_new_tokens,
            temperature,
            top_p,
            generator,
            stream,
            self.text_decoding,
            self.memory,
        )
        return answers[0] if single else answers

    @torch.inference_mode()
    def chat(
        self,
        messages: str | Messages | Sequence[str | Messages],
        *,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        generator: GeneratorLike = None,
        dummy_image: ImageInput | bool | None = None,
        stream: Callable[[list[str]], None] | None = None,
    ) -> str | list[str]:
        """Text-only conversation: a prompt, a list of messages, or a list of either (batch).

        As in the reference, a random dummy image is encoded in front of the text;
        ``dummy_image`` works as in :meth:`text_to_image`; ``max_new_tokens`` and ``stream`` as
        in :meth:`understand`. :class:`cheers.conversation.Conversation` keeps a conversation
        within the context by dropping its oldest turns.
        """
        check_messages(messages)
        check_decoding(max_new_tokens, temperature, top_p, stream)
        single = isinstance(messages, str) or (
            isinstance(messages, Sequence)
            and len(messages) > 0
            and isinstance(messages[0], Mapping)
        )
        conversations = [messages] if single else list(messages)
        gen = to_generator(generator, self.device)
        rows = self.inputs.chat_rows(conversations, dummy_image, gen)
        answers = generate_text(
            self.inputs,
            rows,
            max_new_tokens,
            temperature,
            top_p,
            gen,
            stream,
            self.text_decoding,
            self.memory,
        )
        return answers[0] if single else answers

    @torch.inference_mode()
    def answer(
        self,
        requests: Sequence[TextRequest],
        *,
        stream: Callable[[list[str | None]], None] | None = None,
    ) -> list[TextAnswer]:
        """Answer independent conversations in one batch, each with its own settings.

        Each :class:`~cheers.text_requests.TextRequest` has its own messages, images, token
        budget, temperature, top-p and seed, and gets the answer it gets alone from
        :meth:`chat` (no images) or :meth:`understand` (``generator=seed``). ``stream``
        receives after every step the new text of each row, ``None`` for rows that chose no
        text token (finished, or EOS now): one piece per answer token.
        """
        if not requests:
            raise PromptError("answer() got no requests; pass at least one TextRequest")
        return answer_requests(self.inputs, requests, stream, self.text_decoding, self.memory)
