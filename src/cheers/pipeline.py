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

from cheers.arguments import (
    GeneratorLike,
    Generators,
    ImagePipelineOutput,
    OutputType,
    StepEndCallback,
    as_image_list,
    as_list,
    check_decoding,
    check_finite,
    check_messages,
    check_number,
    check_output_type,
    check_positive,
    check_sampling,
    match_images,
    new_token_room,
    to_generator,
    to_generators,
)
from cheers.checkpoint import load_model, resolve_model_path, save_model
from cheers.errors import CheersError, ContextLengthError, PromptError
from cheers.generation import DecodeState, decode_text, prefill, sample_latents
from cheers.image import (
    ImageInput,
    make_dummy_image,
    preprocess_understanding,
    to_pil_list,
)
from cheers.model import Cheers
from cheers.offload import ModelOffload, enable_model_cpu_offload
from cheers.samplers import DEFAULTS, FlowMatchSampler, StepCache, get_sampler, noise
from cheers.sequence import IMAGE_PLACEHOLDER, left_pad, splice, unconditional_ids
from cheers.text_requests import RowSettings, RowStreamer, TextAnswer, TextRequest, decode_rows
from cheers.tokenizer import CheersTokenizer
from cheers.transforms import lora

IMAGE_IN_PROMPT = "<im_start><image><im_end>"
Messages = Sequence[Mapping[str, str]]


class CheersPipeline:
    """Cheers inference: ``__call__`` / :meth:`text_to_image`, :meth:`understand`,
    :meth:`chat` and :meth:`edit`."""

    def __init__(self, model: Cheers, tokenizer: CheersTokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.offload: ModelOffload | None = None
        self.special = tokenizer.special
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
    ) -> CheersPipeline:
        """Load a model folder (or a Hub id) with its tokenizer.

        ``dtype`` (the compute dtype) defaults to bfloat16 on CUDA and float32 elsewhere;
        ``quantize="int8"`` keeps the LLM's, the ViT's and the flow heads' linear weights in
        int8 (see :func:`cheers.checkpoint.load_model`).
        """
        folder = resolve_model_path(name_or_path)
        model = load_model(folder, dtype=dtype, device=device, quantize=quantize)
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
        of components may stay on ``device`` at once (0: one at a time)."""
        if self.offload is not None:
            self.offload.remove()
        self.offload = enable_model_cpu_offload(self.model, device, max_resident_bytes)
        return self.offload

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
        n_rows = len(prompts) * num_images_per_prompt
        gens = to_generators(generator, n_rows)
        rows = [p for p in prompts for _ in range(num_images_per_prompt)]
        ids = [self._generation_ids(p) for p in prompts]
        negatives = None
        if negative_prompt is not None:
            negs = as_list(negative_prompt, "negative_prompt")
            if len(negs) == 1:
                negs = negs * len(prompts)
            if len(negs) != len(prompts):
                raise PromptError(
                    f"{len(negs)} negative prompts for {len(prompts)} prompts; pass one, or one "
                    "per prompt"
                )
            negatives = [
                self._generation_ids(n) for n in negs for _ in range(num_images_per_prompt)
            ]
        for p, i in zip(prompts, ids, strict=True):
            if self.special.image in i:
                raise PromptError(
                    f"the text-to-image prompt {p!r} contains an <image> placeholder but no image "
                    "is given; use edit() or understand() for requests with an input image"
                )
        prompt_gens = gens[::num_images_per_prompt] if len(gens) > 1 else gens
        dummy = self._dummy_tokens(len(prompts), dummy_image, prompt_gens)
        prefixes = [
            None if dummy is None else dummy[i]
            for i in range(len(prompts))
            for _ in range(num_images_per_prompt)
        ]
        row_ids = [i for i in ids for _ in range(num_images_per_prompt)]
        x = self._initial_noise(len(rows), latents, gens)
        solver = get_sampler(sampler, time_shift)
        solver.set_timesteps(num_inference_steps)
        options = {
            "guidance_interval": guidance_interval,
            "step_cache": step_cache,
            "on_step_end": self._step_end(callback_on_step_end),
            "negatives": negatives,
        }
        x = self._sample(
            row_ids,
            [[]] * len(rows),
            prefixes,
            x,
            solver,
            guidance_scale,
            progress,
            callback,
            **options,
        )
        out = self._output(x, output_type)
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
        pixels = self._pixels([im for group in images for im in group])
        x1 = self.model.encode_latent(pixels)
        tokens = self.model.image_tokens(x1).tokens
        row_ids = []
        for text in instructions:
            content = text if IMAGE_IN_PROMPT in text else f"{IMAGE_IN_PROMPT}\n{text}"
            ids = self._generation_ids(content)
            if ids.count(self.special.image) != 1:
                raise PromptError(f"an edit instruction needs exactly one image, got {text!r}")
            row_ids.append(ids)
        x0 = self._initial_noise(len(instructions), latents, gens)
        x = noise(x1.float(), x0, t0)
        solver = get_sampler(sampler, time_shift)
        solver.set_timesteps(num_inference_steps, t0=t0)
        row_images = [[tokens[i]] for i in range(len(instructions))]
        no_prefix = [None] * len(row_ids)
        x = self._sample(
            row_ids,
            row_images,
            no_prefix,
            x,
            solver,
            guidance_scale,
            progress,
            callback,
            guidance_interval=guidance_interval,
            step_cache=step_cache,
            on_step_end=self._step_end(callback_on_step_end),
        )
        out = self._output(x, output_type)
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
        flat = [im for group in groups for im in group]
        tokens = self.model.understanding_tokens(self._pixels(flat)) if flat else None
        requests, k = [], 0
        for text, group in zip(questions, groups, strict=True):
            if IMAGE_IN_PROMPT not in text:
                text = IMAGE_IN_PROMPT * len(group) + "\n" + text
            ids = self._chat_ids([{"role": "user", "content": text}])
            requests.append((ids, [tokens[k + j] for j in range(len(group))], None))
            k += len(group)
        answers = self._generate_text(
            requests, max_new_tokens, temperature, top_p, generator, stream
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
        dummy = self._dummy_tokens(len(conversations), dummy_image, [gen])
        requests = []
        for i, conv in enumerate(conversations):
            if isinstance(conv, str):
                conv = [{"role": "user", "content": conv}]
            ids = self._chat_ids(conv)
            requests.append((ids, [], None if dummy is None else dummy[i]))
        answers = self._generate_text(requests, max_new_tokens, temperature, top_p, gen, stream)
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
        settings, rows = [], []
        for req in requests:
            check_positive(req.max_new_tokens, "max_new_tokens")
            check_number(req.temperature, "temperature", low=0.0)
            check_number(req.top_p, "top_p")
            if not 0.0 < req.top_p <= 1.0:
                raise CheersError(f"top_p must be in (0, 1], got {req.top_p}")
            gen = to_generator(req.seed, self.device)
            settings.append(RowSettings(req.max_new_tokens, req.temperature, req.top_p, gen))
            ids = self._chat_ids(req.messages)
            if ids.count(self.special.image) != len(req.images):
                raise PromptError(
                    f"the messages mark {ids.count(self.special.image)} images but "
                    f"{len(req.images)} are given; put one {IMAGE_IN_PROMPT} per image"
                )
            rows.append(ids)
        flat = [im for req in requests for im in req.images]
        tokens = self.model.understanding_tokens(self._pixels(flat)) if flat else None
        requests_in, k = [], 0
        for req, ids, row in zip(requests, rows, settings, strict=True):
            n = len(req.images)
            dummy = None if n else self._dummy_tokens(1, None, [row.generator])
            images = [tokens[k + j] for j in range(n)] if n else []
            requests_in.append((ids, images, None if dummy is None else dummy[0]))
            k += n
        batch = left_pad(self._sequences(*zip(*requests_in, strict=True)))
        for length, row in zip(batch.lengths.tolist(), settings, strict=True):
            self._check_context(length, row.max_new_tokens)
        room = max(row.max_new_tokens for row in settings)
        prefix = prefill(self.model, batch, room=room)
        state = DecodeState(
            prefix.cache,
            batch.valid,
            batch.lengths.clone(),
            prefix.length,
            self.model.logits(prefix.hidden[:, -1]),
            torch.zeros(len(requests), dtype=torch.bool, device=self.device),
        )
        on_token = None
        if stream is not None:
            on_token = RowStreamer(self.tokenizer.decode, self.special.eos, stream, len(requests))
        out = decode_rows(self.model, state, settings, self.special.eos, self.special.pad, on_token)
        answers = []
        for row, stopped, length in zip(
            out.tokens, out.stopped, batch.lengths.tolist(), strict=True
        ):
            ids = row[:-1] if stopped else row
            text = self.tokenizer.decode(ids).strip()
            answers.append(TextAnswer(text, ids, "stop" if stopped else "length", length))
        return answers

    # -------------------------------------------------------------- internals
    def _chat_ids(self, messages: Messages) -> list[int]:
        # Only the template makes control tokens; image units become image slots.
        return self.tokenizer.apply_chat_template(messages, tokenize=True, image_placeholders=True)

    def _generation_ids(self, content: str) -> list[int]:
        """A user turn, the assistant's generation prompt, then `<im_start>` opening the image."""
        return [*self._chat_ids([{"role": "user", "content": content}]), self.special.im_start]

    def _pixels(self, images: Sequence[ImageInput]) -> torch.Tensor:
        batch = [preprocess_understanding(im, self.resolution) for im in images]
        return torch.stack(batch).to(self.device)

    def _dummy_tokens(
        self,
        n: int,
        dummy_image: ImageInput | bool | None,
        generators: Sequence[torch.Generator | None],
    ) -> torch.Tensor | None:
        """LLM tokens of the placeholder image put in front of image-less requests, or None.

        Random dummies are drawn from ``generators`` (one shared, or one per request); a given
        image is encoded once and shared by every request.
        """
        if dummy_image is None:
            dummy_image = self.model.config.dummy_image_prefix
        if dummy_image is False:
            return None
        if dummy_image is not True:
            return self.model.understanding_tokens(self._pixels([dummy_image])).expand(n, -1, -1)
        gens = list(generators) if len(generators) == n else [generators[0]] * n
        cpu = [g if g is None or g.device.type == "cpu" else None for g in gens]
        dummies = [make_dummy_image(g) for g in cpu]
        return self.model.understanding_tokens(self._pixels(dummies))

    def _uncond_ids(self, ids: list[int]) -> list[int]:
        keep = {self.special.im_start, self.special.im_end, self.special.image, IMAGE_PLACEHOLDER}
        return unconditional_ids(ids, keep, self.special.no_mean)

    def _initial_noise(
        self, n: int, latents: torch.Tensor | None, generators: Sequence[torch.Generator | None]
    ) -> torch.Tensor:
        cfg = self.model.config
        shape = (n, cfg.latent_channels, cfg.grid_size, cfg.grid_size)
        if latents is not None:
            if not isinstance(latents, torch.Tensor):
                raise CheersError(
                    f"latents must be a torch.Tensor, got {type(latents).__name__}; "
                    "convert with torch.as_tensor(latents)"
                )
            if tuple(latents.shape) != shape:
                raise CheersError(
                    f"latents have shape {tuple(latents.shape)} but this request needs {shape} "
                    "(images × latent channels × grid × grid)"
                )
            if not bool(torch.isfinite(latents).all()):
                raise CheersError(
                    "latents contain NaN or infinity; pass finite noise (e.g. torch.randn)"
                )
            return latents.to(self.device, torch.float32)
        if len(generators) == n and n > 1:  # one generator per image
            return torch.cat([self._initial_noise(1, None, [g]) for g in generators])
        generator = generators[0]
        device = generator.device if generator is not None else torch.device("cpu")
        x0 = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
        return x0.to(self.device)

    def _sequences(self, row_ids, row_images, prefixes) -> list[tuple[torch.Tensor, torch.Tensor]]:
        out = []
        for i, ids in enumerate(row_ids):
            ids_t = torch.tensor(ids, device=self.device)
            embeds = self.model.embed(ids_t.clamp(min=0))
            out.append(splice(ids_t, embeds, row_images[i], self.special.image, prefixes[i]))
        return out

    def _check_context(self, length: int, room: int) -> None:
        limit = self.model.config.text_config.max_position_embeddings
        if length + room > limit:
            raise ContextLengthError(
                f"the request needs {length + room} positions ({length} for the prompt and images, "
                f"{room} to generate) but the model's context is {limit}; shorten the prompt, use "
                "fewer images or lower max_new_tokens"
            )

    def _step_end(self, callback_on_step_end: StepEndCallback | None):
        """Adapt a diffusers-style ``callback_on_step_end`` to the sampling loop's hook."""
        if callback_on_step_end is None:
            return None

        def hook(step: int, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
            out = callback_on_step_end(self, step, t, {"latents": x})
            latents = out.get("latents") if isinstance(out, Mapping) else None
            if latents is not None and not isinstance(latents, torch.Tensor):
                raise CheersError(
                    f"callback_on_step_end returned latents of type {type(latents).__name__}; "
                    "return {'latents': tensor} with a tensor of the latents' shape, or None"
                )
            return latents

        return hook

    def _sample(
        self,
        row_ids,
        row_images,
        prefixes,
        x,
        sampler: FlowMatchSampler,
        guidance_scale,
        progress,
        callback,
        negatives: list[list[int]] | None = None,
        **options: Any,
    ):
        check_number(guidance_scale, "guidance_scale", allow_none=True)
        guided = guidance_scale is not None
        seqs = self._sequences(row_ids, row_images, prefixes)
        if guided:
            uncond = negatives or [self._uncond_ids(i) for i in row_ids]
            seqs += self._sequences(uncond, row_images, prefixes)
        batch = left_pad(seqs)
        p = self.model.tokens_per_image
        self._check_context(int(batch.lengths.max()), p)
        prefix = prefill(self.model, batch, room=p)
        check_finite(prefix.hidden[:, -1], "the prompt's hidden states")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=sampler.num_evaluations, desc="denoising", unit="step")

        def step(k: int, n: int) -> None:
            if bar is not None:
                bar.update(1)
            if callback is not None:
                callback(k, n)

        try:
            x = sample_latents(
                self.model, prefix, x, sampler, guidance_scale, callback=step, **options
            )
        finally:
            if bar is not None:
                bar.close()
        check_finite(x, "the image latents")
        return x

    def _output(self, x: torch.Tensor, output_type: str) -> ImagePipelineOutput:
        if output_type == "latent":
            return ImagePipelineOutput(x, x)
        decoded = self.model.decode_latent(x).float()
        check_finite(decoded, "the decoded images")
        images = decoded.clamp(0, 1)
        if output_type == "pil":
            return ImagePipelineOutput(to_pil_list(images), x)
        if output_type == "np":
            return ImagePipelineOutput(images.permute(0, 2, 3, 1).cpu().numpy(), x)
        return ImagePipelineOutput(images, x)

    def _streamer(self, stream: Callable[[list[str]], None] | None, rows: int):
        """Per-token ids → the new text of each row (decoding the ids so far, so that a
        character split over several tokens comes out whole)."""
        if stream is None:
            return None
        ids: list[list[int]] = [[] for _ in range(rows)]
        shown = [""] * rows

        def on_token(step: int, token: torch.Tensor) -> None:
            pieces = []
            for r, tok in enumerate(token.tolist()):
                if tok not in (self.special.eos, self.special.pad) and (
                    not ids[r] or ids[r][-1] != self.special.eos
                ):
                    ids[r].append(tok)
                else:
                    ids[r].append(self.special.eos)
                text = self.tokenizer.decode([i for i in ids[r] if i != self.special.eos])
                pieces.append(text[len(shown[r]) :] if text.startswith(shown[r]) else "")
                shown[r] = text if text.startswith(shown[r]) else shown[r]
            stream(pieces)

        return on_token

    def _generate_text(
        self, requests, max_new_tokens, temperature, top_p, generator, stream=None
    ) -> list[str]:
        gen = to_generator(generator, self.device)
        ids, images, prefixes = zip(*requests, strict=True)
        batch = left_pad(self._sequences(ids, images, prefixes))
        context = self.model.config.text_config.max_position_embeddings
        max_new_tokens = new_token_room(int(batch.lengths.max()), max_new_tokens, context)
        prefix = prefill(self.model, batch, room=max_new_tokens)
        check_finite(prefix.hidden[:, -1], "the prompt's hidden states")
        out = decode_text(
            self.model,
            prefix.cache,
            batch.valid,
            batch.lengths,
            prefix.length,
            self.model.logits(prefix.hidden[:, -1]),
            max_new_tokens,
            eos_id=self.special.eos,
            pad_id=self.special.pad,
            temperature=temperature,
            top_p=top_p,
            generator=gen,
            on_token=self._streamer(stream, len(requests)),
        )
        answers = []
        for row in out.tokens.tolist():
            if self.special.eos in row:
                row = row[: row.index(self.special.eos)]
            answers.append(self.tokenizer.decode(row).strip())
        return answers
