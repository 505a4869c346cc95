"""What the harness integrations share: loading the pipeline and answering one request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from cheers.errors import CheersError
from cheers.evaluation.protocol import ChatPipeline, UnderstandingPipeline


class AnsweringPipeline(UnderstandingPipeline, ChatPipeline, Protocol):
    """What the harness integrations call: ``understand`` with images, ``chat`` without."""


def load(model_path: str | None, dtype: str | None, device: str | None) -> Any:
    """The pipeline of ``model_path`` (default: the model embedded in the package)."""
    from cheers.loading import load_pipeline

    return load_pipeline(model_path, dtype, device)


def answer(
    pipe: AnsweringPipeline,
    images: Sequence[Any],
    text: str,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> str:
    """One answer: about the images (all put before the text), or a text-only chat turn."""
    if not text.strip() and not images:
        raise CheersError("the request has neither text nor images")
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    if images:
        return str(pipe.understand(list(images), text, **options))
    return str(pipe.chat(text, **options))
