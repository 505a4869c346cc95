"""Tests of cheers.image: loading, the two preprocessing geometries, and tensor -> PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cheers.errors import CheersError, ImageError
from cheers.image import (
    load_image,
    make_dummy_image,
    preprocess_generation,
    preprocess_understanding,
    to_pil,
    to_pil_list,
)
from parity_fixtures import fixture_dirs, fixture_ids

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DIRS = fixture_dirs()
fixture_params = pytest.mark.parametrize(
    "fixture_dir",
    FIXTURE_DIRS or [pytest.param(None, marks=pytest.mark.skip(reason="no parity fixtures"))],
    ids=fixture_ids(FIXTURE_DIRS) or ["none"],
)


def _rgb(height: int, width: int, value: tuple[int, int, int] = (200, 100, 50)) -> np.ndarray:
    array = np.empty((height, width, 3), dtype=np.uint8)
    array[...] = value
    return array


# -- the fixtures -----------------------------------------------------------------------------


def _load_inputs(fixture_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {
        k: v
        for k, v in load_file(str(fixture_dir / "reference.safetensors")).items()
        if k.startswith("inputs.")
    }


@fixture_params
def test_fixture_understanding_pixels(fixture_dir: Path) -> None:
    inputs = _load_inputs(fixture_dir)
    expected = inputs["inputs.und.pixel_values"][0]
    got = preprocess_understanding(inputs["inputs.und.image_uint8"].numpy(), expected.shape[-1])
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


@fixture_params
def test_fixture_dummy_image_pixels(fixture_dir: Path) -> None:
    inputs = _load_inputs(fixture_dir)
    expected = inputs["inputs.gen.pixel_values"][0]
    dummy = inputs["inputs.gen.dummy_image_uint8"].numpy()
    assert dummy.shape == make_dummy_image().shape
    assert torch.equal(preprocess_understanding(dummy, expected.shape[-1]), expected)


@fixture_params
def test_fixture_png_matches_array(fixture_dir: Path) -> None:
    png = fixture_dir / "und_image.png"
    if not png.is_file():
        pytest.skip("fixture has no und_image.png")
    inputs = _load_inputs(fixture_dir)
    assert np.array_equal(np.asarray(load_image(png)), inputs["inputs.und.image_uint8"].numpy())


# -- understanding geometry -------------------------------------------------------------------


def test_understanding_letterbox_wide() -> None:
    # 75x100 (HxW) at 128: scale 1.28 -> 96x128, 32 rows of padding, 16 on top.
    out = preprocess_understanding(_rgb(75, 100), 128)
    assert out.shape == (3, 128, 128)
    assert out.dtype == torch.float32
    assert torch.all(out[:, :16] == 0)
    assert torch.all(out[:, 112:] == 0)
    inside = out[:, 16:112]
    expected = torch.tensor([200, 100, 50], dtype=torch.float32)[:, None, None] / 255
    assert torch.equal(inside, expected.expand_as(inside))


def test_understanding_letterbox_tall_odd_padding() -> None:
    # 100x77 (HxW): width -> round(77 * 1.28) = round(98.56) = 99, pad 29: left 14, right 15.
    out = preprocess_understanding(_rgb(100, 77), 128)
    nonzero_cols = torch.nonzero(out.sum(dim=(0, 1))).flatten()
    assert nonzero_cols.min().item() == 14
    assert nonzero_cols.max().item() == 14 + 99 - 1


def test_understanding_rounds_half_to_even_like_python() -> None:
    # 5x128 at 64: scale 0.5, height 2.5 -> round() gives 2 (not 3); pad 62, 31 on top.
    out = preprocess_understanding(_rgb(5, 128), 64)
    nonzero_rows = torch.nonzero(out.sum(dim=(0, 2))).flatten().tolist()
    assert nonzero_rows == [31, 32]


def test_understanding_same_size_is_lossless() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = preprocess_understanding(array, 32)
    assert torch.equal(out, torch.from_numpy(array).permute(2, 0, 1).float() / 255)


def test_understanding_extreme_aspect_keeps_one_pixel() -> None:
    out = preprocess_understanding(_rgb(1, 1000), 128)
    assert out.shape == (3, 128, 128)
    assert torch.nonzero(out.sum(dim=(0, 2))).numel() == 1


# -- generation geometry ----------------------------------------------------------------------


def test_generation_centre_crop_wide() -> None:
    # 100x301 at 100: no resize, left = (301 - 100) // 2 = 100, so columns 100..199 survive.
    array = np.broadcast_to((np.arange(301) % 256).astype(np.uint8)[None, :, None], (100, 301, 3))
    out = preprocess_generation(np.ascontiguousarray(array), 100)
    assert out.shape == (3, 100, 100)
    expected = (torch.arange(100, 200, dtype=torch.float32) / 255).expand(3, 100, 100)
    assert torch.equal(out, expected)


def test_generation_centre_crop_tall() -> None:
    # 203x100 at 100: top = (203 - 100) // 2 = 51.
    array = np.broadcast_to((np.arange(203) % 256).astype(np.uint8)[:, None, None], (203, 100, 3))
    out = preprocess_generation(np.ascontiguousarray(array), 100)
    expected = (torch.arange(51, 151, dtype=torch.float32) / 255)[None, :, None].expand(3, 100, 100)
    assert torch.equal(out, expected)


def test_generation_resizes_shorter_side() -> None:
    # 60x90 at 30: shorter side -> 30, longer -> 45; a flat image stays flat.
    out = preprocess_generation(_rgb(60, 90, (10, 20, 30)), 30)
    assert out.shape == (3, 30, 30)
    expected = torch.tensor([10, 20, 30], dtype=torch.float32)[:, None, None] / 255
    assert torch.equal(out, expected.expand(3, 30, 30))


@pytest.mark.parametrize("bad", [0, -4, 1.5, True, "512"])
def test_bad_resolution(bad: object) -> None:
    for fn in (preprocess_understanding, preprocess_generation):
        with pytest.raises(CheersError, match="resolution must be"):
            fn(_rgb(4, 4), bad)  # type: ignore[arg-type]


# -- load_image: inputs -----------------------------------------------------------------------


def test_load_path_and_str(tmp_path: Path) -> None:
    array = np.random.default_rng(1).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    for source in (path, str(path)):
        image = load_image(source)
        assert image.mode == "RGB"
        assert np.array_equal(np.asarray(image), array)
    assert torch.equal(preprocess_understanding(path, 9), preprocess_understanding(array, 9))


def test_load_rgb_pil_unchanged() -> None:
    image = Image.fromarray(_rgb(3, 4))
    assert load_image(image) is image


def test_load_arrays() -> None:
    grey = np.full((3, 4), 77, dtype=np.uint8)
    for array in (grey, grey[:, :, None]):
        out = np.asarray(load_image(array))
        assert out.shape == (3, 4, 3)
        assert np.all(out == 77)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    out = np.asarray(load_image(rgba))
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[1, 1]) == (255, 255, 255)  # fully transparent -> white
    # A non-contiguous view is fine.
    wide = np.random.default_rng(2).integers(0, 256, (4, 8, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(load_image(wide[:, ::2])), wide[:, ::2])


def test_exif_orientation_applied(tmp_path: Path) -> None:
    image = Image.fromarray(_rgb(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees
    path = tmp_path / "photo.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (10, 20)


# -- load_image: modes ------------------------------------------------------------------------


def test_mode_l_p_and_1() -> None:
    assert np.all(np.asarray(load_image(Image.new("L", (2, 2), 90))) == 90)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([12, 34, 56] + [0] * 765)
    assert tuple(np.asarray(load_image(palette))[0, 0]) == (12, 34, 56)
    assert np.all(np.asarray(load_image(Image.new("1", (2, 2), 1))) == 255)


def test_mode_cmyk() -> None:
    assert np.all(np.asarray(load_image(Image.new("CMYK", (2, 2), (0, 0, 0, 0)))) == 255)
    assert np.all(np.asarray(load_image(Image.new("CMYK", (2, 2), (0, 0, 0, 255)))) == 0)


def test_alpha_composited_over_white() -> None:
    out = np.asarray(load_image(Image.new("RGBA", (2, 2), (0, 0, 0, 0))))
    assert np.all(out == 255)
    half = np.asarray(load_image(Image.new("RGBA", (2, 2), (0, 0, 0, 128))))
    assert np.all(np.abs(half.astype(int) - 127) <= 1)
    opaque = np.asarray(load_image(Image.new("RGBA", (2, 2), (9, 8, 7, 255))))
    assert tuple(opaque[0, 0]) == (9, 8, 7)
    la = np.asarray(load_image(Image.new("LA", (2, 2), (0, 0))))
    assert np.all(la == 255)
    palette = Image.new("P", (2, 2), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert np.all(np.asarray(load_image(palette)) == 255)


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100], [65535, 257 * 3]], dtype=np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    out = np.asarray(load_image(path))
    assert out[:, :, 0].tolist() == [[0, 100], [255, 3]]
    int32 = Image.fromarray(values.astype(np.int32))
    assert int32.mode == "I"
    assert np.asarray(load_image(int32))[:, :, 0].tolist() == [[0, 100], [255, 3]]


def test_float_mode() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32))
    assert np.asarray(load_image(unit))[:, :, 0].tolist() == [[0, 128], [255, 64]]
    byte_range = Image.fromarray(np.array([[0.0, 100.0], [255.0, 3.0]], dtype=np.float32))
    assert np.asarray(load_image(byte_range))[:, :, 0].tolist() == [[0, 100], [255, 3]]


# -- load_image: errors -----------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="does not exist") as info:
        load_image(tmp_path / "missing.png")
    assert "missing.png" in str(info.value)
    with pytest.raises(ImageError, match="URLs are not fetched"):
        load_image("https://example.com/cat.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty \(0 bytes\)"):
        load_image(path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is text, not pixels", encoding="utf-8")
    with pytest.raises(ImageError, match="not in an image format") as info:
        load_image(path)
    assert "notes.png" in str(info.value)


def test_truncated_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    full = tmp_path / "full.png"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full)
    data = full.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(cut)


def test_zero_size_images() -> None:
    with pytest.raises(ImageError, match="holds no pixels"):
        load_image(Image.new("RGB", (0, 5)))
    with pytest.raises(ImageError, match="holds no pixels"):
        load_image(np.zeros((0, 5, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="holds no pixels"):
        preprocess_understanding(np.zeros((5, 0), dtype=np.uint8), 16)


@pytest.mark.parametrize(
    ("array", "needle"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), "dtype float32"),
        (np.zeros((4, 4, 3), dtype=np.uint16), "dtype uint16"),
        (np.zeros((3, 8, 8), dtype=np.uint8), r"shape \(3, 8, 8\)"),
        (np.zeros((1, 4, 4, 3), dtype=np.uint8), "expected HxW"),
        (np.zeros((4, 4, 2), dtype=np.uint8), "expected HxW"),
        (np.zeros(5, dtype=np.uint8), "expected HxW"),
    ],
)
def test_bad_arrays(array: np.ndarray, needle: str) -> None:
    with pytest.raises(ImageError, match=needle):
        load_image(array)


def test_unsupported_type() -> None:
    with pytest.raises(ImageError, match="Cannot use a list"):
        load_image([[0, 1]])  # type: ignore[arg-type]


def test_bad_high_depth_values() -> None:
    with pytest.raises(ImageError, match="values in"):
        load_image(Image.fromarray(np.array([[-5, 3]], dtype=np.int32)))
    with pytest.raises(ImageError, match="values in"):
        load_image(Image.fromarray(np.array([[0.0, 300.0]], dtype=np.float32)))
    with pytest.raises(ImageError, match="NaN"):
        load_image(Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)))


# -- dummy image ------------------------------------------------------------------------------


def test_dummy_image_is_seeded_noise() -> None:
    a = make_dummy_image(torch.Generator().manual_seed(7))
    b = make_dummy_image(torch.Generator().manual_seed(7))
    c = make_dummy_image(torch.Generator().manual_seed(8))
    assert a.shape == (256, 256, 3)
    assert a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() == 0 and a.max() == 255
    assert abs(float(a.mean()) - 127.5) < 2.0
    assert make_dummy_image(None).shape == (256, 256, 3)


# -- to_pil -----------------------------------------------------------------------------------


def test_to_pil_clamps_and_rounds() -> None:
    tensor = torch.tensor([-0.5, 1.5, 100.4 / 255, 100.6 / 255]).reshape(1, 2, 2).repeat(3, 1, 1)
    image = to_pil(tensor)
    assert image.mode == "RGB"
    assert image.size == (2, 2)
    assert np.asarray(image)[:, :, 0].tolist() == [[0, 255], [100, 101]]


def test_to_pil_round_trip_and_dtypes() -> None:
    array = np.random.default_rng(4).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    # 5x6 at 6 needs no resize: content in rows 0..4, one black row below.
    tensor = preprocess_understanding(array, 6)
    assert torch.all(tensor[:, 5] == 0)
    assert np.array_equal(np.asarray(to_pil(tensor[:, :5])), array)
    assert np.array_equal(np.asarray(to_pil(tensor[:, :5].double())), array)
    assert np.array_equal(np.asarray(to_pil(tensor[:, :5].half())), array)
    grey = to_pil(torch.full((1, 2, 3), 0.5))
    assert grey.size == (3, 2)
    assert np.all(np.asarray(grey) == 128)


def test_to_pil_errors() -> None:
    with pytest.raises(ImageError, match="CHW"):
        to_pil(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ImageError, match="CHW"):
        to_pil(torch.zeros(4, 4, 3))
    with pytest.raises(ImageError, match="NaN"):
        to_pil(torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ImageError, match=r"torch\.Tensor"):
        to_pil(np.zeros((3, 2, 2)))  # type: ignore[arg-type]


def test_to_pil_list() -> None:
    batch = torch.rand(2, 3, 4, 5)
    images = to_pil_list(batch)
    assert [im.size for im in images] == [(5, 4), (5, 4)]
    assert [im.size for im in to_pil_list(list(batch))] == [(5, 4), (5, 4)]
    with pytest.raises(ImageError, match="NCHW"):
        to_pil_list(torch.rand(3, 4, 5))
