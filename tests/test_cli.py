"""The ``cheers`` command line, run in-process through ``main([...])`` on the fixture model."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cheers import loading
from cheers.cli import main, output
from cheers.errors import CheersError
from cheers.pipeline import CheersPipeline, ImagePipelineOutput
from cheers.pipeline.text_requests import TextAnswer

HELP_FLAGS = {
    "generate": ["--steps", "--guidance", "--no-guidance", "--shift", "--seed", "--num-images",
                 "--out", "--dtype", "--device", "--no-progress", "--model"],
    "ask": ["--question", "--max-new-tokens", "--temperature", "--top-p", "--seed", "--model"],
    "chat": ["--max-new-tokens", "--temperature", "--top-p", "--seed", "--steps", "--strength",
             "--out", "--model"],
    "edit": ["--instruction", "--strength", "--steps", "--guidance", "--shift", "--seed", "--out",
             "--model"],
}  # fmt: skip


@pytest.fixture(scope="module")
def pipeline_cache() -> dict[tuple, CheersPipeline]:
    return {}


@pytest.fixture(autouse=True)
def _load_once(monkeypatch, pipeline_cache):
    """Every test of the module shares one loaded model (loading dominates the run time)."""
    real = loading.load_pipeline

    def load(model, dtype, device, **options):
        name = model if model is not None else str(loading.default_model_path())
        key = (name, dtype, device, *sorted((k, v) for k, v in options.items() if v))
        if key not in pipeline_cache:
            pipeline_cache[key] = real(model, dtype, device, **options)
        return pipeline_cache[key]

    monkeypatch.setattr(loading, "load_pipeline", load)


@pytest.fixture
def pipe(public_model_dir) -> CheersPipeline:
    return loading.load_pipeline(str(public_model_dir), None, "cpu")


@pytest.fixture
def model_flags(public_model_dir) -> list[str]:
    return ["--model", str(public_model_dir), "--device", "cpu"]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "photo.png"
    pixels = torch.arange(96 * 80 * 3, dtype=torch.int64).reshape(96, 80, 3) % 251
    Image.fromarray(pixels.to(torch.uint8).numpy()).save(path)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    assert "error:" in err
    assert "Traceback" not in err
    for word in words:
        assert word in err


# ------------------------------------------------------------------------------------- help
def test_main_help_lists_commands_and_an_example(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("generate", "ask", "chat", "edit", "--model", "examples:"):
        assert name in out


@pytest.mark.parametrize("command", sorted(HELP_FLAGS))
def test_subcommand_help_explains_every_flag(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "examples:" in out and f"cheers {command}" in out
    for flag in HELP_FLAGS[command]:
        assert flag in out
    assert "default:" in out


def test_python_dash_m_cheers_help(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cheers", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "generate" in proc.stdout and "edit" in proc.stdout


def test_no_command_is_a_user_error(capsys):
    code, _, err = run(capsys)
    assert_user_error(code, err, "generate")


# --------------------------------------------------------------------------------- generate
def test_generate_writes_one_png_per_image_into_a_folder(capsys, tmp_path, model_flags):
    out_dir = tmp_path / "new" / "images"
    code, out, _ = run(
        capsys, "generate", "A red circle!", "a blue square", "--num-images", "2",
        "--steps", "2", "--no-guidance", "--seed", "0", "--no-progress", "--out", out_dir,
        *model_flags,
    )  # fmt: skip
    assert code == 0
    names = ["00-a-red-circle.png", "01-a-red-circle.png", "02-a-blue-square.png",
             "03-a-blue-square.png"]  # fmt: skip
    assert out.split() == [str(out_dir / n) for n in names]
    assert sorted(p.name for p in out_dir.iterdir()) == names  # no temporary files left
    for name in names:
        with Image.open(out_dir / name) as image:
            assert image.format == "PNG"
            assert image.size == (128, 128)
            assert image.mode == "RGB"


def test_generate_to_a_png_file_is_reproducible_by_seed(capsys, tmp_path, model_flags):
    def generate(name: str, seed: int) -> bytes:
        path = tmp_path / "sub" / name
        code, out, _ = run(
            capsys, "generate", "a lighthouse", "--steps", "2", "--no-guidance", "--seed", seed,
            "--no-progress", "--out", path, *model_flags,
        )  # fmt: skip
        assert code == 0
        assert out.strip() == str(path)
        with Image.open(path) as image:
            assert image.size == (128, 128)
        return path.read_bytes()

    first = generate("a.png", 7)
    assert generate("b.png", 7) == first
    assert generate("c.png", 8) != first
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["a.png", "b.png", "c.png"]


def test_generate_without_seed_reports_the_seed_it_drew(
    capsys, monkeypatch, tmp_path, model_flags, pipe
):
    seen = {}

    def fake(prompts, **kwargs):
        seen.update(kwargs)
        return ImagePipelineOutput([Image.new("RGB", (128, 128))], torch.zeros(1))

    monkeypatch.setattr(pipe, "text_to_image", fake)
    code, _, err = run(capsys, "generate", "x", "--out", tmp_path / "x.png", *model_flags)
    assert code == 0
    assert f"--seed {seen['generator']}" in err
    assert seen["num_inference_steps"] == 80 and seen["guidance_scale"] == 9.5
    assert seen["time_shift"] == 0.5 and seen["progress"] is True


# ------------------------------------------------------------------------- ask / chat / edit
def test_ask_prints_the_greedy_answer_of_the_pipeline(capsys, pipe, image_file, model_flags):
    question = "What is in the pictures?"
    code, out, _ = run(
        capsys, "ask", image_file, image_file, "--question", question,
        "--max-new-tokens", "8", *model_flags,
    )  # fmt: skip
    assert code == 0
    expected = pipe.understand([str(image_file)] * 2, question, max_new_tokens=8)
    assert out.strip()
    assert out == expected + "\n"


def test_chat_with_a_prompt_prints_one_answer(capsys, pipe, model_flags):
    code, out, _ = run(
        capsys, "chat", "Hello there", "--max-new-tokens", "6", "--seed", "3", *model_flags
    )
    assert code == 0
    assert out.strip()
    assert out == pipe.chat("Hello there", max_new_tokens=6, generator=3) + "\n"


def test_interactive_chat_keeps_the_history_until_eof(capsys, monkeypatch, pipe, model_flags):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n\nAnd then?\n"))
    code, out, _ = run(capsys, "chat", "--max-new-tokens", "5", "--seed", "1", *model_flags)
    assert code == 0
    gen = torch.Generator().manual_seed(1)
    history = [{"role": "user", "content": "Hello"}]
    first = pipe.chat(history, max_new_tokens=5, generator=gen)
    history += [
        {"role": "assistant", "content": first},
        {"role": "user", "content": "And then?"},
    ]
    second = pipe.chat(history, max_new_tokens=5, generator=gen)
    assert out == f"{first}\n{second}\n"


def test_interactive_chat_stops_at_exit(capsys, monkeypatch, pipe, model_flags):
    calls = []

    def answer(requests, **kw):
        calls.append(list(requests[0].messages))
        return [TextAnswer("ok", [], "stop", 1)]

    monkeypatch.setattr(pipe, "answer", answer)
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\n/reset\ntwo\n/exit\nthree\n"))
    code, out, _ = run(capsys, "chat", *model_flags)
    assert code == 0
    assert out == "ok\nok\n"
    assert calls == [[{"role": "user", "content": "one"}], [{"role": "user", "content": "two"}]]


def test_interactive_chat_draws_edits_saves_and_asks(
    capsys, monkeypatch, pipe, model_flags, tmp_path
):
    lines = [
        "/edit make it blue",  # no image yet: an error, the conversation goes on
        "/draw a red circle",
        "/edit make it blue",
        "/save #1 " + str(tmp_path / "first.png"),
        "/images",
        "What color is the shape?",
        "/edit #7 x",
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    code, out, err = run(
        capsys, "chat", "--steps", "3", "--seed", "2", "--max-new-tokens", "4",
        "--out", tmp_path / "drawn", *model_flags,
    )  # fmt: skip
    assert code == 0
    assert "holds no image yet" in err and "no image #7" in err
    out_lines = out.splitlines()
    assert out_lines[0] == f"[image #1, 128x128] {tmp_path / 'drawn' / 'image-1.png'}"
    assert out_lines[1] == f"[image #3, 128x128] {tmp_path / 'drawn' / 'image-2.png'}"
    assert out_lines[2] == str(tmp_path / "first.png")
    assert out_lines[3:6] == ["#1: 128x128", "#2: 128x128", "#3: 128x128"]
    # The first drawing is the image text-to-image makes with the session's generator.
    gen = torch.Generator().manual_seed(2)
    expected = pipe("a red circle", num_inference_steps=3, generator=gen).images[0]
    with (
        Image.open(tmp_path / "first.png") as saved,
        Image.open(tmp_path / "drawn" / "image-1.png") as drawn,
    ):
        assert saved.tobytes() == drawn.tobytes() == expected.tobytes()


def test_edit_writes_a_png(capsys, tmp_path, image_file, model_flags):
    code, out, _ = run(
        capsys, "edit", image_file, "--instruction", "Make it blue", "--steps", "3",
        "--seed", "0", "--no-progress", "--out", tmp_path / "edits", *model_flags,
    )  # fmt: skip
    assert code == 0
    path = tmp_path / "edits" / "photo-make-it-blue.png"
    assert out.strip() == str(path)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (128, 128)


def test_embedded_default_model_is_used_without_model_flag(capsys, monkeypatch, public_model_dir):
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", public_model_dir)
    assert loading.default_model_path() == public_model_dir
    code, out, _ = run(capsys, "chat", "Hi", "--max-new-tokens", "2", "--device", "cpu")
    assert code == 0 and out.strip()


def test_slugify():
    assert output.slugify("A red circle!") == "a-red-circle"
    assert output.slugify("Café au lait") == "cafe-au-lait"
    assert output.slugify("一只猫") == "image"
    assert len(output.slugify("word " * 50)) <= 60


# ----------------------------------------------------------------------------------- errors
def test_missing_model_folder(capsys, tmp_path, image_file):
    code, _, err = run(capsys, "ask", image_file, "-q", "hi", "--model", tmp_path / "nope")
    assert_user_error(code, err, "nope", "does not exist")


def test_no_model_and_no_embedded_model(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", tmp_path / "default_model")
    with pytest.raises(CheersError, match="--model"):
        loading.default_model_path()
    code, _, err = run(capsys, "chat", "hi")
    assert_user_error(code, err, "--model DIR")


def test_missing_image_file(capsys, tmp_path, model_flags):
    code, _, err = run(capsys, "ask", tmp_path / "missing.png", "-q", "hi", *model_flags)
    assert_user_error(code, err, "missing.png")
    code, _, err = run(capsys, "edit", tmp_path / "missing.png", "-i", "hi", *model_flags)
    assert_user_error(code, err, "missing.png")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["generate", "x", "--steps", "1"], ["--steps", "at least 2"]),
        (["generate", "x", "--num-images", "0"], ["--num-images"]),
        (["generate", "x", "--shift", "0"], ["--shift"]),
        (["generate", "x", "--steps", "two"], ["--steps", "two"]),
        (["generate", "x", "--guidance", "2", "--no-guidance"], ["--no-guidance"]),
        (["generate", "x", "--stepz", "3"], ["--stepz"]),
        (["edit", "IMG", "-i", "x", "--strength", "0"], ["--strength", "(0, 1]"]),
        (["edit", "IMG", "-i", "x", "--strength", "1.5"], ["--strength"]),
        (["edit", "IMG", "-i", "x", "--steps", "2"], ["--steps 3"]),
        (["ask", "IMG", "-q", "x", "--top-p", "0"], ["--top-p"]),
        (["ask", "IMG", "-q", "x", "--top-p", "1.5"], ["--top-p"]),
        (["chat", "x", "--temperature", "-1"], ["--temperature"]),
        (["chat", "x", "--max-new-tokens", "0"], ["--max-new-tokens"]),
        (["ask", "IMG"], ["--question"]),
        (["chat", "x", "--device", "tpu"], ["--device"]),
        (["generate", "x", "--dtype", "int8"], ["--dtype"]),
    ],
)
def test_bad_flags_are_user_errors(capsys, argv, words, image_file, model_flags):
    argv = [str(image_file) if a == "IMG" else a for a in argv]
    # The model flags go first so that a bad --device in argv comes last and wins.
    code, _, err = run(capsys, argv[0], *model_flags, *argv[1:])
    assert_user_error(code, err, *words)


def test_out_path_blocked_by_a_file(capsys, tmp_path, model_flags):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "x.png", blocker / "sub"):
        code, _, err = run(capsys, "generate", "x", "--steps", "2", "--out", out, *model_flags)
        assert_user_error(code, err, "--out")
    code, _, err = run(capsys, "generate", "a", "b", "--out", tmp_path / "x.png", *model_flags)
    assert_user_error(code, err, "2 images")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_out_folder_not_writable(capsys, tmp_path, model_flags):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code, _, err = run(capsys, "generate", "x", "--out", locked / "sub", *model_flags)
        assert_user_error(code, err, "sub")
        code, _, err = run(capsys, "generate", "x", "--out", locked, *model_flags)
        assert_user_error(code, err, "not writable")
    finally:
        locked.chmod(0o700)


def test_failed_write_leaves_no_partial_file(capsys, monkeypatch, tmp_path, model_flags, pipe):
    def fake(prompts, **kwargs):
        return ImagePipelineOutput([Image.new("RGB", (128, 128))], torch.zeros(1))

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pipe, "text_to_image", fake)
    monkeypatch.setattr(os, "replace", refuse)
    out_dir = tmp_path / "out"
    code, _, err = run(capsys, "generate", "x", "--seed", "0", "--out", out_dir, *model_flags)
    assert_user_error(code, err, "cannot write", "Permission denied")
    assert list(out_dir.iterdir()) == []


def test_device_flag_is_checked_by_the_one_resolver(capsys, model_flags):
    code, _, err = run(capsys, "chat", "hi", "--model", model_flags[1], "--device", "tpu")
    assert_user_error(code, err, "--device must be cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "chat", "hi", "--model", model_flags[1], "--device", "cuda:3")
        assert_user_error(code, err, "--device cuda:3", "CUDA is not available")


def test_compile_flag_compiles_the_loaded_pipeline(capsys, monkeypatch, model_flags):
    calls = []
    monkeypatch.setattr(CheersPipeline, "compile", lambda self, *a, **kw: calls.append(self))
    code, out, err = run(capsys, "chat", "hi", "--max-new-tokens", "2", "--compile", *model_flags)
    assert code == 0 and out.strip() and len(calls) == 1
    assert "compiling" in err
