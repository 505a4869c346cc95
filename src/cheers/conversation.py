"""A multi-turn chat that stays within the model's context.

:meth:`CheersPipeline.chat` answers one request; a conversation grows by two messages a turn
until it no longer fits the context, and from then on every request would fail the same way.
:class:`Conversation` keeps the history, and when a turn does not fit it drops the oldest
question–answer pairs (never the system message) until it does, and says how many it dropped.
A message too long to fit even alone is refused without touching the history.

    >>> chat = Conversation(pipe)                       # doctest: +SKIP
    >>> chat.send("Hello!").answer                      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cheers.arguments import MAX_NEW_TOKENS, check_positive
from cheers.errors import ContextLengthError, PromptError

if TYPE_CHECKING:
    from cheers.pipeline import CheersPipeline


@dataclass(frozen=True)
class Reply:
    """One answer and how many earlier turns (question + answer) were dropped to make room."""

    answer: str
    dropped_turns: int = 0


@dataclass
class Conversation:
    """The messages so far and the settings every turn is answered with.

    ``max_new_tokens`` is the room kept for each answer (old turns are dropped to keep it);
    when a message is so long that even alone it leaves less, the answer gets what is left.
    ``chat_kwargs`` go to :meth:`CheersPipeline.chat` (temperature, top_p, generator…).
    """

    pipe: CheersPipeline
    system: str | None = None
    max_new_tokens: int = MAX_NEW_TOKENS
    chat_kwargs: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_positive(self.max_new_tokens, "max_new_tokens")
        if "max_new_tokens" in self.chat_kwargs:
            raise PromptError("pass max_new_tokens to Conversation itself, not in chat_kwargs")
        if self.system is not None and not isinstance(self.system, str):
            raise PromptError(f"system must be a str or None, got {self.system!r}")
        if not self.messages:
            self.reset()

    def reset(self) -> None:
        """Forget every turn (the system message stays)."""
        self.messages = [] if self.system is None else [{"role": "system", "content": self.system}]

    @property
    def turns(self) -> int:
        """Question–answer pairs kept in the history."""
        return sum(m["role"] == "user" for m in self.messages)

    def send(self, text: str) -> Reply:
        """Answer ``text`` in the context of the kept history, then add both to it."""
        if not isinstance(text, str) or not text.strip():
            raise PromptError(f"a chat message must be non-empty text, got {text!r}")
        head = 1 if self.system is not None else 0
        history = self.messages[head:]
        question = {"role": "user", "content": text}
        dropped = 0
        while True:
            request = [*self.messages[:head], *history, question]
            try:
                answer = self.pipe.chat(
                    request, max_new_tokens=self.max_new_tokens, **self.chat_kwargs
                )
                break
            except ContextLengthError as err:
                if history:
                    history = history[2:]  # the oldest question and its answer
                    dropped += 1
                    continue
                try:  # alone, with whatever room the context leaves for the answer
                    answer = self.pipe.chat(request, max_new_tokens=None, **self.chat_kwargs)
                    break
                except ContextLengthError as alone:
                    raise ContextLengthError(
                        f"this message does not fit even without the earlier turns: {alone}. "
                        "The conversation is unchanged; send a shorter message."
                    ) from err
        self.messages = [
            *self.messages[:head],
            *history,
            question,
            {"role": "assistant", "content": answer},
        ]
        return Reply(answer, dropped)
