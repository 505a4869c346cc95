"""The command line's robustness cases of issue 15, run through ``cheers.cli.main([...])``:
``--out`` with an image suffix is that file, a long chat never gets stuck on a full context,
``ask`` reserves only the room an answer can have (docs/robustness.md)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cheers import loading
from cheers.cli import main
from cheers.pipeline import CheersPipeline

MODEL = Path(__file__).resolve().parents[1] / "src" / "cheers" / "default_model"
FLAGS = ["--model", str(MODEL), "--device", "cpu"]
FAST = ["--steps", "2", "--seed", "0", "--no-progress", *FLAGS]
UNGUIDED = ["--no-guidance", *FAST]


@pytest.fixture(scope="module")
def shared() -> CheersPipeline:
    return CheersPipeline.from_pretrained(MODEL)


@pytest.fixture(autouse=True)
def _one_model(monkeypatch, shared):
    """Every command gets the same loaded model (loading would dominate the run time)."""
    monkeypatch.setattr(loading, "load_pipeline", lambda *args, **kwargs: shared)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "photo.png"
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(path)
    return path


# -- --out --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("pic.jpg", "JPEG"), ("pic.JPEG", "JPEG"), ("pic.webp", "WEBP"), ("pic.PNG", "PNG")],
)
def test_generate_out_with_an_image_suffix_is_that_file(capsys, tmp_path, name, fmt):
    out = tmp_path / "new" / "folders" / name
    code, stdout, err = run(capsys, "generate", "a red circle", "--out", out, *UNGUIDED)
    assert code == 0, err
    assert stdout.strip() == str(out)
    assert out.is_file()  # a file, its missing parents created; not a folder named pic.jpg
    with Image.open(out) as image:
        assert image.format == fmt and image.size == (64, 64)


def test_generate_out_png_file_holds_the_pipelines_pixels(capsys, tmp_path, shared):
    out = tmp_path / "one.png"
    assert run(capsys, "generate", "a red circle", "--out", out, *UNGUIDED)[0] == 0
    expected = shared(
        "a red circle", num_inference_steps=2, guidance_scale=None, generator=0
    ).images[0]
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))


def test_edit_out_with_an_image_suffix_is_that_file(capsys, tmp_path, photo):
    out = tmp_path / "edits" / "winter.jpg"
    code, _, err = run(capsys, "edit", photo, "-i", "make it blue", "--out", out,
                       "--strength", "1.0", *UNGUIDED)  # fmt: skip
    assert code == 0, err
    with Image.open(out) as image:
        assert image.format == "JPEG"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["a", "--out", "{tmp}/pic.gif"], "does not write .gif files"),
        (["a", "b", "--out", "{tmp}/pic.jpg"], "single .jpg file but 2 images"),
        (["a", "--guidance", "-1"], "--guidance must be a finite number ≥ 0"),
    ],
)
def test_generate_refuses_before_writing(capsys, tmp_path, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, stdout, err = run(capsys, "generate", *argv, *FAST)
    assert code == 2 and fragment in err and "Traceback" not in err
    assert stdout == "" and list(tmp_path.iterdir()) == []


def test_out_without_an_image_suffix_is_a_folder(capsys, tmp_path):
    out = tmp_path / "results.v2"
    assert run(capsys, "generate", "a red circle", "--out", out, *UNGUIDED)[0] == 0
    assert out.is_dir() and [p.name for p in out.iterdir()] == ["00-a-red-circle.png"]


# -- the chat loop ------------------------------------------------------------------------------


@pytest.fixture
def short_context(shared, monkeypatch):
    """The shared model with a 96-position context, so a few turns fill it."""
    monkeypatch.setattr(shared.model.config.text_config, "max_position_embeddings", 96)
    return shared


def test_a_long_interactive_chat_keeps_answering(capsys, monkeypatch, short_context):
    lines = [f"message {i}: what shapes are there?" for i in range(8)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    code, out, err = run(capsys, "chat", "--max-new-tokens", "8", *FLAGS)
    assert code == 0
    assert len(out.splitlines()) == len(lines)  # one answer a line, every turn
    assert "error:" not in err
    assert "turn(s) were dropped to fit the model's context" in err


def test_a_chat_message_too_long_alone_is_refused_and_the_chat_goes_on(
    capsys, monkeypatch, short_context
):
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n" + "word " * 200 + "\nhello\n"))
    code, out, err = run(capsys, "chat", "--max-new-tokens", "8", *FLAGS)
    assert code == 0
    assert err.count("error:") == 1
    assert "even without the earlier turns" in err and "/reset" in err
    answers = out.splitlines()
    assert len(answers) == 2
    # The refused line left no trace: the third turn is answered after the first alone.
    history = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": answers[0]}]
    expected = short_context.chat([*history, {"role": "user", "content": "hello"}],
                                  max_new_tokens=8)  # fmt: skip
    assert answers[1] == expected


# -- ask reserves what an answer can take --------------------------------------------------------


def test_ask_with_many_images_answers_instead_of_failing_on_context(capsys, photo, shared):
    # 16 images leave fewer than 256 positions: a fixed 256-token reservation refused this.
    code, out, err = run(capsys, "ask", *[photo] * 16, "-q", "how many?", *FLAGS)
    assert code == 0, err
    assert out == shared.understand([str(photo)] * 16, "how many?") + "\n"


def test_ask_with_too_large_max_new_tokens_says_how_much_room_is_left(capsys, photo):
    code, _, err = run(capsys, "ask", *[photo] * 16, "-q", "how many?",
                       "--max-new-tokens", "256", *FLAGS)  # fmt: skip
    assert code == 2
    assert "tokens are left" in err and "Traceback" not in err


# -- refused before the model loads --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["generate", "a", "--seed", str(2**64)], "--seed must be in [0, 2**64)"),
        (["ask", "{photo}", "-q", "what?", "--seed", "-1"], "--seed must be in [0, 2**64)"),
        (["chat", "hi", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["generate", "a", "--shift", "0"], "--shift must be a positive number"),
        (["ask", "{tmp}/anim.gif", "-q", "what?"], "has 2 frames"),
    ],
)
def test_bad_flags_are_refused_before_the_model_loads(capsys, monkeypatch, tmp_path, photo, argv,
                                                      fragment):  # fmt: skip
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad flag was caught")

    monkeypatch.setattr(loading, "load_pipeline", refuse)
    first, second = Image.new("RGB", (8, 8), "red"), Image.new("RGB", (8, 8), "blue")
    first.save(tmp_path / "anim.gif", save_all=True, append_images=[second])
    argv = [a.replace("{photo}", str(photo)).replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, *argv, *FLAGS)
    assert code == 2 and fragment in err and "Traceback" not in err


def test_chat_with_an_empty_prompt_is_an_error_not_an_empty_answer(capsys):
    code, out, err = run(capsys, "chat", "  ", *FLAGS)
    assert code == 2 and out == "" and "empty prompt" in err
