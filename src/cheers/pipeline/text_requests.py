"""Independent text requests decoded in one batch, each with its own settings.

:func:`cheers.pipeline.loops.decode_from` decodes a batch with one temperature, one top-p, one
token budget and one generator, which is right for one caller's list of questions but not for a
server that puts unrelated requests side by side: each of those must get exactly the answer it
would get alone. Here every row keeps its own budget, temperature, top-p and generator (the
same draws, in the same order, as :meth:`CheersPipeline.chat` / :meth:`~CheersPipeline.understand`
make for it alone), so batching changes nothing but the speed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from cheers.image import ImageInput
from cheers.model import Cheers
from cheers.pipeline.loops import DecodeState, sample_token


@dataclass
class TextRequest:
    """One conversation to answer.

    ``messages`` are ``{"role", "content"}`` dicts whose contents mark each image of ``images``
    with one ``<im_start><image><im_end>``, in order. A request without images gets the dummy
    noise image in front (when the model config asks for it), drawn from its own seed, as
    :meth:`CheersPipeline.chat` does. ``seed`` is an int or a ``torch.Generator`` (consumed).
    ``max_new_tokens=None`` takes up to 256 tokens, fewer when the context leaves less.
    With ``may_draw`` the answer also ends where the model opens an image (``<im_start>``):
    its ``finish_reason`` is then ``"image"`` and :meth:`CheersPipeline.draw` can draw it.
    """

    messages: Sequence[Mapping[str, str]]
    images: Sequence[ImageInput] = ()
    max_new_tokens: int | None = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | torch.Generator | None = None
    may_draw: bool = False


@dataclass
class TextAnswer:
    """One request's answer: its text, the generated ids (EOS or ``<im_start>`` excluded) and why
    it stopped: EOS (``"stop"``), its budget (``"length"``) or an image opened (``"image"``)."""

    text: str
    token_ids: list[int]
    finish_reason: Literal["stop", "length", "image"]
    prompt_tokens: int


@dataclass
class RowSettings:
    """How one row chooses its tokens."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    stops: frozenset[int] = frozenset()  # tokens that end the row besides EOS


#: ``on_token(step, tokens, active)``: the ids chosen at ``step`` (B,) and which rows chose one
#: (a row is inactive once it has produced EOS or used its budget).
RowTokenCallback = Callable[[int, torch.Tensor, list[bool]], None]


@dataclass
class RowsOutput:
    tokens: list[list[int]] = field(default_factory=list)  # per row, EOS included if produced
    stopped: list[bool] = field(default_factory=list)  # per row: ended by EOS or a stop token


def decode_rows(
    model: Cheers,
    state: DecodeState,
    rows: Sequence[RowSettings],
    eos_id: int,
    pad_id: int,
    on_token: RowTokenCallback | None = None,
) -> RowsOutput:
    """Decode every row from ``state`` until it produces EOS (or one of its ``stops``) or uses
    its own budget.

    Row r's token at each step is ``sample_token`` of its logits alone with its settings, so it
    consumes its generator exactly as a batch of one would. Finished rows are fed ``pad_id``
    (their outputs are never read) until the last row finishes.
    """
    b = state.logits.shape[0]
    if len(rows) != b:
        raise ValueError(f"{len(rows)} row settings for a batch of {b}")
    out = RowsOutput([[] for _ in range(b)], [False] * b)
    active = [r.max_new_tokens > 0 for r in rows]
    step = 0
    while any(active):
        chosen = torch.full((b,), pad_id, dtype=torch.long, device=state.logits.device)
        greedy = [i for i in range(b) if active[i] and rows[i].temperature <= 0]
        if greedy:  # argmax needs no generator: one call for all greedy rows
            chosen[greedy] = state.logits[greedy].argmax(-1)
        for i in range(b):
            if active[i] and rows[i].temperature > 0:
                r = rows[i]
                chosen[i] = sample_token(
                    state.logits[i : i + 1], r.temperature, r.top_p, r.generator
                )[0]
        if on_token is not None:
            on_token(step, chosen, list(active))
        for i, tok in enumerate(chosen.tolist()):
            if not active[i]:
                continue
            out.tokens[i].append(tok)
            if tok == eos_id or tok in rows[i].stops:
                out.stopped[i] = True
            if out.stopped[i] or len(out.tokens[i]) >= rows[i].max_new_tokens:
                active[i] = False
        step += 1
        if any(active):
            state.advance(model, chosen)
    return out


class RowStreamer:
    """Per-token ids → the new text of each row that chose a text token (``None`` for rows
    that finished before this step or chose EOS or another of its ``stops`` in it), so a row gets
    one piece per token of its answer.

    The ids so far are decoded whole each time, so a character split over several tokens comes
    out once complete (its first pieces are empty).
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        eos_id: int,
        sink: Callable[[list[str | None]], None],
        rows: int,
        stops: Sequence[Collection[int]] = (),
    ) -> None:
        self._decode = decode
        # Per row: the tokens that end it (EOS, and its own stops when given).
        self._stops = [{eos_id, *(stops[r] if stops else ())} for r in range(rows)]
        self._sink = sink
        self._ids: list[list[int]] = [[] for _ in range(rows)]
        self._shown = [""] * rows

    def __call__(self, step: int, tokens: torch.Tensor, active: list[bool]) -> None:  # noqa: ARG002 - RowTokenCallback
        pieces: list[str | None] = []
        for r, tok in enumerate(tokens.tolist()):
            if not active[r] or tok in self._stops[r]:
                pieces.append(None)
                continue
            self._ids[r].append(tok)
            text = self._decode(self._ids[r])
            piece = text[len(self._shown[r]) :] if text.startswith(self._shown[r]) else ""
            if text.startswith(self._shown[r]):
                self._shown[r] = text
            pieces.append(piece)
        self._sink(pieces)
