"""The one runner and the `--out` checks every `cheers eval` benchmark goes through."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from eval_fakes import FakePipe, oracle_drawer
from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import Judged, Timings, run_benchmark
from cheers.evaluation.cli import build_parser, run_eval


@dataclass
class Squares:
    """A made-up benchmark: items are numbers, the 'pipe' squares them, a square is right
    when it is even. Its scores are known by hand."""

    numbers: list[int]
    batch_size: int = 2
    name: str = "squares"
    calls: list[list[int]] = field(default_factory=list, repr=False)

    def items(self) -> list[int]:
        return self.numbers

    def done(self, item: int) -> bool:
        return item < 0  # negative numbers stand for items written by an earlier run

    def run(self, pipe: Any, batch: list[int]) -> list[int]:
        self.calls.append(list(batch))
        return pipe(batch)

    def judge(self, item: int, output: int, unit: int) -> Judged:
        return Judged({"n": item, "square": output, "unit": unit, "correct": output % 2 == 0})

    def settings(self, pipe: Any) -> dict[str, Any]:
        return {"batch_size": self.batch_size}

    def aggregate(self, items, records, timings: Timings) -> dict[str, Any]:
        assert isinstance(timings, Timings) and timings.total_s >= timings.run_s >= 0
        right = sum(r["correct"] for r in records)
        return {"scores": {"overall": right / len(records)}, "items": records}


def test_runner_batches_judges_in_order_and_aggregates():
    bench = Squares([1, 2, 3, 4, 5])
    result = run_benchmark(bench, lambda batch: [n * n for n in batch])
    assert bench.calls == [[1, 2], [3, 4], [5]]
    assert [r["square"] for r in result["items"]] == [1, 4, 9, 16, 25]
    assert [r["unit"] for r in result["items"]] == [0, 1, 2, 3, 4]
    assert result["scores"] == {"overall": 2 / 5}
    assert (result["task"], result["settings"], result["samples"]) == (
        "squares", {"batch_size": 2}, []
    )  # fmt: skip


def test_runner_refuses_a_short_batch():
    with pytest.raises(CheersError, match="returned 1 outputs for 2 items"):
        run_benchmark(Squares([1, 2]), lambda batch: batch[:1])


# ------------------------------------------------------------------------------ --out checks
def _gen(out: str) -> list[str]:
    return ["shapes-gen", "--out", out, "--n", "1", "--images-per-prompt", "1", "--steps", "2",
            "--no-heldout", "--no-progress"]  # fmt: skip


def test_out_ending_in_json_is_the_report_file(tmp_path, capsys):
    out = tmp_path / "x" / "report.json"
    pipe = FakePipe(64, draw=oracle_drawer(64))
    assert run_eval(build_parser().parse_args(_gen(str(out))), pipe=pipe) == 0
    assert out.is_file() and not out.is_dir()
    assert json.loads(out.read_text())["task"] == "shapes-gen"
    with Image.open(tmp_path / "x" / "report.png") as grid:
        assert grid.format == "PNG"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["report.json", "report.png"]
    assert capsys.readouterr().out.splitlines()[-2:] == [str(out), str(tmp_path / "x/report.png")]


@pytest.mark.parametrize(
    ("make", "out", "match"),
    [
        (lambda t: (t / "file").write_text("x"), "file/runs", "a file is in the way"),
        (lambda t: (t / "taken.json").mkdir(), "taken.json", "is a folder"),
        (lambda t: (t / "o" / "report.json").mkdir(parents=True), "o", "folder in the way"),
        (lambda t: None, "pic.png", "looks like a file name"),
    ],
    ids=["file-in-the-way", "json-is-a-folder", "report-json-is-a-folder", "png-name"],
)
def test_bad_out_fails_before_the_benchmark_runs(tmp_path, make, out, match):
    make(tmp_path)
    pipe = FakePipe(64, draw=oracle_drawer(64))
    args = build_parser().parse_args(_gen(str(tmp_path / out)))
    with pytest.raises(CheersError, match=match):
        run_eval(args, pipe=pipe)
    assert pipe.calls == []


def test_export_out_must_be_a_folder(tmp_path):
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"tag": "single_object", "prompt": "a photo of a cat"}\n')
    pipe = FakePipe(64, draw=oracle_drawer(64))
    args = build_parser().parse_args(
        ["geneval", "--metadata", str(meta), "--out", str(tmp_path / "g.json"), "--no-progress"]
    )
    with pytest.raises(CheersError, match="the scorer reads a folder"):
        run_eval(args, pipe=pipe)
    assert pipe.calls == [] and not (tmp_path / "g.json").exists()


# ------------------------------------------------------------------------------- resumption
def test_a_journal_resumes_an_interrupted_run(tmp_path):
    from cheers.distributed import Shard
    from cheers.evaluation.journal import Journal

    def failing_at(n: int):
        calls = []

        def pipe(batch):
            calls.append(list(batch))
            if len(calls) == n:
                raise KeyboardInterrupt  # the run is stopped during its n-th batch
            return [x * x for x in batch]

        return pipe, calls

    bench = Squares([1, 2, 3, 4, 5])
    pipe, calls = failing_at(2)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(bench, pipe, journal=Journal(tmp_path, bench, Shard()))
    # The batch being written when the run stopped is cut off and runs again.
    journal = Journal(tmp_path, bench, Shard())
    with journal.path.open("ab") as f:
        f.write((1000).to_bytes(8, "little") + b"half a batch")
    pipe, calls = failing_at(0)
    resumed = run_benchmark(bench, pipe, journal=Journal(tmp_path, bench, Shard()))
    assert calls == [[3, 4], [5]]  # the first batch came from the journal
    whole = run_benchmark(Squares([1, 2, 3, 4, 5]), lambda batch: [n * n for n in batch])
    assert resumed["items"] == whole["items"] and resumed["scores"] == whole["scores"]
    # Other settings (or another number of processes) never read this journal.
    other = Squares([1, 2, 3, 4, 5], batch_size=3)
    assert Journal(tmp_path, other, Shard()).load() == {}
    assert Journal(tmp_path, bench, Shard(0, 2)).load() == {}


def test_an_interrupted_shapes_run_resumes_and_cleans_up(tmp_path):
    out = tmp_path / "gen"
    args = build_parser().parse_args(
        [
            "shapes-gen",
            "--out",
            str(out),
            "--n",
            "1",
            "--images-per-prompt",
            "1",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--no-heldout",
            "--no-progress",
        ]
    )
    draw = oracle_drawer(64)
    stopped = FakePipe(64, draw=draw)
    original = stopped.text_to_image

    def stop_at_third(*a, **kw):
        if len(stopped.calls) == 2:
            raise KeyboardInterrupt
        return original(*a, **kw)

    stopped.text_to_image = stop_at_third
    with pytest.raises(KeyboardInterrupt):
        run_eval(args, pipe=stopped)
    assert (out / ".report.partial").is_dir() and not (out / "report.json").exists()
    resumed = FakePipe(64, draw=draw)
    assert run_eval(args, pipe=resumed) == 0
    assert len(resumed.calls) == 1  # 6 prompts in batches of 2: the last batch only
    clean = FakePipe(64, draw=draw)
    assert run_eval(build_parser().parse_args([*_gen(str(tmp_path / "clean"))[:-1],
                                               "--batch-size", "2", "--no-progress"]),
                    pipe=clean) == 0  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["items"] == json.loads((tmp_path / "clean" / "report.json").read_text())["items"]
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "report.json"]
