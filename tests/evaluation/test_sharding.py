"""Batch work under torchrun: the deal of batches to processes (by hand), and two gloo processes
on the embedded model giving one process's outputs, resuming their own items, one report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cheers.distributed import Shard
from cheers.errors import CheersError

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the deal, by hand
def test_batches_are_dealt_whole_round_robin():
    items = list("abcdefg")  # batches of 2: ab cd ef g
    assert Shard(0, 2).batches(items, 2) == [[(0, "a"), (1, "b")], [(4, "e"), (5, "f")]]
    assert Shard(1, 2).batches(items, 2) == [[(2, "c"), (3, "d")], [(6, "g")]]
    assert Shard(0, 1).batches(items, 3) == [
        [(0, "a"), (1, "b"), (2, "c")], [(3, "d"), (4, "e"), (5, "f")], [(6, "g")]
    ]  # fmt: skip
    # Three processes, one batch each and rank 2 nothing but the last item.
    assert [len(Shard(r, 3).batches(items, 3)) for r in range(3)] == [1, 1, 1]
    assert Shard(2, 3).batches(items, 3) == [[(6, "g")]]
    assert Shard(3, 4).batches(items, 3) == []


def test_a_rank_skips_only_its_own_written_items_and_reforms_its_batches():
    items = list("abcdefgh")
    written = {1, 2, 4}  # b c e; c is rank 1's: rank 0 neither skips nor runs it
    assert Shard(0, 2).batches(items, 2, written.__contains__) == [[(0, "a"), (5, "f")]]
    assert Shard(1, 2).batches(items, 2, written.__contains__) == [
        [(3, "d"), (6, "g")], [(7, "h")]
    ]  # fmt: skip


@pytest.mark.parametrize(("rank", "world"), [(2, 2), (-1, 2), (0, 0)])
def test_an_impossible_place_is_refused(rank, world):
    with pytest.raises(CheersError, match="not a valid place"):
        Shard(rank, world)


def test_each_rank_gets_its_own_gpu():
    assert Shard(1, 4, local_rank=1).device("cuda") == "cuda:1"
    assert Shard(1, 4, local_rank=1).device("cpu") == "cpu"
    assert Shard(0, 4, local_rank=0).device("cuda:3") == "cuda:3"  # asked for: kept
    assert Shard().device("cuda") == "cuda"  # one process: as asked


def test_torchrun_variables_must_be_numbers(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(CheersError, match="whole numbers"):
        Shard.from_env()


# ---------------------------------------------------------------- two gloo processes vs one
def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    env.pop("WORLD_SIZE", None)
    return env


def _cheers(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    # After "--" torchrun passes everything on (else its parser takes "--n" for an
    # abbreviation of its own flags); torchrun removes it.
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        if processes > 1
        else []
    )
    cmd = [sys.executable, *launcher, "-m", "cheers", *(["--"] if launcher else []), *args]
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            out[path.name] = np.asarray(image.convert("RGB"))
    return out


def test_two_processes_write_one_process_images_and_resume_their_own(tmp_path):
    prompts = tmp_path / "prompts.txt"
    lines = ["a red circle", "", "a blue square", "a green triangle", "two yellow circles",
             "a purple square above a red circle", "an orange triangle"]  # fmt: skip
    prompts.write_text("\n".join(lines) + "\n")
    common = ["generate", "--prompts-file", str(prompts), "--num-images", "2", "--steps", "3",
              "--batch-size", "2", "--seed", "5", "--no-progress"]  # fmt: skip
    _cheers([*common, "--out", str(tmp_path / "one")])
    two = _cheers([*common, "--out", str(tmp_path / "two")], processes=2)
    one_images, two_images = _pixels(tmp_path / "one"), _pixels(tmp_path / "two")
    # Keyed by line number (line 2 is blank), two images each.
    expected = [f"{line:05d}-{k:02d}.png" for line in (1, 3, 4, 5, 6, 7) for k in (0, 1)]
    assert list(one_images) == expected == list(two_images)
    for name in expected:
        assert np.array_equal(one_images[name], two_images[name]), name
    # The images differ from each other: each has its own seed.
    assert not np.array_equal(one_images[expected[0]], one_images[expected[1]])
    assert two.stdout.strip() == str(tmp_path / "two")  # printed once, by rank 0
    settings = json.loads((tmp_path / "two" / "cheers_settings.json").read_text())
    assert (settings["benchmark"], settings["seed"], settings["steps"]) == ("generate", 5, 3)

    # Remove an image of a prompt of each process (batches: [1 3] [4 5] [6 7] → ranks 0 1 0),
    # and run again: only those two prompts are drawn again, by their own processes.
    kept = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "two").glob("*.png")}
    for name in ("00003-01.png", "00005-00.png"):
        (tmp_path / "two" / name).unlink()
    again = _cheers([*common, "--out", str(tmp_path / "two")], processes=2)
    assert "2 prompt(s) written, 4 already there" in again.stderr
    resumed = _pixels(tmp_path / "two")
    assert list(resumed) == expected
    redrawn = {"00003-00.png", "00003-01.png", "00005-00.png", "00005-01.png"}
    for path in (tmp_path / "two").glob("*.png"):
        assert (path.name in redrawn) == (path.stat().st_mtime_ns != kept.get(path.name))
    for name in expected:
        # A redrawn prompt runs alone now, not beside its first batch-mate: its own seeds give
        # the same image up to the float rounding of another padding (one level of 255).
        diff = np.abs(one_images[name].astype(int) - resumed[name].astype(int)).max()
        assert diff <= (1 if name in redrawn else 0), (name, diff)


def test_two_processes_gather_one_report_equal_to_one_process(tmp_path):
    common = ["eval", "shapes-gen", "--n", "1", "--n-heldout", "1", "--images-per-prompt", "2",
              "--steps", "3", "--batch-size", "4", "--no-progress"]  # fmt: skip
    _cheers([*common, "--out", str(tmp_path / "one")])
    _cheers([*common, "--out", str(tmp_path / "two")], processes=2)
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert (one["processes"], two["processes"]) == (1, 2)
    # 6 + 2 prompts in batches of 2 prompts: both processes ran some.
    assert len(two["items"]) == 8
    for key in ("settings", "scores", "counts", "heldout", "items"):
        assert two[key] == one[key], key
    assert (tmp_path / "two" / "grid.png").is_file()
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["grid.png", "report.json"]
