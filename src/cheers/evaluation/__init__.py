"""CPU benchmarks of the Shapes world: generation, understanding and editing.

    >>> from cheers.evaluation import evaluate_generation, write_report, format_table
    >>> result = evaluate_generation(pipe, n_per_category=10)      # doctest: +SKIP
    >>> print(format_table(result))                                # doctest: +SKIP
    >>> write_report(result, "runs/gen")                           # doctest: +SKIP

Each benchmark is a :class:`~cheers.evaluation.benchmark.Benchmark` (items, run on a batch,
judge, aggregate) run by the one :func:`~cheers.evaluation.benchmark.run_benchmark`; it asks of
the pipeline only what :mod:`.protocol` lists. Each ``evaluate_*`` function builds one and runs
it on a :class:`~cheers.pipeline.CheersPipeline`, returning a dict of scores, per-item records,
timings and judged samples; :mod:`.report` writes it as JSON and a PNG grid; :mod:`.geneval`
writes GenEval's and DPG-Bench's folders; :mod:`.cli` is the ``cheers eval`` command.
"""

from __future__ import annotations

from cheers.evaluation.benchmark import Benchmark, Judged, Timings, run_benchmark
from cheers.evaluation.cli import add_eval_flags, add_eval_parser, run_eval
from cheers.evaluation.common import EvalSample, to_canvas
from cheers.evaluation.report import (
    format_table,
    make_grid,
    read_report,
    save_grid,
    select_samples,
    to_jsonable,
    write_json,
    write_report,
)
from cheers.evaluation.shapes_edit import ShapesEdit, evaluate_editing
from cheers.evaluation.shapes_gen import ShapesGen, evaluate_generation
from cheers.evaluation.shapes_vqa import ShapesVQA, evaluate_understanding

__all__ = [
    "Benchmark",
    "EvalSample",
    "Judged",
    "ShapesEdit",
    "ShapesGen",
    "ShapesVQA",
    "Timings",
    "add_eval_flags",
    "add_eval_parser",
    "evaluate_editing",
    "evaluate_generation",
    "evaluate_understanding",
    "format_table",
    "make_grid",
    "read_report",
    "run_benchmark",
    "run_eval",
    "save_grid",
    "select_samples",
    "to_canvas",
    "to_jsonable",
    "write_json",
    "write_report",
]
