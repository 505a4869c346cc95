"""The pipeline's request arguments and outputs: types, checks and their error messages."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from cheers.errors import (
    CheersError,
    ContextLengthError,
    NumericalError,
    PromptError,
    SamplerError,
)
from cheers.image import ImageInput
from cheers.samplers import FlowMatchSampler, StepCache

GeneratorLike = torch.Generator | int | None
Generators = GeneratorLike | Sequence[torch.Generator | int]
OutputType = Literal["pil", "np", "pt", "latent"]
#: ``callback_on_step_end(pipe, step, t, tensors)`` → a dict whose "latents" replace x, or None.
StepEndCallback = Callable[[Any, int, torch.Tensor, dict[str, torch.Tensor]], Any]


@dataclass
class ImagePipelineOutput:
    """Generated images and the final latents (B, 4z, G, G).

    ``images`` by ``output_type``: "pil" a list of PIL images, "np" a float array (B, R, R, 3)
    in [0, 1], "pt" a tensor (B, 3, R, R) in [0, 1], "latent" the latents themselves.
    """

    images: list[Image.Image] | np.ndarray | torch.Tensor
    latents: torch.Tensor


def to_generators(generator: Generators, n: int) -> list[torch.Generator | None]:
    """One generator for every image, or a list of exactly ``n`` (one per image)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise CheersError(
                f"generator is a list of {len(generator)} but the request makes {n} images; "
                "pass one generator (or seed) per image, or a single one"
            )
        return [to_generator(g) for g in generator]
    return [to_generator(generator)]


def check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "np", "pt", "latent"):
        raise CheersError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")


def to_generator(generator: GeneratorLike) -> torch.Generator | None:
    """A generator, or a CPU one seeded with ``generator`` (the same draws on every device)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        if not 0 <= generator < 2**64:
            raise CheersError(
                f"the seed must be in [0, 2**64), got {generator}; pass a smaller int"
            )
        return torch.Generator("cpu").manual_seed(generator)
    raise CheersError(f"generator must be a torch.Generator or an int seed, got {generator!r}")


def as_list(value: str | Sequence[str], name: str) -> list[str]:
    if not isinstance(value, str | Sequence):
        raise PromptError(f"{name} must be a string or a list of strings, got {value!r}")
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise PromptError(f"{name} is empty; pass a string or a non-empty list of strings")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise PromptError(f"every {name} must be a non-empty string, got {item!r}")
    return items


def as_image_list(images: Any) -> list[ImageInput]:
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def match_images(images: Any, n: int) -> list[list[ImageInput]]:
    """One group of images per request: a single image is shared only when n == 1."""
    if n == 1:
        return [as_image_list(images)]
    if not isinstance(images, (list, tuple)) or len(images) != n:
        raise CheersError(
            f"{n} requests need a list of {n} images (or lists of images), one per request"
        )
    return [as_image_list(group) for group in images]


def check_positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CheersError(f"{name} must be a positive integer, got {value!r}")


def check_number(value: Any, name: str, low: float | None = None, allow_none: bool = False) -> None:
    """Raise :class:`CheersError` unless ``value`` is a finite real number (≥ ``low``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CheersError(f"{name} must be a finite number, got {value!r}")
    if low is not None and value < low:
        raise CheersError(f"{name} must be ≥ {low}, got {value!r}")


def check_callable(value: Any, name: str) -> None:
    """``value`` is None or can be called (checked before the work starts, not at step 1)."""
    if value is not None and not callable(value):
        raise CheersError(f"{name} must be a function (or None), got {value!r}")


#: More denoising steps than this only cost time (the authors use 80); a bigger number is a typo.
MAX_STEPS = 10_000


def check_sampling(
    num_inference_steps: Any,
    guidance_scale: Any,
    time_shift: Any,
    sampler: Any,
    guidance_interval: Any,
    callbacks: dict[str, Any],
    step_cache: Any = None,
) -> None:
    """The image-sampling arguments of text_to_image and edit, before any model work.

    A bad value here would otherwise surface after the whole denoising loop, as NaN images
    blamed on the weights (a zero or infinite time shift) or as a TypeError from deep inside.
    """
    if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool):
        raise SamplerError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
    if not 2 <= num_inference_steps <= MAX_STEPS:
        raise SamplerError(
            f"num_inference_steps must be in [2, {MAX_STEPS}], got {num_inference_steps} (the "
            "authors use 80)"
        )
    check_number(guidance_scale, "guidance_scale", low=0.0, allow_none=True)
    check_number(time_shift, "time_shift")
    if not time_shift > 0:
        raise SamplerError(
            f"time_shift must be > 0 (1 = uniform grid, below 1 = more steps near noise), "
            f"got {time_shift!r}"
        )
    if sampler is not None and not isinstance(sampler, str | FlowMatchSampler):
        raise SamplerError(
            f"sampler must be a sampler name (a str) or a FlowMatchSampler, got {sampler!r}"
        )
    if guidance_interval is not None:
        ok = isinstance(guidance_interval, tuple | list) and len(guidance_interval) == 2
        for bound in guidance_interval if ok else ():
            ok = ok and not isinstance(bound, bool) and isinstance(bound, int | float)
        if not ok or not 0.0 <= guidance_interval[0] <= guidance_interval[1] <= 1.0:
            raise SamplerError(
                "guidance_interval must be (lo, hi) with 0 ≤ lo ≤ hi ≤ 1, got "
                f"{guidance_interval!r}"
            )
    for name, value in callbacks.items():
        check_callable(value, name)
    if step_cache is not None and not isinstance(step_cache, StepCache):
        raise SamplerError(
            f"step_cache must be a cheers.samplers.StepCache (or None), got {step_cache!r}"
        )


def check_strength(strength: Any) -> None:
    """An edit's strength: the share of noise it starts from, in (0, 1]."""
    check_number(strength, "strength")
    if not 0.0 < strength <= 1.0:
        raise CheersError(f"strength must be in (0, 1], got {strength}")


#: The largest image side a call may ask for, as a multiple of the model's native side: the
#: image tokens grow with the area, and the VAE's attention with its square.
MAX_SIZE_FACTOR = 4


def check_image_size(height: Any, width: Any, config: Any) -> tuple[int, int]:
    """The (height, width) in pixels of the images a call makes; ``None`` is the model's
    native side (the config's ``image_size``, the only size the reference makes).

    Each side must be a multiple of the latent patch times the token merge (the image stride
    × 2: 32 px for the released model), so that the latent grid halves into whole LLM tokens,
    and at most :data:`MAX_SIZE_FACTOR` times the native side.
    """
    native = config.image_size
    unit = config.image_stride * config.token_merge
    largest = MAX_SIZE_FACTOR * native // unit * unit
    sides = []
    for name, value in (("height", height), ("width", width)):
        value = native if value is None else value
        if isinstance(value, bool) or not isinstance(value, int):
            raise CheersError(f"{name} must be a whole number of pixels, got {value!r}")
        if value % unit or not unit <= value <= largest:
            below = max(unit, min(largest, value // unit * unit))
            above = min(largest, below + unit)
            nearest = f"{below}" if below == above else f"{below} or {above}"
            raise CheersError(
                f"{name} {value} is not a size this model can make: each side must be a "
                f"multiple of {unit} px (its latent patch × token merge) from {unit} to "
                f"{largest}; the nearest are {nearest} (the native size is {native}x{native})"
            )
        sides.append(value)
    return sides[0], sides[1]


def parse_size(text: Any) -> tuple[int, int]:
    """``"WxH"`` (the ``size`` of OpenAI's images API, ``--size``) → ``(height, width)``."""
    parts = text.lower().split("x") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise CheersError(f"size must be WIDTHxHEIGHT in pixels, e.g. '512x384', got {text!r}")
    width, height = (int(p) for p in parts)
    return height, width


def latent_grid(config: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The latent grid (rows, columns) of an image of ``size`` = (height, width) pixels."""
    return size[0] // config.image_stride, size[1] // config.image_stride


def check_decoding(max_new_tokens: Any, temperature: Any, top_p: Any, stream: Any) -> None:
    """The text-generation arguments of understand and chat, before any model work.

    ``max_new_tokens`` is None (as many as fit, up to :data:`MAX_NEW_TOKENS`) or a positive int.
    """
    if max_new_tokens is not None:
        check_positive(max_new_tokens, "max_new_tokens")
    check_number(temperature, "temperature", low=0.0)
    check_number(top_p, "top_p")
    if not 0.0 < top_p <= 1.0:
        raise CheersError(f"top_p must be in (0, 1], got {top_p}")
    check_callable(stream, "stream")


def check_messages(messages: Any) -> None:
    """What chat() takes: a non-empty prompt, a list of messages, or a list of either.

    The messages themselves are checked by the chat template; here, the cases it would accept
    but that ask nothing (an empty prompt or an empty last user message: an empty answer).
    """
    if isinstance(messages, str):
        if not messages.strip():
            raise PromptError("chat() got an empty prompt; pass some text")
        return
    if isinstance(messages, Sequence) and not messages:
        raise PromptError("chat() got no messages; pass a prompt or a list of messages")
    if not isinstance(messages, Sequence):
        raise PromptError(
            f"chat() takes a prompt (str), a list of messages or a list of either, got {messages!r}"
        )
    single = isinstance(messages[0], Mapping)
    for conv in [messages] if single else messages:
        if isinstance(conv, str):
            check_messages(conv)
            continue
        last = conv[-1] if isinstance(conv, Sequence) and conv else None
        if isinstance(last, Mapping) and last.get("role") == "user":
            content = last.get("content")
            if isinstance(content, str) and not content.strip():
                raise PromptError("chat() got an empty last user message; pass some text")


#: Tokens an answer may take when ``max_new_tokens`` is left out (fewer if the context is full).
MAX_NEW_TOKENS = 256


def new_token_room(length: int, max_new_tokens: int | None, context: int) -> int:
    """How many tokens to reserve after a prompt of ``length`` positions.

    An explicit ``max_new_tokens`` is reserved in full (a :class:`PromptError` says how much
    room is left when it does not fit); left out, the answer gets up to
    :data:`MAX_NEW_TOKENS`, fewer when the context is nearly full, so a long prompt with a
    short answer still runs.
    """
    room = context - length
    if room < 1:
        raise ContextLengthError(
            f"the prompt and images take {length} positions but the model's context is "
            f"{context}, leaving no room for an answer; shorten the prompt, use fewer images "
            "or start a new conversation"
        )
    if max_new_tokens is None:
        return min(MAX_NEW_TOKENS, room)
    if max_new_tokens > room:
        raise ContextLengthError(
            f"max_new_tokens={max_new_tokens} does not fit: the prompt and images take {length} "
            f"of the model's {context} positions, so at most {room} tokens are left; lower "
            f"max_new_tokens to {room} or less, or leave it out to use what is left"
        )
    return max_new_tokens


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise :class:`NumericalError` if the model computed NaN or infinity in ``tensor``."""
    if not bool(torch.isfinite(tensor).all()):
        raise NumericalError(
            f"the model computed NaN or infinity in {what}, so its output would be meaningless; "
            "the weights are broken (re-download or re-save the checkpoint) or the dtype "
            "overflows (load with dtype='float32' or 'bfloat16')"
        )
