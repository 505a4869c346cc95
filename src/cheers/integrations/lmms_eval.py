"""cheers as an lmms-eval model.

lmms-eval hands a model lists of ``Instance`` requests. For ``generate_until`` each request's
``args`` are ``(context, gen_kwargs, doc_to_visual, doc_id, task, split)`` and the images are
``doc_to_visual(self.task_dict[task][split][doc_id])`` (the harness sets ``task_dict``). With
lmms-eval installed the class registers itself as ``--model cheers``; pass
``--model_args pretrained=DIR``.
"""

from __future__ import annotations

from typing import Any

from cheers.errors import CheersError
from cheers.integrations.common import answer, load

try:  # the harness is optional
    from lmms_eval.api.model import lmms as _Base
    from lmms_eval.api.registry import register_model
except ImportError:  # pragma: no cover - depends on what is installed
    _Base = object

    def register_model(*names: str):  # type: ignore[no-redef]  # noqa: ARG001 - the harness's decorator
        return lambda cls: cls


@register_model("cheers")
class CheersLmmsEval(_Base):
    """A Cheers checkpoint behind lmms-eval's model interface."""

    def __init__(
        self,
        pretrained: str | None = None,
        max_new_tokens: int = 512,
        dtype: str | None = None,
        device: str | None = None,
        pipe: Any = None,
        **kwargs: Any,  # noqa: ARG002 - the harness passes its own options
    ) -> None:
        if _Base is not object:
            super().__init__()
        self.pipe = pipe if pipe is not None else load(pretrained, dtype, device)
        self.max_new_tokens = int(max_new_tokens)
        self.task_dict: dict = getattr(self, "task_dict", {})

    def generate_until(self, requests: list[Any]) -> list[str]:
        """One answer per request, with its ``max_new_tokens`` / ``temperature`` / ``top_p``
        and cut at the first of its ``until`` strings."""
        out = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
            images = [v for v in (visuals or []) if v is not None]
            text = answer(
                self.pipe,
                images,
                context,
                int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)),
                float(gen_kwargs.get("temperature", 0.0)),
                float(gen_kwargs.get("top_p", 1.0) or 1.0),
            )
            until = gen_kwargs.get("until") or []
            for stop in [until] if isinstance(until, str) else until:
                if stop:
                    text = text.split(stop)[0]
            out.append(text)
        return out

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:  # noqa: ARG002 - lmms-eval API
        raise CheersError(
            "cheers' lmms-eval integration answers generation tasks (generate_until) only; choose "
            "tasks whose output_type is generate_until"
        )

    def generate_until_multi_round(self, requests: list[Any]) -> list[str]:  # noqa: ARG002 - lmms-eval API
        raise CheersError("multi-round lmms-eval tasks are not supported by cheers' integration")


__all__ = ["CheersLmmsEval"]
