"""MMBench-style understanding benchmark of the Shapes world.

A fixed, seeded set of questions (:func:`cheers.shapes.benchmark_questions`: colour, shape,
count and position questions, open and multiple-choice) about rendered scenes is answered
greedily; answers are scored by exact match (:func:`cheers.shapes.score_answer`: case and
surrounding punctuation ignored). Accuracy is reported per question kind (``color``,
``color_mc``, …), per type (open and multiple-choice together), per form and overall (over
questions). Questions about scenes holding a held-out composition
(:func:`cheers.shapes.heldout_questions`) are scored separately.
"""

from __future__ import annotations

import time
from typing import Any

from cheers.evaluation.common import (
    EvalSample,
    accuracy_counts,
    batches,
    check_positive,
    check_seed,
    progress_bar,
    rate,
)
from cheers.shapes import QUESTION_TYPES, score_answer, score_questions
from cheers.shapes.dataset import QuestionRecord, benchmark_questions, heldout_questions
from cheers.shapes.render import DEFAULT_CANVAS

TASK = "shapes-vqa"
#: Questions: a multiple of 8 keeps the 4 types × 2 forms balanced.
DEFAULT_N = 200
#: Answers are one word (or a letter); a few tokens leave room for a trailing period.
DEFAULT_MAX_NEW_TOKENS = 8
DEFAULT_BATCH_SIZE = 16


def evaluate_understanding(
    pipe: Any,
    *,
    seed: int = 0,
    n: int = DEFAULT_N,
    batch_size: int = DEFAULT_BATCH_SIZE,
    heldout: bool = True,
    n_heldout: int | None = None,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    canvas: int = DEFAULT_CANVAS,
    progress: bool = False,
) -> dict[str, Any]:
    """Score ``pipe``'s answers to the Shapes questions (greedy decoding, exact match).

    Args:
        pipe: a :class:`~cheers.pipeline.CheersPipeline` (or an object with the same
            ``understand``).
        seed: picks the question set; the same seed gives the same questions and images.
        n: questions; question ``i`` has type ``i % 4`` and is multiple-choice when
            ``(i // 4)`` is odd.
        batch_size: questions per pipeline call (greedy answers do not depend on it, up to
            float rounding of padded batches).
        heldout: also score questions about held-out compositions, reported under
            ``"heldout"``.
        n_heldout: held-out questions (default ``n``).
        max_new_tokens: the longest answer, in tokens.
        canvas: side of the rendered question images (the pipeline resizes them to its own
            resolution, as it does for any input image).
        progress: show a progress bar on stderr.

    Returns:
        A JSON-ready dict (except ``"samples"``) with ``task``, ``settings``, ``scores`` (per
        question kind as :func:`cheers.shapes.score_questions` gives them, and ``overall``),
        ``by_type`` (open and multiple-choice together), ``by_form`` (``open``,
        ``multiple_choice``), ``counts``, ``heldout`` (same layout, or ``None``), ``items``
        (question, gold, answer, verdict), ``timings`` and ``samples``.

    Raises:
        CheersError: on a bad setting.
    """
    check_seed(seed)
    check_positive(n, "n")
    check_positive(batch_size, "batch_size")
    check_positive(max_new_tokens, "max_new_tokens")
    n_heldout = n if n_heldout is None else n_heldout
    if heldout:
        check_positive(n_heldout, "n_heldout")

    jobs: list[tuple[QuestionRecord, bool]] = [
        (r, False) for r in benchmark_questions(seed, n, canvas)
    ]
    if heldout:
        jobs += [(r, True) for r in heldout_questions(seed, n_heldout, canvas)]

    items: list[dict[str, Any]] = []
    samples: list[EvalSample] = []
    start = time.perf_counter()
    bar = progress_bar(len(jobs), "shapes-vqa", progress)
    try:
        for chunk in batches(jobs, batch_size):
            answers = pipe.understand(
                [r.image for r, _ in chunk],
                [r.question.text for r, _ in chunk],
                max_new_tokens=max_new_tokens,
                temperature=0.0,
            )
            for (record, is_heldout), answer in zip(chunk, answers, strict=True):
                q = record.question
                ok = score_answer(answer, q.answer)
                group = f"heldout/{q.kind}" if is_heldout else q.kind
                samples.append(
                    EvalSample(
                        record.image,
                        q.text,
                        ok,
                        group,
                        len(items),
                        answer=answer,
                        gold=q.answer,
                    )
                )
                items.append(
                    {
                        "question": q.text,
                        "kind": q.kind,
                        "qtype": q.qtype,
                        "multiple_choice": q.multiple_choice,
                        "heldout": is_heldout,
                        "gold": q.answer,
                        "answer": answer,
                        "correct": ok,
                        "scene": record.scene.to_dict(),
                    }
                )
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    total_s = time.perf_counter() - start

    # Items are in job order, so a split by the held-out flag keeps records and items aligned.
    def split(held: bool) -> tuple[list[dict[str, Any]], list[QuestionRecord]]:
        pairs = [(it, r) for it, (r, h) in zip(items, jobs, strict=True) if h is held]
        return [it for it, _ in pairs], [r for _, r in pairs]

    return {
        "task": TASK,
        "settings": {
            "seed": seed,
            "n": n,
            "n_heldout": n_heldout if heldout else 0,
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "temperature": 0.0,
            "canvas": canvas,
        },
        **_score(*split(False)),
        "heldout": _score(*split(True)) if heldout else None,
        "items": items,
        "timings": {
            "total_s": total_s,
            "questions": len(items),
            "s_per_question": total_s / len(items) if items else 0.0,
        },
        "samples": samples,
    }


def _score(items: list[dict[str, Any]], records: list[QuestionRecord]) -> dict[str, Any]:
    """Scores of one question set; ``records`` and ``items`` are in the same order."""
    scores = score_questions(
        (r.question, it["answer"]) for r, it in zip(records, items, strict=True)
    )
    counts = accuracy_counts((it["kind"], it["correct"]) for it in items)
    types = accuracy_counts((it["qtype"], it["correct"]) for it in items)
    forms = accuracy_counts(
        ("multiple_choice" if it["multiple_choice"] else "open", it["correct"]) for it in items
    )
    return {
        "scores": scores,
        "counts": dict(sorted(counts.items())),
        "by_type": {
            t: rate(types[t]["correct"], types[t]["total"]) for t in QUESTION_TYPES if t in types
        },
        "by_form": {f: rate(c["correct"], c["total"]) for f, c in sorted(forms.items())},
    }
