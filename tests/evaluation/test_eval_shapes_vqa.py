"""The understanding benchmark, checked with fake answerers whose right score is known."""

from __future__ import annotations

import pytest
from eval_fakes import FakePipe, image_key

from cheers.errors import CheersError
from cheers.evaluation import evaluate_understanding
from cheers.shapes import benchmark_questions, heldout_questions

N, N_HELD = 24, 16


def gold_table(seed: int) -> dict[tuple[str, bytes], str]:
    """(question, image pixels) → gold reply, for both question sets."""
    records = benchmark_questions(seed, N) + heldout_questions(seed, N_HELD)
    table = {(r.question.text, image_key(r.image)): r.question.answer for r in records}
    return table


def test_gold_answers_score_one():
    table = gold_table(1)
    pipe = FakePipe(answer=lambda im, q: table[(q, image_key(im))])
    r = evaluate_understanding(pipe, seed=1, n=N, n_heldout=N_HELD, batch_size=5)
    assert r["scores"]["overall"] == 1.0
    kinds = {f"{t}{mc}" for t in ("color", "shape", "count", "position") for mc in ("", "_mc")}
    assert set(r["scores"]) == kinds | {"overall"}
    assert all(v == 1.0 for v in r["scores"].values())
    assert r["by_type"] == dict.fromkeys(["color", "shape", "count", "position"], 1.0)
    assert r["by_form"] == {"multiple_choice": 1.0, "open": 1.0}
    assert r["heldout"]["scores"]["overall"] == 1.0
    assert len(r["items"]) == N + N_HELD
    assert sum(c["total"] for c in r["counts"].values()) == N


def test_answers_are_matched_ignoring_case_and_punctuation():
    table = gold_table(1)
    pipe = FakePipe(answer=lambda im, q: f"  {table[(q, image_key(im))].upper()}.")
    r = evaluate_understanding(pipe, seed=1, n=N, n_heldout=N_HELD)
    assert r["scores"]["overall"] == r["heldout"]["scores"]["overall"] == 1.0


def test_constant_answer_scores_its_share_of_the_gold_answers():
    pipe = FakePipe(answer=lambda im, q: "Yes")
    r = evaluate_understanding(pipe, seed=2, n=N, n_heldout=N_HELD)
    golds = [rec.question.answer for rec in benchmark_questions(2, N)]
    held = [rec.question.answer for rec in heldout_questions(2, N_HELD)]
    assert r["scores"]["overall"] == pytest.approx(golds.count("yes") / N)
    assert r["heldout"]["scores"]["overall"] == pytest.approx(held.count("yes") / N_HELD)
    # Only open position questions can be answered "yes".
    assert r["scores"]["color"] == r["scores"]["position_mc"] == 0.0
    assert 0.0 < r["scores"]["position"] < 1.0


def test_greedy_short_answers_and_batching():
    pipe = FakePipe(answer=lambda im, q: "no")
    r = evaluate_understanding(pipe, n=10, batch_size=4, heldout=False, max_new_tokens=3)
    assert [len(c["questions"]) for c in pipe.calls] == [4, 4, 2]
    assert all(c["temperature"] == 0.0 and c["max_new_tokens"] == 3 for c in pipe.calls)
    assert r["heldout"] is None
    assert [s.answer for s in r["samples"]] == ["no"] * 10


def test_same_seed_same_questions():
    runs = [
        evaluate_understanding(FakePipe(answer=lambda im, q: "a"), seed=s, n=8, heldout=False)
        for s in (4, 4, 5)
    ]
    assert runs[0]["items"] == runs[1]["items"]
    assert [i["question"] for i in runs[0]["items"]] != [i["question"] for i in runs[2]["items"]]


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"batch_size": 0}, {"max_new_tokens": 0}])
def test_bad_settings(kwargs):
    with pytest.raises(CheersError):
        evaluate_understanding(FakePipe(answer=lambda im, q: "x"), **kwargs)
