"""``cheers eval``: argument parsing, wiring, and end-to-end runs on a real small model."""

from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from cheers.errors import CheersError
from cheers.evaluation import add_eval_parser, run_eval
from cheers.evaluation.cli import build_parser, main

FAST_GEN = ["--n", "1", "--images-per-prompt", "1", "--steps", "2", "--no-guidance"]
COMMON = ["--no-progress", "--device", "cpu", "--grid-cells", "8"]


def _host_parser() -> argparse.ArgumentParser:
    """A parser like the main ``cheers`` one, with ``eval`` registered on it."""
    parser = argparse.ArgumentParser(prog="cheers")
    sub = parser.add_subparsers(dest="command")
    add_eval_parser(sub)
    return parser


def test_parser_wiring_and_defaults():
    args = _host_parser().parse_args(["eval", "shapes-gen", "--out", "o"])
    assert args.command == "eval" and args.eval_benchmark == "shapes-gen"
    assert args.func is run_eval
    assert (args.model, args.seed, args.n, args.images_per_prompt) == (None, 0, 10, 4)
    assert args.steps == 20 and args.guidance == 9.5 and not args.no_heldout
    assert not args.no_dummy_image and not args.no_guidance
    vqa = _host_parser().parse_args(["eval", "shapes-vqa", "--out", "o", "--n", "8"])
    assert vqa.n == 8 and vqa.max_new_tokens == 8 and not hasattr(vqa, "steps")
    edit = _host_parser().parse_args(["eval", "shapes-edit", "--out", "o", "--strength", "0.5"])
    assert edit.strength == 0.5 and edit.n == 60


def test_parser_rejects_missing_pieces(capsys):
    with pytest.raises(SystemExit):
        _host_parser().parse_args(["eval"])  # no benchmark
    with pytest.raises(SystemExit):
        _host_parser().parse_args(["eval", "shapes-gen"])  # no --out
    with pytest.raises(SystemExit):
        _host_parser().parse_args(
            ["eval", "shapes-gen", "--out", "o", "--guidance", "2", "--no-guidance"]
        )


@pytest.mark.parametrize(
    "flags",
    [
        ["shapes-gen", "--n", "0"],
        ["shapes-gen", "--steps", "1"],
        ["shapes-vqa", "--seed", "-1"],
        ["shapes-edit", "--steps", "2"],
        ["shapes-edit", "--strength", "1.5"],
        ["shapes-gen", "--canvas", "50"],
    ],
)
def test_bad_flags_fail_before_loading(tmp_path, flags):
    args = build_parser().parse_args([*flags, "--out", str(tmp_path), "--model", "/nonexistent"])
    with pytest.raises(CheersError):
        run_eval(args)


def test_missing_default_model_is_a_clean_error(tmp_path, monkeypatch, capsys):
    import cheers.loading

    monkeypatch.setattr(cheers.loading, "DEFAULT_MODEL_DIR", tmp_path / "no-embedded-model")
    assert main(["shapes-vqa", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "error: no model given" in capsys.readouterr().err


def _outputs(tmp_path, capsys) -> tuple[dict, str]:
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == [str(tmp_path / "report.json"), str(tmp_path / "grid.png")]
    report = json.loads((tmp_path / "report.json").read_text())
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width > 0
    return report, "\n".join(out)


def test_gen_end_to_end_with_the_default_model(public_model_dir, tmp_path, monkeypatch, capsys):
    import cheers.loading

    # --model left out: the command falls back to the package's default model.
    monkeypatch.setattr(cheers.loading, "DEFAULT_MODEL_DIR", public_model_dir)
    args = build_parser().parse_args(
        [
            "shapes-gen",
            "--out",
            str(tmp_path),
            *FAST_GEN,
            "--no-heldout",
            "--batch-size",
            "6",
            *COMMON,
        ]
    )
    assert run_eval(args) == 0
    report, text = _outputs(tmp_path, capsys)
    assert report["task"] == "shapes-gen"
    assert set(report["scores"]) == {
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
        "overall",
    }
    assert all(0.0 <= v <= 1.0 for v in report["scores"].values())
    assert report["settings"]["resolution"] == 128 and report["settings"]["canvas"] == 64
    assert report["model"]["source"] == str(public_model_dir)
    assert len(report["items"]) == 6 and report["heldout"] is None
    assert "overall" in text
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (6 * 134 + 7 * 6, 182 + 2 * 6)  # 6 tiles in one row


def test_vqa_end_to_end(public_model_dir, tmp_path, capsys):
    argv = ["shapes-vqa", "--model", str(public_model_dir), "--out", str(tmp_path)]
    argv += ["--n", "2", "--n-heldout", "1", "--max-new-tokens", "2", *COMMON]
    assert main(argv) == 0
    report, _ = _outputs(tmp_path, capsys)
    assert report["task"] == "shapes-vqa"
    assert len(report["items"]) == 3
    assert all(isinstance(it["answer"], str) for it in report["items"])
    assert 0.0 <= report["scores"]["overall"] <= 1.0


def test_edit_end_to_end(public_model_dir, tmp_path, capsys):
    argv = ["shapes-edit", "--model", str(public_model_dir), "--out", str(tmp_path)]
    argv += ["--n", "1", "--steps", "3", "--no-guidance", *COMMON]
    assert main(argv) == 0
    report, _ = _outputs(tmp_path, capsys)
    assert report["task"] == "shapes-edit"
    assert report["items"][0]["kind"] == "recolor"
    assert set(report["scores"]) == {"recolor", "overall"}
