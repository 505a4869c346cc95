"""A multi-turn conversation of text and images that stays within the model's context.

:class:`Conversation` keeps the messages and the images they show, and every turn sees the
earlier ones: :meth:`~Conversation.send` asks (with images attached or not),
:meth:`~Conversation.draw` draws, :meth:`~Conversation.edit` edits the last (or a chosen) image,
and the drawn images are in the conversation like attached ones, so the next turn can ask about
them or edit them. When a turn does not fit the context the oldest question–answer pairs (and
their images) are dropped, never the system message, and the reply says how many; a message too
long to fit even alone is refused without touching the conversation.

    >>> chat = Conversation(pipe)                              # doctest: +SKIP
    >>> chat.draw("a red circle").image                        # doctest: +SKIP
    >>> chat.edit("make it blue").image                        # doctest: +SKIP
    >>> chat.send("What color is the shape?").answer          # doctest: +SKIP

A drawn image is an assistant turn ``<im_start><image><im_end>``; an edit's user turn shows the
image it edits in front of the instruction, as :meth:`CheersPipeline.edit` prompts, so the edit
still knows its source when the turn that made it has been dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image

from cheers.errors import ContextLengthError, PromptError
from cheers.image import ImageInput, load_image
from cheers.pipeline.arguments import MAX_NEW_TOKENS, check_positive
from cheers.pipeline.draw_requests import DrawRequest, draw_ids
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextRequest

if TYPE_CHECKING:
    from cheers.pipeline.facade import CheersPipeline

Message = dict[str, str]
#: What ``chat_kwargs`` may set (the decoding of text turns; the generator also seeds drawings).
CHAT_KWARGS = ("temperature", "top_p", "generator")
#: What ``image_kwargs`` may set (see :meth:`CheersPipeline.draw`).
IMAGE_KWARGS = ("num_inference_steps", "guidance_scale", "time_shift", "strength", "sampler")


@dataclass(frozen=True)
class Reply:
    """One answer (its text; ``image`` when the turn drew one) and how many earlier turns
    (question + answer, with their images) were dropped to make room."""

    answer: str
    dropped_turns: int = 0
    image: Image.Image | None = None


@dataclass(frozen=True)
class Fitted:
    """A conversation cut to fit: the messages and images to send, and the pairs dropped."""

    messages: list[Message]
    images: list[Image.Image]
    dropped: int


def image_count(message: Mapping[str, str]) -> int:
    return message["content"].count(IMAGE_IN_PROMPT)


def prompt_positions(pipe: CheersPipeline, ids: Sequence[int], images: int) -> int:
    """Positions a prompt of ``ids`` with ``images`` image slots takes in the LLM (each slot
    becomes the image's tokens; an image-less prompt also carries the dummy image when the
    model config asks for it)."""
    per_image = pipe.model.tokens_per_image
    dummy = per_image if images == 0 and pipe.model.config.dummy_image_prefix else 0
    return len(ids) + images * (per_image - 1) + dummy


def fit_history(
    pipe: CheersPipeline,
    messages: Sequence[Message],
    images: Sequence[Image.Image],
    new: Sequence[Message],
    new_images: Sequence[Image.Image],
    room: int,
    drawing: bool,
) -> Fitted:
    """The conversation ``messages`` (a leading system message kept) followed by ``new``,
    without as many of its oldest question–answer pairs (and their images) as it takes to leave
    ``room`` positions for the reply (an image's tokens when ``drawing``).

    Raises:
        ContextLengthError: when the new messages do not fit even alone.
    """
    head = 1 if messages and messages[0]["role"] == "system" else 0
    history, kept_images = list(messages[head:]), list(images)
    context = pipe.model.config.text_config.max_position_embeddings
    dropped = 0
    while True:
        request = [*messages[:head], *history, *new]
        ids = draw_ids(pipe.inputs, request) if drawing else pipe.inputs.chat_ids(request)
        length = prompt_positions(pipe, ids, len(kept_images) + len(new_images))
        if length + room <= context:
            return Fitted(request, [*kept_images, *new_images], dropped)
        if not history:
            raise ContextLengthError(
                f"this message does not fit even without the earlier turns: it takes {length} "
                f"of the model's {context} positions and the reply needs {room}. The "
                "conversation is unchanged; send a shorter message or fewer images."
            )
        pair, history = history[:2], history[2:]  # the oldest question and its answer
        kept_images = kept_images[sum(image_count(m) for m in pair) :]
        dropped += 1


@dataclass
class Conversation:
    """The messages so far, the images they show, and the settings every turn uses.

    ``max_new_tokens`` is the room kept for each answer (old turns are dropped to keep it);
    when a message is so long that even alone it leaves less, the answer gets what is left.
    ``chat_kwargs`` set the text decoding (:data:`CHAT_KWARGS`: temperature, top_p, and a
    generator or seed that also seeds the drawings); ``image_kwargs`` the drawings and edits
    (:data:`IMAGE_KWARGS`, as in :meth:`CheersPipeline.draw`). With ``may_draw``,
    :meth:`send` lets the model open an image itself (``<im_start>``), which is then drawn.
    ``images`` holds, in order, every image the kept messages show (attached or drawn).
    """

    pipe: CheersPipeline
    system: str | None = None
    max_new_tokens: int = MAX_NEW_TOKENS
    chat_kwargs: dict[str, Any] = field(default_factory=dict)
    image_kwargs: dict[str, Any] = field(default_factory=dict)
    may_draw: bool = False
    messages: list[Message] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_positive(self.max_new_tokens, "max_new_tokens")
        for kwargs, allowed, name in (
            (self.chat_kwargs, CHAT_KWARGS, "chat_kwargs"),
            (self.image_kwargs, IMAGE_KWARGS, "image_kwargs"),
        ):
            unknown = sorted(set(kwargs) - set(allowed))
            if unknown:
                raise PromptError(
                    f"{name} does not take {', '.join(unknown)}; it takes {', '.join(allowed)}"
                    + (
                        " (pass max_new_tokens to Conversation itself)"
                        if "max_new_tokens" in unknown
                        else ""
                    )
                )
        if self.system is not None and not isinstance(self.system, str):
            raise PromptError(f"system must be a str or None, got {self.system!r}")
        if not self.messages:
            self.reset()
        marked = sum(image_count(m) for m in self.messages)
        if marked != len(self.images):
            raise PromptError(
                f"the messages show {marked} images but {len(self.images)} are given; pass one "
                f"image per {IMAGE_IN_PROMPT} in the messages"
            )

    def reset(self) -> None:
        """Forget every turn and image (the system message stays)."""
        self.messages = [] if self.system is None else [{"role": "system", "content": self.system}]
        self.images = []

    @property
    def turns(self) -> int:
        """Question–answer pairs kept in the history."""
        return sum(m["role"] == "user" for m in self.messages)

    # ------------------------------------------------------------------------- turns
    def send(self, text: str, images: Sequence[ImageInput] = ()) -> Reply:
        """Answer ``text`` (about ``images``, attached in front of it, and everything before)
        in the context of the kept conversation, then add both to it."""
        text = _check_text(text, "a chat message")
        attached = [load_image(im) for im in _as_images(images)]
        content = f"{IMAGE_IN_PROMPT * len(attached)}\n{text}" if attached else text
        new = [{"role": "user", "content": content}]
        budget: int | None = self.max_new_tokens
        try:
            fitted = fit_history(
                self.pipe, self.messages, self.images, new, attached, budget, False
            )
        except ContextLengthError:
            # Alone, with whatever room the context leaves for the answer (or the error).
            fitted = fit_history(
                self.pipe, self.messages[:1] if self.system else [], [], new, attached, 1, False
            )
            budget = None
        answer = self.pipe.answer(
            [
                TextRequest(
                    fitted.messages,
                    fitted.images,
                    max_new_tokens=budget,
                    temperature=self.chat_kwargs.get("temperature", 0.0),
                    top_p=self.chat_kwargs.get("top_p", 1.0),
                    seed=self.chat_kwargs.get("generator"),
                    may_draw=self.may_draw,
                )
            ]
        )[0]
        if answer.finish_reason != "image":
            return self._keep(fitted, answer.text, None)
        # The model opened an image: draw it after the text it wrote first.
        reply = [{"role": "assistant", "content": answer.text}] if answer.text else []
        image = self._draw(DrawRequest([*fitted.messages, *reply], fitted.images))
        return self._keep(fitted, answer.text + IMAGE_IN_PROMPT, image)

    def draw(self, prompt: str) -> Reply:
        """Draw what ``prompt`` asks, seeing the conversation so far (its images included)."""
        new = [{"role": "user", "content": _check_text(prompt, "a drawing prompt")}]
        fitted = self._fit_drawing(new, [])
        image = self._draw(DrawRequest(fitted.messages, fitted.images))
        return self._keep(fitted, IMAGE_IN_PROMPT, image)

    def edit(self, instruction: str, image: int = -1) -> Reply:
        """Edit image number ``image`` of :attr:`images` (default: the last one, negative
        indices count from the end) as ``instruction`` asks, seeing the conversation so far."""
        instruction = _check_text(instruction, "an edit instruction")
        if not self.images:
            raise PromptError(
                "there is no image in the conversation to edit; attach one with "
                "send(text, images=[...]) or draw one first"
            )
        if isinstance(image, bool) or not isinstance(image, int):
            raise PromptError(
                f"image must be an index into the conversation's images, got {image!r}"
            )
        n = len(self.images)
        if not -n <= image < n:
            raise PromptError(
                f"there is no image {image}: the conversation holds {n} image(s), numbered "
                f"0 to {n - 1} (or -1 for the last)"
            )
        source = self.images[image]
        new = [{"role": "user", "content": f"{IMAGE_IN_PROMPT}\n{instruction}"}]
        fitted = self._fit_drawing(new, [source])
        result = self._draw(DrawRequest(fitted.messages, fitted.images, source=source))
        return self._keep(fitted, IMAGE_IN_PROMPT, result)

    # ----------------------------------------------------------------------- helpers
    def _fit_drawing(self, new: list[Message], new_images: list[Image.Image]) -> Fitted:
        room = self.pipe.model.tokens_per_image
        return fit_history(self.pipe, self.messages, self.images, new, new_images, room, True)

    def _draw(self, request: DrawRequest) -> Image.Image:
        request.seed = self.chat_kwargs.get("generator")
        return self.pipe.draw([request], **self.image_kwargs).images[0]

    def _keep(self, fitted: Fitted, content: str, image: Image.Image | None) -> Reply:
        self.messages = [*fitted.messages, {"role": "assistant", "content": content}]
        self.images = [*fitted.images, *([image] if image is not None else [])]
        text = content.replace(IMAGE_IN_PROMPT, "").strip()
        return Reply(text, fitted.dropped, image)


def _check_text(text: Any, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise PromptError(f"{what} must be non-empty text, got {text!r}")
    if IMAGE_IN_PROMPT in text:
        raise PromptError(
            f"{what} contains the image marker {IMAGE_IN_PROMPT}; attach images as images, "
            "the conversation writes the markers itself"
        )
    return text


def _as_images(images: Any) -> list[ImageInput]:
    if isinstance(images, (list, tuple)):
        return list(images)
    raise PromptError(f"images must be a list of images, got {type(images).__name__}")
