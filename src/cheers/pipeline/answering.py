"""Text rows → answers: prefilling conversations and decoding their answers.

:func:`generate_text` decodes a batch with one set of settings (what
:meth:`CheersPipeline.chat` and :meth:`~CheersPipeline.understand` ask for);
:func:`answer_requests` gives every :class:`~cheers.pipeline.text_requests.TextRequest` its own
budget, temperature, top-p and seed (:meth:`CheersPipeline.answer`, with
:func:`cheers.pipeline.text_requests.decode_rows`). Both stream the new text of each row per token.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from cheers.errors import PromptError
from cheers.pipeline import memory
from cheers.pipeline.arguments import (
    GeneratorLike,
    check_finite,
    new_token_room,
    to_generator,
)
from cheers.pipeline.llm_inputs import IMAGE_IN_PROMPT, InputBuilder, TextRow
from cheers.pipeline.loops import StartDecoding, decode_from, start_decoding
from cheers.pipeline.text_requests import (
    RowSettings,
    RowStreamer,
    TextAnswer,
    TextRequest,
    decode_rows,
)
from cheers.sequence import left_pad

if TYPE_CHECKING:
    from cheers.model import Cheers
    from cheers.pipeline.memory import MemoryBudget


def token_streamer(
    inputs: InputBuilder, stream: Callable[[list[str]], None] | None, rows: int
) -> Callable[[int, torch.Tensor], None] | None:
    """Per-token ids → the new text of each row (decoding the ids so far, so that a
    character split over several tokens comes out whole)."""
    if stream is None:
        return None
    special, decode = inputs.special, inputs.tokenizer.decode
    ids: list[list[int]] = [[] for _ in range(rows)]
    shown = [""] * rows

    def on_token(_step: int, token: torch.Tensor) -> None:
        pieces = []
        for r, tok in enumerate(token.tolist()):
            if tok not in (special.eos, special.pad) and (not ids[r] or ids[r][-1] != special.eos):
                ids[r].append(tok)
            else:
                ids[r].append(special.eos)
            text = decode([i for i in ids[r] if i != special.eos])
            pieces.append(text[len(shown[r]) :] if text.startswith(shown[r]) else "")
            shown[r] = text if text.startswith(shown[r]) else shown[r]
        stream(pieces)

    return on_token


def generate_text(
    inputs: InputBuilder,
    requests: Sequence[TextRow],
    max_new_tokens: int | None,
    temperature: float,
    top_p: float,
    generator: GeneratorLike,
    stream: Callable[[list[str]], None] | None = None,
    decoding: StartDecoding = start_decoding,
    budget: MemoryBudget | None = None,
) -> list[str]:
    """Answer every row with the same settings; each answer is cut at its EOS. ``decoding``
    prefills the rows and begins their decoding (:data:`cheers.pipeline.loops.StartDecoding`);
    rows estimated not to fit ``budget`` are refused before the prefill."""
    model, special = inputs.model, inputs.special
    gen = to_generator(generator)
    ids, images, prefixes = zip(*requests, strict=True)
    batch = left_pad(inputs.sequences(ids, images, prefixes))
    context = model.config.text_config.max_position_embeddings
    max_new_tokens = new_token_room(int(batch.lengths.max()), max_new_tokens, context)
    if budget is not None:  # the images are encoded already (they are in the rows)
        check_text_memory(model, budget, len(requests), int(batch.lengths.max()), max_new_tokens, 0)
    prefix, state = decoding(model, batch, max_new_tokens)
    check_finite(prefix.hidden[:, -1], "the prompt's hidden states")
    out = decode_from(
        model,
        state,
        max_new_tokens,
        eos_id=special.eos,
        pad_id=special.pad,
        temperature=temperature,
        top_p=top_p,
        generator=gen,
        on_token=token_streamer(inputs, stream, len(requests)),
    )
    answers = []
    for row in out.tokens.tolist():
        if special.eos in row:
            row = row[: row.index(special.eos)]
        answers.append(inputs.tokenizer.decode(row).strip())
    return answers


def answer_requests(
    inputs: InputBuilder,
    requests: Sequence[TextRequest],
    stream: Callable[[list[str | None]], None] | None = None,
    decoding: StartDecoding = start_decoding,
    budget: MemoryBudget | None = None,
) -> list[TextAnswer]:
    """Check, prefill and decode independent requests together, each with its own settings
    (the body of :meth:`CheersPipeline.answer`); ``decoding`` as in :func:`generate_text`;
    a batch estimated not to fit ``budget`` is refused before anything is allocated."""
    model, special, tokenizer = inputs.model, inputs.special, inputs.tokenizer
    rows = []
    for req in requests:
        ids = inputs.chat_ids(req.messages)
        if ids.count(special.image) != len(req.images):
            raise PromptError(
                f"the messages mark {ids.count(special.image)} images but "
                f"{len(req.images)} are given; put one {IMAGE_IN_PROMPT} per image"
            )
        rows.append(ids)
    generators = [to_generator(req.seed) for req in requests]
    flat = [im for req in requests for im in req.images]
    if budget is not None:
        # An image marker becomes the image's tokens; a request without images gets a dummy.
        per_image = model.tokens_per_image
        counts = [max(1, len(req.images)) for req in requests]
        longest = max(len(ids) + n * per_image for ids, n in zip(rows, counts, strict=True))
        context = model.config.text_config.max_position_embeddings
        new = max(
            new_token_room(longest, None, context) if req.max_new_tokens is None
            else req.max_new_tokens
            for req in requests
        )  # fmt: skip
        check_text_memory(model, budget, len(requests), longest, new, sum(counts))
    tokens = model.understanding_tokens(inputs.pixels(flat)) if flat else None
    requests_in, k = [], 0
    for req, ids, gen in zip(requests, rows, generators, strict=True):
        n = len(req.images)
        dummy = None if n else inputs.dummy_tokens(1, None, [gen])
        images = [tokens[k + j] for j in range(n)] if n else []
        requests_in.append((ids, images, None if dummy is None else dummy[0]))
        k += n
    batch = left_pad(inputs.sequences(*zip(*requests_in, strict=True)))
    context = model.config.text_config.max_position_embeddings
    settings = []
    for length, req, gen in zip(batch.lengths.tolist(), requests, generators, strict=True):
        if req.max_new_tokens is None:
            limit = new_token_room(length, None, context)
        else:
            inputs.check_context(length, req.max_new_tokens)
            limit = req.max_new_tokens
        stops = frozenset({special.im_start}) if req.may_draw else frozenset()
        settings.append(RowSettings(limit, req.temperature, req.top_p, gen, stops))
    room = max(row.max_new_tokens for row in settings)
    _, state = decoding(model, batch, room)
    on_token = None
    if stream is not None:
        stops = [row.stops for row in settings]
        on_token = RowStreamer(tokenizer.decode, special.eos, stream, len(requests), stops)
    out = decode_rows(model, state, settings, special.eos, special.pad, on_token)
    answers = []
    for row, stopped, length in zip(out.tokens, out.stopped, batch.lengths.tolist(), strict=True):
        ids = row[:-1] if stopped else row
        text = tokenizer.decode(ids).strip()
        reason = ("image" if row[-1] == special.im_start else "stop") if stopped else "length"
        answers.append(TextAnswer(text, ids, reason, length))
    return answers


def check_text_memory(
    model: Cheers, budget: MemoryBudget, rows: int, prompt_tokens: int, new: int, images: int
) -> None:
    """Refuse ``rows`` conversations of up to ``prompt_tokens`` + ``new`` tokens reading
    ``images`` images (not encoded yet) that cannot fit (:mod:`cheers.pipeline.memory`)."""

    def need(n: int) -> memory.MemoryEstimate:
        share = math.ceil(images * n / rows)
        return memory.text_call(
            model.config, model.dtype, n, prompt_tokens=prompt_tokens, new_tokens=new, images=share
        )

    fits = budget.rows_that_fit(need, rows, model.device)
    if fits < rows:
        fix = (
            f"answer at most {fits} conversation(s) at once, or ask for fewer new tokens"
            if fits
            else "not even one fits: ask for fewer new tokens, send fewer or smaller images, "
            "or use a smaller dtype (--dtype bfloat16)"
        )
        budget.check(need(rows), model.device, fix)
