"""CheersPipeline.answer: unrelated requests decoded together get the answers they get alone."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

from cheers.errors import PromptError
from cheers.pipeline import IMAGE_IN_PROMPT
from cheers.pipeline.text_requests import TextRequest


def shape(color: str, box: tuple[int, int, int, int], kind: str = "circle") -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    draw = ImageDraw.Draw(image)
    (draw.ellipse if kind == "circle" else draw.rectangle)(box, fill=color)
    return image


def ask(question: str, *images: Image.Image, **settings) -> TextRequest:
    content = IMAGE_IN_PROMPT * len(images) + ("\n" if images else "") + question
    return TextRequest([{"role": "user", "content": content}], list(images), **settings)


def alone(pipe, request: TextRequest) -> str:
    """The same request through the pipeline's single-request methods."""
    options = {
        "max_new_tokens": request.max_new_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "generator": request.seed,
    }
    if request.images:
        question = request.messages[-1]["content"].split("\n", 1)[1]
        return pipe.understand(list(request.images), question, **options)
    return pipe.chat(list(request.messages), **options)


def test_answers_equal_one_by_one_decoding(pipe):
    red = shape("red", (16, 16, 48, 48))
    blue = shape("blue", (8, 20, 30, 44), "square")
    requests = [
        ask("What color is the shape?", red, max_new_tokens=4, seed=1),
        ask("Who are you?", max_new_tokens=12, seed=2),  # no image: a longer answer
        ask("What shape is it?", blue, max_new_tokens=8, temperature=0.9, top_p=0.9, seed=3),
        ask("Hello", max_new_tokens=20, temperature=1.3, seed=4),
        ask("How many shapes are there?", red, blue, max_new_tokens=6, temperature=0.7, seed=5),
    ]
    pieces: list[list[str]] = [[] for _ in requests]

    def stream(step_pieces):
        for row, piece in enumerate(step_pieces):
            if piece is not None:
                pieces[row].append(piece)

    answers = pipe.answer(requests, stream=stream)
    for request, answer, streamed in zip(requests, answers, pieces, strict=True):
        assert answer.text == alone(pipe, request)
        # One streamed piece per answer token, and the pieces make the answer.
        assert len(streamed) == len(answer.token_ids)
        assert "".join(streamed).strip() == answer.text
        stopped = len(answer.token_ids) < request.max_new_tokens
        assert answer.finish_reason == ("stop" if stopped else "length")
        assert 0 < len(answer.token_ids) <= request.max_new_tokens


def test_each_row_keeps_its_own_budget(pipe):
    # Text-only prompts that the embedded model never ends: each row stops at its own budget.
    requests = [ask("Hello", max_new_tokens=n, seed=0) for n in (1, 5, 9)]
    answers = pipe.answer(requests)
    assert [len(a.token_ids) for a in answers] == [1, 5, 9]
    assert all(a.finish_reason == "length" for a in answers)


def test_image_count_must_match_the_markers(pipe):
    request = TextRequest(
        [{"role": "user", "content": "What is it?"}], [shape("red", (0, 0, 9, 9))]
    )
    with pytest.raises(PromptError, match="mark 0 images but 1 are given"):
        pipe.answer([request])
