"""`cheers demo` on the embedded default model, and the embedded model itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cheers.cli import DEFAULT_MODEL_DIR, main

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_DIR / "config.json").is_file(), reason="no embedded default model"
)


def test_embedded_model_loads_and_is_small():
    from cheers import CheersPipeline

    pipe = CheersPipeline.from_pretrained(DEFAULT_MODEL_DIR)
    assert pipe.resolution == 64
    assert pipe.model.config.dummy_image_prefix is False
    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size < 40 * 2**20  # it ships inside the package


def test_demo_writes_a_page_with_every_task(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", "4"]) == 0
    page = capsys.readouterr().out.strip().splitlines()[-1]
    assert page.endswith("index.html")
    text = Path(page).read_text(encoding="utf-8")
    assert text.count("<figure>") == 4 + 4 + 2  # generations, questions, edit source + result
    assert len(re.findall(r"data:image/png;base64,", text)) == 10
    for name in ["generate-0.png", "question-3.png", "edit-result.png"]:
        assert (tmp_path / "demo" / name).is_file()
    assert "Timings" in text and " s</td>" in text


def test_default_model_is_used_without_model_flag(tmp_path, capsys):
    image = tmp_path / "red.png"
    from cheers.shapes.render import Scene, ShapeObject, render

    render(Scene((ShapeObject("circle", "red", 32, 32, 18),))).save(image)
    assert (
        main(["ask", str(image), "-q", "What color is the circle?", "--max-new-tokens", "4"]) == 0
    )
    assert capsys.readouterr().out.strip() != ""
