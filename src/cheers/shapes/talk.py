"""Text about the Shapes world beyond one-word answers: scene descriptions and small talk.

A model trained only on one-word questions answers ``"Hello"`` with an answer word. These two
kinds of sample teach it to describe a whole scene (``"Describe this image."`` → every object,
left to right) and to hold a short conversation inside its world: greetings, what it can do,
the names of its shapes and colours, and a plain refusal for anything outside the world.
"""

from __future__ import annotations

import numpy as np

from cheers.shapes.captions import noun_phrase
from cheers.shapes.render import COLORS, SHAPES, Scene

DESCRIBE_QUESTIONS: tuple[str, ...] = (
    "Describe this image.",
    "What is in this picture?",
    "What do you see?",
    "Describe the picture.",
)

_WHO = (
    "I am a tiny Cheers model that knows only the Shapes world: circles, squares and triangles "
    "in six colours. I can draw them, answer questions about a picture of them and edit one."
)
_CAN = (
    "I can draw shapes from a description, answer questions about a picture of shapes, "
    "describe it, and edit it."
)
_OUTSIDE = (
    "I only know the Shapes world: circles, squares and triangles in six colours. Ask me to "
    "draw some, or ask me about a picture of them."
)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


SHAPE_LIST = _join(list(SHAPES))
COLOR_LIST = _join(list(COLORS))

# (user turns, the answer): each user turn is one way of asking.
SMALL_TALK: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("Hello", "Hi", "Hello!", "Hi there!", "Hey", "Good morning", "Hello, who are you?"),
        f"Hello! {_WHO}",
    ),
    (("Who are you?", "What are you?", "Tell me about yourself.", "What is your name?"), _WHO),
    (("What can you do?", "How can you help me?", "What are you able to do?", "Help"), _CAN),
    (
        ("What shapes do you know?", "Which shapes can you draw?", "Name the shapes."),
        f"I know three shapes: {SHAPE_LIST}.",
    ),
    (
        (
            "What colors do you know?",
            "What colours do you know?",
            "Which colors can you draw?",
            "Name the colors.",
        ),
        f"I know six colours: {COLOR_LIST}.",
    ),
    (("Thank you", "Thanks!", "Thank you very much."), "You are welcome!"),
    (("Goodbye", "Bye!", "See you."), "Goodbye!"),
    (
        (
            "Write a haiku about cheese.",
            "What is the capital of France?",
            "Tell me a joke.",
            "Write a poem.",
            "What is 2 + 2?",
            "Who won the football game?",
            "Translate this.",
        ),
        _OUTSIDE,
    ),
)


def describe_scene(scene: Scene) -> str:
    """Every object of ``scene`` from left to right: ``"a red circle and a blue square"``."""
    objects = sorted(scene.objects, key=lambda o: (o.cx, o.cy))
    return _join([noun_phrase(o.shape, o.color) for o in objects])


def sample_describe_question(rng: np.random.Generator) -> str:
    """One of :data:`DESCRIBE_QUESTIONS`."""
    return DESCRIBE_QUESTIONS[int(rng.integers(len(DESCRIBE_QUESTIONS)))]


def sample_small_talk(rng: np.random.Generator) -> tuple[str, str]:
    """A random (user turn, answer) pair of :data:`SMALL_TALK`, its case varied a little."""
    asks, answer = SMALL_TALK[int(rng.integers(len(SMALL_TALK)))]
    ask = asks[int(rng.integers(len(asks)))]
    if rng.random() < 0.2:
        ask = ask.lower()
    return ask, answer


__all__ = [
    "COLOR_LIST",
    "DESCRIBE_QUESTIONS",
    "SHAPE_LIST",
    "SMALL_TALK",
    "describe_scene",
    "sample_describe_question",
    "sample_small_talk",
]
