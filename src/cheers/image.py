"""Image input and preprocessing.

Every image reaches the model as float32 RGB in [0, 1], channels first, with no mean/std
normalisation. Two geometries exist (docs/architecture.md §2):

* understanding: letterbox, i.e. resize so the longer side is ``R`` and pad black to ``R×R``;
* generation / editing target: resize so the shorter side is ``R`` and centre-crop ``R×R``.

Both resize with PIL bicubic on the 8-bit RGB image, as the reference processor does, so the
pixels match it exactly.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from cheers.errors import CheersError, ImageError

__all__ = [
    "DUMMY_IMAGE_SIZE",
    "ImageInput",
    "load_image",
    "make_dummy_image",
    "preprocess_generation",
    "preprocess_understanding",
    "to_pil",
    "to_pil_list",
]

#: What :func:`load_image` accepts: a file path, a PIL image or a uint8 array.
ImageInput: TypeAlias = str | os.PathLike | Image.Image | np.ndarray

#: Side of the noise image the reference encodes in front of text-only requests
#: (docs/architecture.md §10).
DUMMY_IMAGE_SIZE = 256

_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# Formats whose extra frames are not other pictures: MPO (phone JPEGs) stores previews or depth
# after the primary image, PSD stores the layers after the flattened composite (frame 0).
_FIRST_FRAME_IS_THE_IMAGE = frozenset({"MPO", "PSD"})


def load_image(image: ImageInput) -> Image.Image:
    """Return ``image`` as an 8-bit RGB PIL image.

    Accepts a file path, a PIL image, or a ``uint8`` numpy array of shape ``H×W``, ``H×W×1``,
    ``H×W×3`` or ``H×W×4`` (channels last). Grey, palette, CMYK, 16-bit and float images are
    converted to RGB; images with transparency are composited over white. An animation or a
    multi-page file (GIF, APNG, WebP, TIFF) is refused rather than read as its first frame.
    Anything that cannot be turned into a meaningful RGB image raises
    :class:`~cheers.errors.ImageError`.
    """
    if isinstance(image, Image.Image):
        _check_one_frame(image, "The image")
        return _to_rgb(image, "The image")
    if isinstance(image, np.ndarray):
        return _to_rgb(_from_array(image), "The image array")
    if isinstance(image, (str, os.PathLike)):
        return _to_rgb(_open(image), f"Image file {os.fspath(image)!r}")
    raise ImageError(
        f"Cannot use a {type(image).__name__} as an image. Pass a file path, a PIL.Image.Image "
        "or a uint8 numpy array of shape HxW or HxWx3."
    )


def preprocess_understanding(image: ImageInput, resolution: int | tuple[int, int]) -> torch.Tensor:
    """Letterbox ``image`` for the understanding path: a ``(3, R, R)`` float32 tensor in [0, 1].

    The image is scaled to fit the canvas (bicubic; each side ``round(side · scale)``), and the
    result is pasted centred on black, ``left = pad_w // 2``, ``top = pad_h // 2``.
    ``resolution`` R is the reference's square R×R canvas; a pair ``(height, width)`` is a
    canvas of that shape (the source of an edit at another size), letterboxed the same way.
    """
    out_h, out_w = _check_canvas(resolution)
    rgb = load_image(image)
    width, height = rgb.size
    # Same expression and rounding (Python's round, half to even) as the reference, so a side
    # that lands on .5 rounds the same way.
    scale = min(out_h / height, out_w / width)
    # The reference would crash on a side that rounds to 0 (e.g. 1000x1); keep at least 1 px.
    new_w = max(1, round(width * scale))
    new_h = max(1, round(height * scale))
    resized = rgb.resize((new_w, new_h), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (out_w, out_h), (0, 0, 0))
    canvas.paste(resized, ((out_w - new_w) // 2, (out_h - new_h) // 2))
    return _to_tensor(canvas)


def preprocess_generation(image: ImageInput, resolution: int) -> torch.Tensor:
    """Resize-and-crop ``image`` for a generation/editing target: ``(3, R, R)`` float32 in [0, 1].

    The shorter side is resized to ``R`` (bicubic, ``round``), then the centre ``R×R`` is cut
    (``top = (new_h - R) // 2``, ``left = (new_w - R) // 2``).
    """
    size = _check_resolution(resolution)
    rgb = load_image(image)
    width, height = rgb.size
    scale = size / min(height, width)
    new_w = max(size, round(width * scale))
    new_h = max(size, round(height * scale))
    resized = rgb.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left = (new_w - size) // 2
    top = (new_h - size) // 2
    return _to_tensor(resized.crop((left, top, left + size, top + size)))


def make_dummy_image(generator: torch.Generator | None = None) -> np.ndarray:
    """Uniform random RGB noise, ``uint8`` of shape ``(256, 256, 3)``.

    The reference encodes such an image in front of every request that carries none
    (docs/architecture.md §10).
    It draws it from numpy's global state; this draws from ``generator`` so a seed reproduces it.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randint(
        0,
        256,
        (DUMMY_IMAGE_SIZE, DUMMY_IMAGE_SIZE, 3),
        dtype=torch.uint8,
        generator=generator,
        device=device,
    )
    return noise.cpu().numpy()


def to_pil(tensor: torch.Tensor) -> Image.Image:
    """Turn a ``(3, H, W)`` (or ``(1, H, W)``) tensor in [0, 1] into an 8-bit PIL image.

    Values are clamped to [0, 1] and rounded to the nearest of 256 levels.
    """
    if not isinstance(tensor, torch.Tensor):
        raise ImageError(
            f"to_pil() takes a torch.Tensor, got {type(tensor).__name__}. Use load_image() for "
            "arrays and files."
        )
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3) or 0 in tensor.shape:
        raise ImageError(
            f"to_pil() takes one CHW image with 1 or 3 channels, got shape {tuple(tensor.shape)}."
            " Index a batch first (batch[0]) or use to_pil_list(); permute HWC with "
            "tensor.permute(2, 0, 1)."
        )
    values = tensor.detach().to(device="cpu", dtype=torch.float32)
    if torch.isnan(values).any():
        raise ImageError(
            "The image tensor contains NaN, so it has no meaningful pixels. Check the model "
            "output (a NaN usually means the weights or the dtype are wrong)."
        )
    levels = (values.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    array = levels.permute(1, 2, 0).numpy()
    if array.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(array[:, :, 0])).convert("RGB")
    return Image.fromarray(np.ascontiguousarray(array))


def to_pil_list(batch: torch.Tensor | Sequence[torch.Tensor]) -> list[Image.Image]:
    """Turn an ``(N, 3, H, W)`` tensor, or a sequence of CHW tensors, into PIL images."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim != 4:
            raise ImageError(
                f"to_pil_list() takes an NCHW batch, got shape {tuple(batch.shape)}. Use "
                "to_pil() for a single CHW image, or add a batch axis with tensor[None]."
            )
        return [to_pil(item) for item in batch]
    return [to_pil(item) for item in batch]


def _check_canvas(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """R → (R, R); a (height, width) pair is checked side by side."""
    if isinstance(resolution, tuple) and len(resolution) == 2:
        return _check_resolution(resolution[0]), _check_resolution(resolution[1])
    side = _check_resolution(resolution)
    return side, side


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise CheersError(
            f"resolution must be an int, got {type(resolution).__name__} {resolution!r}. Pass "
            "the model's image size (config vision image_size, e.g. 512)."
        )
    if resolution <= 0:
        raise CheersError(
            f"resolution must be positive, got {resolution}. Pass the model's image size "
            "(config vision image_size, e.g. 512)."
        )
    return int(resolution)


def _to_tensor(rgb: Image.Image) -> torch.Tensor:
    # float32 division by 255 gives bit-identical values to the reference's float64 rescale
    # followed by a cast to float32 (checked for all 256 levels).
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous().float() / 255.0


def _open(source: str | os.PathLike) -> Image.Image:
    # Keep the caller's spelling for messages: Path() would fold "https://" into "https:/".
    name = os.fspath(source)
    path = Path(source)
    if not path.exists():
        hint = (
            " URLs are not fetched; download the file first."
            if name.startswith(("http://", "https://"))
            else ""
        )
        raise ImageError(f"Image file {name!r} does not exist. Check the path.{hint}")
    if path.is_dir():
        raise ImageError(f"Image path {name!r} is a directory. Pass the path of an image file.")
    try:
        n_bytes = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"Cannot access image file {name!r} ({exc}). Check permissions.") from exc
    if n_bytes == 0:
        raise ImageError(
            f"Image file {name!r} is empty (0 bytes), probably an interrupted download or copy. "
            "Replace it with a complete image file."
        )
    try:
        with Image.open(path) as opened:
            # Decode now, inside the try, so a truncated or corrupt file fails here with a clear
            # error instead of later (PIL opens lazily and only parses the header).
            opened.load()
            _check_one_frame(opened, f"Image file {name!r}")
            # Camera photos are often stored sideways with an EXIF orientation tag that every
            # viewer honours; without it the model would see the picture rotated.
            return ImageOps.exif_transpose(opened)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"Image file {name!r} is not in an image format PIL can read (or its header is "
            "corrupt). Convert it to PNG or JPEG."
        ) from exc
    except PermissionError as exc:
        raise ImageError(f"Cannot read image file {name!r} ({exc}). Check permissions.") from exc
    except Exception as exc:
        # Decoders raise many types on damaged data (OSError, SyntaxError, struct.error, ...).
        raise ImageError(
            f"Image file {name!r} could not be decoded ({type(exc).__name__}: {exc}); it is "
            "probably truncated or corrupt. Re-export or re-download it."
        ) from exc


def _check_one_frame(image: Image.Image, what: str) -> None:
    # Silently taking frame 0 of an animation would answer about (or edit) a picture the user
    # may never have looked at; which frame is meant is theirs to say.
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format not in _FIRST_FRAME_IS_THE_IMAGE:
        raise ImageError(
            f"{what} has {frames} frames (an animation or a multi-page {image.format or 'image'})"
            "; Cheers reads one picture. Save the frame you mean as a PNG and pass that (with "
            "PIL: im.seek(k); im.convert('RGB').save('frame.png'))."
        )


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageError(
            f"The image array has dtype {array.dtype}; load_image() takes uint8 arrays (0-255). "
            "For floats in [0, 1] convert with (array * 255).round().clip(0, 255)"
            ".astype(np.uint8)."
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ImageError(
            f"The image array has shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4 "
            "(channels last). Transpose a CHW array with array.transpose(1, 2, 0)."
        )
    if 0 in array.shape:
        raise ImageError(
            f"The image array has shape {array.shape}, which holds no pixels. Pass an image "
            "at least 1x1 in size."
        )
    # uint8 HxW / HxWx3 / HxWx4 map to PIL's L / RGB / RGBA.
    return Image.fromarray(np.ascontiguousarray(array))


def _to_rgb(image: Image.Image, what: str) -> Image.Image:
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(
            f"{what} is {width}x{height} pixels, which holds no pixels. Pass an image at least "
            "1x1 in size."
        )
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _high_depth_to_rgb(image, what)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        # The reference's convert("RGB") drops alpha and shows whatever colour transparent
        # pixels happen to store (often black, or leftover junk). White is the background
        # viewers draw, so a dark logo on a transparent canvas stays visible. Opaque pixels are
        # unchanged, so images without transparency match the reference exactly.
        try:
            rgba = image.convert("LA").convert("RGBA") if mode == "La" else image.convert("RGBA")
        except ValueError as exc:
            raise ImageError(
                f"{what} has mode {mode!r}, which PIL cannot convert to RGBA ({exc}). Save it as "
                "an RGBA PNG first."
            ) from exc
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(
            f"{what} has mode {mode!r}, which PIL cannot convert to RGB ({exc}). Convert it to "
            "an 8-bit RGB PNG or JPEG first."
        ) from exc


def _high_depth_to_rgb(image: Image.Image, what: str) -> Image.Image:
    # PIL's own convert() clips these modes to 0..255 instead of rescaling, which turns a
    # 16-bit photo into a nearly white image; rescale the full range to 8 bits instead.
    values = np.asarray(image).astype(np.float64)
    mode = image.mode
    if mode == "F":
        if not np.isfinite(values).all():
            raise ImageError(
                f"{what} is a float image containing NaN or infinity. Replace those pixels or "
                "save the image as 8-bit RGB."
            )
        low, high = float(values.min()), float(values.max())
        if low >= 0.0 and high <= 1.0:
            values = values * 255.0
        elif low < 0.0 or high > 255.0:
            raise ImageError(
                f"{what} is a float image with values in [{low:g}, {high:g}]; only [0, 1] or "
                "[0, 255] can be read as intensities. Rescale it to 8-bit RGB first."
            )
    else:
        # 'I' is what 16-bit PNG/TIFF files decode to in older Pillow; treat it as 16-bit.
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 65535.0:
            raise ImageError(
                f"{what} is a 32-bit integer image with values in [{low:g}, {high:g}], outside "
                "the 16-bit range this loader understands. Rescale it to 8-bit RGB first."
            )
        values = values / 257.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")
