"""What one ``cheers eval BENCHMARK`` subcommand is: its flags, its benchmark, its output.

Each benchmark module ends with an :class:`EvalCommand`; :mod:`cheers.evaluation.cli` lists
them and runs every one the same way: build the benchmark from the flags (bad input fails
here), check ``--out``, load the model, :func:`~cheers.evaluation.benchmark.run_benchmark`,
then ``finish`` (write and print the outputs).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cheers._files import output_folder
from cheers.errors import CheersError
from cheers.evaluation.benchmark import Benchmark
from cheers.evaluation.report import GRID_NAME, REPORT_NAME, format_table, write_report

#: Suffixes that name a file, not a folder: an ``--out`` ending in one is not made a folder.
_FILE_SUFFIXES = (".json", ".jsonl", ".png", ".jpg", ".jpeg", ".txt")


@dataclass(frozen=True)
class OutTarget:
    """Where a command writes: its folder and, for reports, the report and grid files."""

    folder: Path
    report: Path
    grid: Path

    @property
    def partial(self) -> Path:
        """The folder of the run's journal, beside the report, until the report is written."""
        return self.report.with_name(f".{self.report.stem}.partial")


@dataclass(frozen=True)
class EvalCommand:
    """One ``cheers eval`` subcommand.

    ``build(args)`` checks the flags, reads the benchmark's input files and returns the
    benchmark (no model is loaded yet); ``target(out)`` checks ``--out`` before anything runs;
    ``finish(result, target, args)`` writes the outputs and prints their paths. ``journal``:
    keep every judged batch on disk (:mod:`~cheers.evaluation.journal`) so that an interrupted
    run resumes: for benchmarks that write their outputs only at the end.
    """

    name: str
    help: str
    add_flags: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Benchmark[Any, Any, Any]]
    target: Callable[[str], OutTarget]
    finish: Callable[[dict[str, Any], OutTarget, argparse.Namespace], None]
    journal: bool = False


def report_target(out: str) -> OutTarget:
    """``--out`` of a report: a folder (``report.json``, ``grid.png`` in it) or the report's
    ``.json`` file name (the grid beside it: same name, ``.png``).

    Checked before the benchmark runs, so a bad ``--out`` costs nothing.

    Raises:
        CheersError: when the folder cannot be made or written, or a file name is a folder.
    """
    path = Path(out)
    if path.suffix.lower() == ".json":
        if path.is_dir():
            raise CheersError(f"--out {out} is a folder; pass the folder itself or a new file name")
        folder = output_folder(path.parent, f"--out {out}")
        target = OutTarget(folder, path, path.with_suffix(".png"))
    elif path.suffix.lower() in _FILE_SUFFIXES:
        raise CheersError(
            f"--out {out} looks like a file name; pass a folder or a report name ending in .json"
        )
    else:
        folder = output_folder(path, f"--out {out}")
        target = OutTarget(folder, folder / REPORT_NAME, folder / GRID_NAME)
    for file in (target.report, target.grid):
        if file.is_dir():
            raise CheersError(f"--out {out}: {file} is a folder in the way; remove it")
    return target


def folder_target(out: str) -> OutTarget:
    """``--out`` of an export: the folder an external scorer reads, created and writable.

    Raises:
        CheersError: when ``out`` names a file (``.json``, ``.png``, …) or cannot be written.
    """
    path = Path(out)
    if path.suffix.lower() in _FILE_SUFFIXES:
        raise CheersError(
            f"--out {out} looks like a file name, but the scorer reads a folder; pass a folder"
        )
    folder = output_folder(path, f"--out {out}")
    return OutTarget(folder, folder / REPORT_NAME, folder / GRID_NAME)


def finish_report(result: dict[str, Any], target: OutTarget, args: argparse.Namespace) -> None:
    """Write the report and its grid, print the score table and then the two paths."""
    report, grid = write_report(
        result,
        target.folder,
        max_cells=args.grid_cells,
        report_name=target.report.name,
        grid_name=target.grid.name,
    )
    print(format_table(result))
    print(report)
    if grid is not None:
        print(grid)


__all__ = ["EvalCommand", "OutTarget", "finish_report", "folder_target", "report_target"]
