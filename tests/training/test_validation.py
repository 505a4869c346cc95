"""Validation losses: independent of the batch size, and the image- and prompt-shift controls."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conversations import GENERATED, QUESTION, write_jsonl
from PIL import Image

from cheers.config import CheersConfig
from cheers.errors import DataError
from cheers.model import Cheers
from cheers.tokenizer import CheersTokenizer
from cheers.training.validation import validation_losses
from parity_fixtures import OFFICIAL

Q, GEN = QUESTION, GENERATED


@pytest.fixture(scope="module")
def tok() -> CheersTokenizer:
    return CheersTokenizer.from_folder(OFFICIAL)


@pytest.fixture(scope="module")
def model() -> Cheers:
    torch.manual_seed(0)
    return Cheers(CheersConfig.tiny(image_size=32)).eval()


def _write(folder: Path, rows: list[tuple[str | None, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rgb in {"red": (220, 40, 40), "blue": (40, 80, 220), "white": (255,) * 3}.items():
        Image.new("RGB", (32, 32), rgb).save(folder / f"{name}.png")
    return write_jsonl(folder / "val.jsonl", rows)


MIXED = [
    ("red.png", Q + "What color is it?", "red"),
    ("blue.png", Q + "What color is it?", "blue"),
    ("red.png", "a red square", GEN),
    ("white.png", Q + "Is it empty?", "yes"),
    ("red.png, blue.png", Q + "make it blue", GEN),
    (None, "Say hi.", "hi"),
    ("blue.png", "a blue square", GEN),
]


def test_losses_do_not_depend_on_the_batch_size(tmp_path, tok, model):
    path = _write(tmp_path, MIXED)
    results = [validation_losses(model, tok, path, batch_size=b) for b in (1, 3, 32)]
    assert {r.samples for r in results} == {len(MIXED)}
    for r in results[1:]:
        assert r.text == pytest.approx(results[0].text, rel=1e-5)
        assert r.flow == pytest.approx(results[0].flow, rel=1e-5)
    assert results[0].text > 0 and results[0].flow > 0


def test_seed_fixes_t_and_noise(tmp_path, tok, model):
    path = _write(tmp_path, MIXED)
    a, b, c = (validation_losses(model, tok, path, seed=s) for s in (1, 1, 2))
    assert a == b
    assert a.flow != c.flow


def test_shifting_identical_images_changes_nothing(tmp_path, tok, model):
    same = [("red.png", Q + "What color is it?", "red")] * 3 + [("red.png", "a red square", GEN)]
    path = _write(tmp_path, same)
    assert validation_losses(model, tok, path, shift_images=True) == validation_losses(
        model, tok, path
    )


def test_shift_gives_each_understanding_slot_the_next_ones_image(tmp_path, tok, model):
    # Understanding slots of MIXED, in order: red, blue, white, red (the edit's source); each
    # takes the next one's image, the last the first's. Generation targets stay.
    by_hand = list(MIXED)
    by_hand[0] = ("blue.png", *MIXED[0][1:])
    by_hand[1] = ("white.png", *MIXED[1][1:])
    by_hand[3] = ("red.png", *MIXED[3][1:])
    by_hand[4] = ("red.png, blue.png", *MIXED[4][1:])
    shifted = validation_losses(model, tok, _write(tmp_path / "a", MIXED), shift_images=True)
    assert shifted == validation_losses(model, tok, _write(tmp_path / "b", by_hand))
    assert shifted.text != pytest.approx(
        validation_losses(model, tok, _write(tmp_path / "c", MIXED)).text, rel=1e-6
    )


def test_shifting_identical_prompts_changes_nothing(tmp_path, tok, model):
    same = [("red.png", "a red square", GEN), ("blue.png", "a red square", GEN), MIXED[0]]
    path = _write(tmp_path, same)
    assert validation_losses(model, tok, path, shift_prompts=True) == validation_losses(
        model, tok, path
    )


def test_prompt_shift_gives_each_text_to_image_sample_the_next_ones_prompt(tmp_path, tok, model):
    # Three text-to-image samples (so that "next" differs from "previous"), a question and an
    # edit between them: each text-to-image sample keeps its image and takes the next one's
    # prompt, the last the first's; the question and the edit (it has an image to look at)
    # stay as they are.
    rows = [
        ("red.png", "a red square", GEN),
        MIXED[0],
        ("blue.png", "a blue square", GEN),
        MIXED[4],
        ("white.png", "an empty canvas", GEN),
    ]
    by_hand = list(rows)
    by_hand[0] = ("red.png", "a blue square", GEN)
    by_hand[2] = ("blue.png", "an empty canvas", GEN)
    by_hand[4] = ("white.png", "a red square", GEN)
    shifted = validation_losses(model, tok, _write(tmp_path / "a", rows), shift_prompts=True)
    assert shifted == validation_losses(model, tok, _write(tmp_path / "b", by_hand))
    assert shifted.flow != pytest.approx(
        validation_losses(model, tok, _write(tmp_path / "c", rows)).flow, rel=1e-6
    )


def test_text_only_set_keeps_the_dummy_images_flow_term(tmp_path, tok, model):
    path = _write(tmp_path, [(None, "Say hi.", "hi"), (None, "Say bye.", "bye")])
    result = validation_losses(model, tok, path)
    assert result.text > 0
    # The dummy image slot is in the objective's image term (docs/architecture.md §9), so flow is
    # defined.
    assert result.flow is not None


def test_bad_arguments_are_named(tmp_path, tok, model):
    path = _write(tmp_path, MIXED[2:4])
    with pytest.raises(DataError, match="at least two understanding images"):
        validation_losses(model, tok, path, shift_images=True)
    with pytest.raises(DataError, match="at least two text-to-image samples"):
        validation_losses(model, tok, path, shift_prompts=True)
    with pytest.raises(DataError, match="batch_size"):
        validation_losses(model, tok, path, batch_size=0)


def test_training_mode_is_restored(tmp_path, tok, model):
    path = _write(tmp_path, MIXED[:2])
    model.train()
    try:
        validation_losses(model, tok, path)
        assert model.training
    finally:
        model.eval()
