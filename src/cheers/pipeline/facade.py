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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from cheers.errors import CheersError, PromptError
from cheers.image import ImageInput
from cheers.pipeline.answering import answer_requests, generate_text
from cheers.pipeline.arguments import (
    GeneratorLike,
    Generators,
    ImagePipelineOutput,
    OutputType,
    StepEndCallback,
    as_image_list,
    as_list,
    check_decoding,
    check_image_size,
    check_messages,
    check_output_type,
    check_positive,
    check_sampling,
    check_strength,
    latent_grid,
    match_images,
    to_generator,
    to_generators,
)
from cheers.pipeline.draw_requests import DrawRequest, drawing_start
from cheers.pipeline.drawing import (
    FlowSettings,
    check_image_memory,
    draw,
    initial_noise,
    step_end_hook,
)
from cheers.pipeline.llm_inputs import Messages
from cheers.pipeline.setup import PipelineSetup
from cheers.pipeline.text_requests import TextAnswer, TextRequest
from cheers.samplers import DEFAULTS, FlowMatchSampler, StepCache, noise


class CheersPipeline(PipelineSetup):
    """Cheers inference: ``__call__`` / :meth:`text_to_image`, :meth:`understand`,
    :meth:`chat` and :meth:`edit` (loading, offload and compilation: :class:`PipelineSetup`)."""

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
        height: int | None = None,
        width: int | None = None,
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
            height: the images' height in pixels, a multiple of the latent patch × token merge
                (32 for the released model); ``None``: the model's native size (512 for the
                released model, the only size the reference makes). Any aspect ratio; the
                ViT's position table is resized (bicubic) to the grid, as the reference does
                above 512 px.
            width: the images' width, as ``height``.
            generator: a ``torch.Generator`` or an integer seed, for reproducible results, or
                a list of them, one per image.
            latents: initial noise (B·num_images_per_prompt, 4z, H/16, W/16) instead of drawing
                it (16: the latent patch of the released model).
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
        settings = self._flow_settings(
            num_inference_steps,
            guidance_scale,
            time_shift,
            sampler,
            guidance_interval,
            step_cache,
            progress,
            callback,
            callback_on_step_end,
        )
        check_output_type(output_type)
        size = check_image_size(height, width, self.model.config)
        gens = to_generators(generator, len(prompts) * num_images_per_prompt)
        rows = self.inputs.text_to_image_rows(
            prompts, negative_prompt, num_images_per_prompt, dummy_image, gens
        )
        extra = self.model.tokens_per_image if any(p is not None for p in rows.prefixes) else 0
        longest = max(len(ids) for ids in [*rows.ids, *(rows.negatives or [])])
        guided = guidance_scale is not None
        images = len(rows.ids)
        check_image_memory(self.model, self.memory, images, guided, longest + extra, size)
        grid = latent_grid(self.model.config, size)
        x = initial_noise(self.model, images, latents, gens, grid)
        return draw(self.inputs, rows, x, settings, 0.0, output_type, return_dict)

    def _flow_settings(
        self,
        num_inference_steps: int,
        guidance_scale: float | None,
        time_shift: float,
        sampler: str | FlowMatchSampler | None,
        guidance_interval: tuple[float, float] | None = None,
        step_cache: StepCache | None = None,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
        callback_on_step_end: StepEndCallback | None = None,
    ) -> FlowSettings:
        """The sampling arguments of text_to_image, edit and draw, checked once, as settings."""
        check_sampling(
            num_inference_steps,
            guidance_scale,
            time_shift,
            sampler,
            guidance_interval,
            {"callback": callback, "callback_on_step_end": callback_on_step_end},
            step_cache,
        )
        return FlowSettings(
            num_inference_steps,
            guidance_scale,
            time_shift,
            sampler,
            guidance_interval,
            step_cache,
            progress,
            callback,
            step_end_hook(self, callback_on_step_end),
        )

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
        height: int | None = None,
        width: int | None = None,
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
        ``latents`` replaces the noise. The result is ``height`` × ``width`` (native when left
        out): the source is letterboxed to that canvas, as the reference letterboxes it to R×R.
        Other arguments as in :meth:`text_to_image`.
        """
        instructions = as_list(instruction, "instruction")
        images = match_images(image, len(instructions))
        if any(len(group) != 1 for group in images):
            raise CheersError("edit() takes exactly one source image per instruction")
        settings = self._flow_settings(
            num_inference_steps,
            guidance_scale,
            time_shift,
            sampler,
            guidance_interval,
            step_cache,
            progress,
            callback,
            callback_on_step_end,
        )
        check_strength(strength)
        check_output_type(output_type)
        size = check_image_size(height, width, self.model.config)
        grid = latent_grid(self.model.config, size)
        t0 = 1.0 - strength
        gens = to_generators(generator, len(instructions))
        longest = max(len(self.inputs.generation_ids(text)) for text in instructions)
        k = self.model.config.token_merge
        tokens = longest + (grid[0] // k) * (grid[1] // k)  # the source's tokens
        guided = guidance_scale is not None
        check_image_memory(self.model, self.memory, len(instructions), guided, tokens, size)
        pixels = self.inputs.pixels([im for group in images for im in group], size)
        x1 = self.model.encode_latent(pixels)
        rows = self.inputs.edit_rows(instructions, self.model.image_tokens(x1).tokens)
        x0 = initial_noise(self.model, len(instructions), latents, gens, grid)
        x = noise(x1.float(), x0, t0)
        return draw(self.inputs, rows, x, settings, t0, output_type, return_dict)

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
        height: int | None = None,
        width: int | None = None,
        output_type: OutputType = "pil",
        return_dict: bool = True,
        progress: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> ImagePipelineOutput | tuple:
        """Draw the next reply of each conversation as an image, seeing its earlier turns and
        images (:class:`~cheers.pipeline.draw_requests.DrawRequest`); requests with a ``source`` are
        edits of it with ``strength`` as in :meth:`edit`. One call takes only edits or only
        drawings from noise. Other arguments as in :meth:`text_to_image`;
        :class:`cheers.pipeline.conversation.Conversation` keeps such conversations.
        """
        settings = self._flow_settings(
            num_inference_steps,
            guidance_scale,
            time_shift,
            sampler,
            progress=progress,
            callback=callback,
        )
        check_strength(strength)
        check_output_type(output_type)
        size = check_image_size(height, width, self.model.config)
        rows, x, t0 = drawing_start(self.inputs, requests, strength, size)
        return draw(self.inputs, rows, x, settings, t0, output_type, return_dict)

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
        in :meth:`understand`. :class:`cheers.pipeline.conversation.Conversation` keeps a
        conversation within the context by dropping its oldest turns.
        """
        check_messages(messages)
        check_decoding(max_new_tokens, temperature, top_p, stream)
        single = isinstance(messages, str) or (
            isinstance(messages, Sequence)
            and len(messages) > 0
            and isinstance(messages[0], Mapping)
        )
        conversations = [messages] if single else list(messages)
        gen = to_generator(generator)
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

        Each :class:`~cheers.pipeline.text_requests.TextRequest` has its own messages, images, token
        budget, temperature, top-p and seed, and gets the answer it gets alone from
        :meth:`chat` (no images) or :meth:`understand` (``generator=seed``). ``stream``
        receives after every step the new text of each row, ``None`` for rows that chose no
        text token (finished, or EOS now): one piece per answer token.
        """
        if not requests:
            raise PromptError("answer() got no requests; pass at least one TextRequest")
        for request in requests:
            check_decoding(request.max_new_tokens, request.temperature, request.top_p, stream)
        return answer_requests(self.inputs, requests, stream, self.text_decoding, self.memory)
