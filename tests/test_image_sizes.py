"""Images of any size and aspect ratio: generation and editing at height × width."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cheers.errors import CheersError
from cheers.layouts import merge_tokens, tokens_to_feature_map, unmerge_tokens
from cheers.loading import default_model_path
from cheers.pipeline import CheersPipeline
from cheers.pipeline.arguments import check_image_size, parse_size

FAST = {"num_inference_steps": 3, "generator": 0}


@pytest.fixture(scope="module")
def pipe() -> CheersPipeline:
    return CheersPipeline.from_pretrained(default_model_path())


def test_the_native_size_asked_for_is_the_default(pipe):
    native = pipe.resolution
    default = pipe("a red circle", output_type="pt", **FAST).images
    asked = pipe("a red circle", output_type="pt", height=native, width=native, **FAST).images
    assert torch.equal(default, asked)


@pytest.mark.parametrize(("height", "width"), [(48, 80), (80, 48), (96, 96)])
def test_text_to_image_makes_the_size_asked_for(pipe, height, width):
    out = pipe("a blue square", height=height, width=width, **FAST)
    assert out.images[0].size == (width, height)
    stride = pipe.model.config.image_stride
    assert tuple(out.latents.shape[-2:]) == (height // stride, width // stride)


def test_edit_and_draw_make_the_size_asked_for(pipe):
    source = Image.new("RGB", (100, 60), (200, 30, 30))
    out = pipe.edit(source, "make it blue", height=80, width=48, num_inference_steps=4)
    assert out.images[0].size == (48, 80)
    from cheers.pipeline import DrawRequest

    drawn = pipe.draw(
        [DrawRequest([{"role": "user", "content": "a green triangle"}], seed=1)],
        num_inference_steps=3,
        height=32,
        width=64,
    )
    assert drawn.images[0].size == (64, 32)


def test_latents_must_have_the_grid_of_the_size(pipe):
    stride = pipe.model.config.image_stride
    good = torch.randn(1, pipe.model.config.latent_channels, 48 // stride, 80 // stride)
    out = pipe("x", height=48, width=80, latents=good, num_inference_steps=2, output_type="pt")
    assert out.images.shape[-2:] == (48, 80)
    with pytest.raises(CheersError, match="grid rows × grid columns"):
        pipe("x", height=48, width=80, latents=good.transpose(-1, -2), num_inference_steps=2)


@pytest.mark.parametrize(
    ("height", "width", "message"),
    [
        (50, None, r"height 50 .* multiple of 16 px .* nearest are 48 or 64"),
        (None, 0, r"width 0 .* from 16 to 256"),
        (None, 10_000, r"width 10000 .* nearest are 256"),
        (64.0, None, "whole number of pixels"),
        (True, None, "whole number of pixels"),
    ],
)
def test_bad_sizes_are_refused_before_the_model_runs(pipe, height, width, message):
    with pytest.raises(CheersError, match=message):
        pipe("a red circle", height=height, width=width, **FAST)


def test_size_strings_read_width_first():
    assert parse_size("512x384") == (384, 512)
    assert parse_size("80X48") == (48, 80)
    for bad in ("512", "ax3", "512x384x2", "", None, "-5x4"):
        with pytest.raises(CheersError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def test_the_released_model_takes_multiples_of_32():
    from cheers.config import CheersConfig

    config = CheersConfig.official()
    assert check_image_size(None, None, config) == (512, 512)
    assert check_image_size(384, 640, config) == (384, 640)
    with pytest.raises(CheersError, match="multiple of 32 px"):
        check_image_size(400, None, config)


def test_layouts_unfold_a_non_square_grid_row_major():
    rows, columns = 2, 3
    tokens = torch.arange(rows * columns).float()[None, :, None]  # token r·W + c
    grid = tokens_to_feature_map(tokens, rows)
    assert grid.shape == (1, 1, rows, columns)
    assert [[int(grid[0, 0, r, c]) for c in range(columns)] for r in range(rows)] == [
        [0, 1, 2],
        [3, 4, 5],
    ]
    # A 2×4 grid merges into 1×2 cells; cell (0, 1) holds (0,2), (0,3), (1,2), (1,3).
    x = torch.arange(8).float()[None, :, None]
    merged = merge_tokens(x, 2)
    assert merged.shape == (1, 2, 4)
    assert merged[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert torch.equal(unmerge_tokens(merged, 2), x)


def test_the_cli_makes_the_size_asked_for(tmp_path, capsys):
    from cheers.cli import main

    out = tmp_path / "wide.png"
    code = main(["generate", "a red circle", "--size", "80x48", "--steps", "2", "--seed", "0",
                 "--no-progress", "--out", str(out)])  # fmt: skip
    assert code == 0 and Image.open(out).size == (80, 48)
    tall = tmp_path / "tall.png"
    code = main(["edit", str(out), "-i", "make it blue", "--height", "80", "--width", "48",
                 "--steps", "4", "--seed", "0", "--no-progress", "--out", str(tall)])  # fmt: skip
    assert code == 0 and Image.open(tall).size == (48, 80)
    capsys.readouterr()
    code = main(["generate", "x", "--size", "50x48", "--steps", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "width 50" in err and "Traceback" not in err
    code = main(["generate", "x", "--size", "48x48", "--height", "48", "--out", str(out)])
    assert code == 2 and "not both" in capsys.readouterr().err
