"""The pipeline's request arguments and outputs: types, checks and their error messages."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from cheers.errors import CheersError, PromptError
from cheers.image import ImageInput

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
        return [to_generator(g, torch.device("cpu")) for g in generator]
    return [to_generator(generator, torch.device("cpu"))]


def check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "np", "pt", "latent"):
        raise CheersError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")


def to_generator(generator: GeneratorLike, device: torch.device) -> torch.Generator | None:
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
