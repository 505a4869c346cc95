"""cheers as a VLMEvalKit model.

VLMEvalKit calls ``model.generate(message, dataset)`` with ``message`` a list of
``{"type": "image" | "text", "value": path or text}`` parts (or a plain string); its base class
normalises the message and calls :meth:`CheersVLMEval.generate_inner`. Register it in
VLMEvalKit's ``config.py``, e.g.
``supported_VLM["cheers"] = partial(CheersVLMEval, model_path="ai9stars/Cheers")``.

Images are put before the text (``INTERLEAVE = False``), as the released model was trained.
"""

from __future__ import annotations

import os
from typing import Any

from cheers.errors import CheersError
from cheers.image import load_image
from cheers.integrations.common import answer, load

try:  # the harness is optional: without it the integration is a plain class with the same methods
    from vlmeval.vlm.base import BaseModel as _Base
except ImportError:  # pragma: no cover - depends on what is installed
    _Base = object


class CheersVLMEval(_Base):
    """A Cheers checkpoint behind VLMEvalKit's model interface."""

    INTERLEAVE = False
    allowed_types = ("text", "image")

    def __init__(
        self,
        model_path: str | None = None,
        max_new_tokens: int = 512,
        dtype: str | None = None,
        device: str | None = None,
        pipe: Any = None,
        **kwargs: Any,
    ) -> None:
        self.pipe = pipe if pipe is not None else load(model_path, dtype, device)
        self.max_new_tokens = int(kwargs.pop("max_tokens", max_new_tokens))
        self.kwargs = kwargs

    def use_custom_prompt(self, dataset: str | None) -> bool:  # noqa: ARG002 - VLMEvalKit API
        """VLMEvalKit's own prompts are used for every dataset."""
        return False

    def generate_inner(self, message: list[dict[str, str]], dataset: str | None = None) -> str:  # noqa: ARG002 - VLMEvalKit API
        """Answer one normalised message (images first, then the text parts joined)."""
        images, texts = [], []
        for part in message:
            kind, value = part.get("type"), part.get("value")
            if kind == "image":
                images.append(load_image(value))
            elif kind == "text":
                texts.append(str(value))
            else:
                raise CheersError(f"message part of type {kind!r}: cheers takes text and image")
        return answer(self.pipe, images, "\n".join(texts), self.max_new_tokens)

    def generate(self, message: Any, dataset: str | None = None) -> str:
        """VLMEvalKit's entry point; without VLMEvalKit installed, its normalisation here."""
        if _Base is not object:
            return super().generate(message, dataset)
        return self.generate_inner(normalize_message(message), dataset)


def normalize_message(message: Any) -> list[dict[str, str]]:
    """A string, a list of strings (image paths recognised as files) or a list of parts."""
    if isinstance(message, str):
        return [{"type": "text", "value": message}]
    parts = []
    for item in message:
        if isinstance(item, dict):
            parts.append(item)
        elif isinstance(item, str):
            kind = "image" if os.path.isfile(item) else "text"
            parts.append({"type": kind, "value": item})
        else:
            raise CheersError(f"message item of type {type(item).__name__}: use str or dict")
    return parts


__all__ = ["CheersVLMEval", "normalize_message"]
