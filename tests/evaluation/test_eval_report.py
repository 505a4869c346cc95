"""JSON reports, the sample grid and the text table."""

from __future__ import annotations

import json
import math

import pytest
from eval_fakes import FakePipe, oracle_drawer
from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import (
    EvalSample,
    evaluate_generation,
    evaluate_understanding,
    format_table,
    make_grid,
    read_report,
    select_samples,
    to_jsonable,
    write_json,
    write_report,
)


@pytest.fixture(scope="module")
def gen_result():
    pipe = FakePipe(64, draw=oracle_drawer(64))
    return evaluate_generation(pipe, n_per_category=2, images_per_prompt=2, n_heldout=1)


def test_json_round_trips(tmp_path, gen_result):
    path = write_json(gen_result, tmp_path / "r" / "report.json")
    back = read_report(path)
    assert back == to_jsonable(gen_result)
    assert "samples" not in back
    assert back["scores"] == gen_result["scores"]
    assert back["items"][0]["text"] == gen_result["items"][0]["text"]
    assert back["settings"]["images_per_prompt"] == 2
    # Nothing but the report is left in the folder (the temporary file was moved in place).
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]
    # Writing again replaces the file.
    write_json({**gen_result, "scores": {"overall": 0.5}}, path)
    assert read_report(path)["scores"] == {"overall": 0.5}


def test_json_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(CheersError):
        write_json({"task": "x", "scores": {"overall": math.nan}}, tmp_path / "r.json")
    with pytest.raises(CheersError):
        write_json({"task": "x", "obj": object()}, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def _samples(n: int, source: bool = False) -> list[EvalSample]:
    img = Image.new("RGB", (64, 64), "white")
    return [
        EvalSample(img, f"prompt number {i}", i % 2 == 0, "g", i, source=img if source else None)
        for i in range(n)
    ]


def test_grid_has_the_documented_size():
    # 10 samples, 4 columns → 3 rows; tiles 64 + 2·2 wide, 64 + 2·2 + 3·12 high, gaps of 5.
    grid = make_grid(
        _samples(10), columns=4, cell=64, border=2, gap=5, text_lines=3, line_height=12
    )
    assert grid.size == (4 * 68 + 5 * 5, 3 * (68 + 36) + 4 * 5)
    # Editing tiles show source and result side by side.
    pair = make_grid(
        _samples(3, source=True), columns=4, cell=64, border=2, gap=5, text_lines=3, line_height=12
    )
    assert pair.size == (3 * 132 + 4 * 5, 104 + 2 * 5)


def test_grid_borders_are_green_and_red():
    grid = make_grid(_samples(2), columns=2, cell=32, border=3, gap=4, text_lines=1)
    left, right = grid.getpixel((4 + 1, 4 + 1)), grid.getpixel((4 + 38 + 4 + 1, 4 + 1))
    assert left[1] > 120 and left[0] < 100  # sample 0 correct: green
    assert right[0] > 180 and right[1] < 100  # sample 1 wrong: red
    assert grid.getpixel((4 + 3 + 16, 4 + 3 + 16)) == (255, 255, 255)  # the image itself


def test_grid_png_from_a_result(tmp_path, gen_result):
    report, grid = write_report(gen_result, tmp_path, max_cells=8)
    assert report.name == "report.json" and grid.name == "grid.png"
    with Image.open(grid) as im:
        # One row per prompt (2 images per prompt), 4 prompts fit in 8 cells.
        assert im.format == "PNG"
        assert im.size == (2 * (128 + 6) + 3 * 6, 4 * (128 + 6 + 48) + 5 * 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "report.json"]


def test_selection_keeps_whole_prompts_and_spreads_groups(gen_result):
    chosen = select_samples(gen_result["samples"], 16)
    assert len(chosen) == 16
    units = {}
    for s in chosen:
        units.setdefault(s.unit, []).append(s)
    assert all(len(v) == 2 for v in units.values())
    assert len({s.group for s in chosen}) == 8  # six categories and two held-out ones


def test_grid_text_survives_non_ascii_answers():
    img = Image.new("RGB", (64, 64), "white")
    s = EvalSample(img, "What color is the circle?", False, "color", 0, answer="딛选出", gold="red")
    assert make_grid([s], cell=64).size[0] > 64


def test_format_table(gen_result):
    table = format_table(gen_result)
    for word in ("shapes-gen", "single_object", "color_attr", "overall", "held-out", "time:"):
        assert word in table
    assert "1.000" in table and "4/4" in table
    vqa = evaluate_understanding(FakePipe(answer=lambda im, q: "yes"), n=8, heldout=False)
    text = format_table(json.loads(json.dumps(to_jsonable(vqa))))
    assert "by type" in text and "position" in text and "held-out" not in text
