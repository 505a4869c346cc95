"""Training splits (JSONL + PNG), held-out rule, determinism and the evaluation sets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shapes_truth import SPEC_HELD_OUT, WORDS, relation

from cheers.shapes import (
    CATEGORIES,
    EDIT_KINDS,
    QUESTION_TYPES,
    benchmark_edits,
    benchmark_prompts,
    benchmark_questions,
    detect,
    heldout_prompts,
    heldout_questions,
    iter_split,
    judge,
    render,
    write_split,
)
from cheers.shapes.dataset import main

IMG = "<im_start><image><im_end>\n"
GEN = "<im_start><image_gen><im_end>"
HELD_OUT_TEXT = ("purple triangle", "orange square")


def _read(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[-1] == ""
    return [json.loads(line) for line in lines[:-1]]


def _task(record: dict) -> str:
    gpt = record["conversations"][1]["value"]
    if "," in record["image"]:
        return "editing"
    return "generation" if gpt == GEN else "understanding"


def test_jsonl_format(tmp_path: Path) -> None:
    path = write_split(tmp_path, "train", 90, seed=1, canvas=32)
    assert path == tmp_path / "train.jsonl"
    records = _read(path)
    assert len(records) == 90
    assert len({r["id"] for r in records}) == 90
    tasks = set()
    for r in records:
        assert list(r) == ["id", "image", "conversations"]
        assert isinstance(r["id"], str)
        conv = r["conversations"]
        assert [c["from"] for c in conv] == ["human", "gpt"]
        assert all(list(c) == ["from", "value"] for c in conv)
        human, gpt = conv[0]["value"], conv[1]["value"]
        images = r["image"].split(", ")
        for rel in images:
            assert not Path(rel).is_absolute() and rel.startswith("images/")
            with Image.open(tmp_path / rel) as im:
                assert im.format == "PNG" and im.mode == "RGB" and im.size == (32, 32)
        task = _task(r)
        tasks.add(task)
        if task == "understanding":
            assert len(images) == 1 and human.startswith(IMG) and human.count("<image>") == 1
            assert gpt.isalpha() and " " not in gpt  # one word (or a letter)
        elif task == "generation":
            assert len(images) == 1 and "<" not in human and gpt == GEN
        else:
            assert len(images) == 2 and human.startswith(IMG) and gpt == GEN
    assert tasks == {"understanding", "generation", "editing"}


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    a = write_split(tmp_path / "a", "train", 40, seed=3, canvas=32)
    b = write_split(tmp_path / "b", "train", 40, seed=3, canvas=32)
    assert a.read_bytes() == b.read_bytes()
    for png in sorted((tmp_path / "a" / "images").iterdir()):
        assert png.read_bytes() == (tmp_path / "b" / "images" / png.name).read_bytes()
    c = write_split(tmp_path / "c", "train", 40, seed=4, canvas=32)
    assert a.read_bytes() != c.read_bytes()
    val = write_split(tmp_path / "a", "val", 40, seed=3, canvas=32)
    texts = [r["conversations"][0]["value"] for r in _read(a)]
    assert texts != [r["conversations"][0]["value"] for r in _read(val)]


def test_held_out_compositions_never_reach_the_train_split(tmp_path: Path) -> None:
    path = write_split(tmp_path, "train", 1000, seed=0, canvas=32)
    records = _read(path)
    n_objects = 0
    for r in records:
        for c in r["conversations"]:
            assert not any(h in c["value"] for h in HELD_OUT_TEXT), c["value"]
        for rel in r["image"].split(", "):
            dets = detect(Image.open(tmp_path / rel))
            n_objects += len(dets)
            assert not any((d.color, d.shape) in SPEC_HELD_OUT for d in dets), rel
    # The rule bites: the split is big enough to have held-out pairs by chance otherwise.
    assert n_objects > 1500


def test_understanding_answers_match_the_detector(tmp_path: Path) -> None:
    records = _read(write_split(tmp_path, "val", 150, seed=2, canvas=64, mix={"understanding": 1}))
    for r in records:
        question = r["conversations"][0]["value"].removeprefix(IMG)
        answer = r["conversations"][1]["value"]
        lines = question.split("\n")
        if len(lines) > 1:  # multiple choice: map the letter back to its option
            options = {ln[0]: ln[3:] for ln in lines[1:]}
            answer = options[answer]
        dets = detect(Image.open(tmp_path / r["image"]))
        q = lines[0]
        if q.startswith("What color is the "):
            shape = q.removeprefix("What color is the ").removesuffix("?")
            (d,) = [d for d in dets if d.shape == shape]
            assert d.color == answer
        elif q.startswith("What shape is the "):
            color = q.removeprefix("What shape is the ").removesuffix(" object?")
            (d,) = [d for d in dets if d.color == color]
            assert d.shape == answer
        elif q.startswith("How many "):
            shape = q.removeprefix("How many ").removesuffix("s are there?")
            assert WORDS[sum(d.shape == shape for d in dets)] == answer
        else:
            words = q.removeprefix("Is the ").removesuffix("?").split()
            rel = " ".join(words[1:-2]).removeprefix("to the ")
            (a,) = [d for d in dets if d.shape == words[0]]
            (b,) = [d for d in dets if d.shape == words[-1]]
            assert ("yes" if relation((a.cx, a.cy), (b.cx, b.cy)) == rel else "no") == answer


def test_mix_selects_tasks_and_is_validated(tmp_path: Path) -> None:
    samples = list(iter_split("train", 30, 0, 32, mix={"generation": 1.0}))
    assert {s.task for s in samples} == {"generation"}
    for s in samples:
        assert judge(s.spec, detect(render(s.scenes[0])))
    with pytest.raises(ValueError):
        write_split(tmp_path, "train", 1, 0, mix={"dreaming": 1.0})
    with pytest.raises(ValueError):
        write_split(tmp_path, "train", 1, 0, mix={"generation": 0.0})
    with pytest.raises(ValueError):
        write_split(tmp_path, "test", 1, 0)


def test_benchmark_prompts_are_fixed_and_in_distribution() -> None:
    prompts = benchmark_prompts(0, 5)
    assert prompts == benchmark_prompts(0, 5)
    assert prompts != benchmark_prompts(1, 5)
    assert [p.category for p in prompts] == [c for c in CATEGORIES for _ in range(5)]
    assert not any(p.mentions() for p in prompts)
    assert not any(h in p.text for p in prompts for h in HELD_OUT_TEXT)


def test_heldout_prompts_name_held_out_pairs() -> None:
    prompts = heldout_prompts(0, 4)
    assert [p.category for p in prompts] == ["colors"] * 4 + ["color_attr"] * 4
    for p in prompts:
        assert any(h in p.text for h in HELD_OUT_TEXT), p.text
    assert {h for p in prompts for h in HELD_OUT_TEXT if h in p.text} == set(HELD_OUT_TEXT)


def test_benchmark_questions_are_balanced_and_correct() -> None:
    records = benchmark_questions(0, 32, canvas=64)
    assert [r.question.qtype for r in records] == list(QUESTION_TYPES) * 8
    assert sum(r.question.multiple_choice for r in records) == 16
    assert [r.question for r in records] == [r.question for r in benchmark_questions(0, 32)]
    for r in records:
        assert r.image.size == (64, 64)
        assert np.array_equal(np.asarray(r.image), np.asarray(render(r.scene)))
        if r.question.qtype == "count":
            dets = detect(r.image)
            assert WORDS[sum(d.shape == r.question.shape for d in dets)] == r.question.word
        assert not any((o.color, o.shape) in SPEC_HELD_OUT for o in r.scene.objects)


def test_heldout_questions_show_held_out_objects() -> None:
    records = heldout_questions(0, 16, canvas=64)
    for r in records:
        dets = detect(r.image)
        assert any((d.color, d.shape) in SPEC_HELD_OUT for d in dets)
        q = r.question
        if q.qtype == "color":
            assert (q.word, q.shape) in SPEC_HELD_OUT
        if q.qtype == "shape":
            assert (q.color, q.word) in SPEC_HELD_OUT


def test_benchmark_edits_cycle_kinds() -> None:
    edits = benchmark_edits(0, 9, canvas=64)
    assert [e.kind for e in edits] == list(EDIT_KINDS) * 3
    for e in edits:
        assert e.judge(detect(render(e.target)))


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path), "--n-train", "12", "--n-val", "5", "--seed", "9"]
    assert main([*args, "--canvas", "32"]) == 0
    assert len(_read(tmp_path / "train.jsonl")) == 12
    assert len(_read(tmp_path / "val.jsonl")) == 5
    assert "train.jsonl" in capsys.readouterr().out
