"""`cheers demo` on the embedded default model, and the embedded model itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cheers.cli import main
from cheers.loading import DEFAULT_MODEL_DIR

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
    # Every result is marked, and the score line counts the marks.
    right, wrong = text.count("✓ right"), text.count("✗ wrong")
    assert right + wrong == 9
    assert f"<b>{right} of 9 right</b>" in text
    assert "knows only the Shapes world" in text


class _FakePipe:
    """Answers every demo input perfectly (``perfect``) or wrongly, without a model."""

    resolution = 64

    def __init__(self, perfect: bool) -> None:
        self.perfect = perfect

    def _image(self, scene):
        from cheers.shapes.render import Scene, render

        return render(scene if self.perfect else Scene(()))

    def __call__(self, prompts, **kwargs):
        from types import SimpleNamespace

        from cheers.shapes.render import Scene, ShapeObject

        drawn = {
            "a red circle": [("circle", "red", 32, 32)],
            "a blue square and a yellow triangle": [
                ("square", "blue", 16, 32),
                ("triangle", "yellow", 46, 32),
            ],
            "two circles": [("circle", "green", 16, 32), ("circle", "blue", 46, 32)],
            "a square to the left of a circle": [
                ("square", "red", 14, 32),
                ("circle", "blue", 48, 32),
            ],
        }
        scenes = [
            Scene(tuple(ShapeObject(s, c, x, y, 14) for s, c, x, y in drawn[p])) for p in prompts
        ]
        return SimpleNamespace(images=[self._image(scene) for scene in scenes])

    def understand(self, pictures, questions, **kwargs):
        from cheers.evaluation.demo import SCENES

        return [truth if self.perfect else "purple" for _, _, truth in SCENES]

    def edit(self, source, instruction, **kwargs):
        from types import SimpleNamespace

        from cheers.evaluation.demo import EDIT

        return SimpleNamespace(images=[self._image(EDIT[2])])


@pytest.mark.parametrize("perfect", [True, False])
def test_demo_judges_right_and_wrong_results(perfect):
    from cheers.evaluation.demo import run_demo

    result = run_demo(_FakePipe(perfect))
    assert result.score == ((9, 9) if perfect else (0, 9))
    assert [r.task for r in result.results] == ["generate"] * 4 + ["answer"] * 4 + ["edit"]


def test_default_model_is_used_without_model_flag(tmp_path, capsys):
    image = tmp_path / "red.png"
    from cheers.shapes.render import Scene, ShapeObject, render

    render(Scene((ShapeObject("circle", "red", 32, 32, 18),))).save(image)
    assert (
        main(["ask", str(image), "-q", "What color is the circle?", "--max-new-tokens", "4"]) == 0
    )
    assert capsys.readouterr().out.strip() != ""
