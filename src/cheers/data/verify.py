"""Every training image decoded once before the first step, so a bad one fails (or is skipped)
up front rather than when its batch comes — a short run might otherwise never read it."""

from __future__ import annotations

from cheers.data.examples import DUMMY
from cheers.data.loader import TrainingData
from cheers.errors import DataError, ImageError
from cheers.image import load_image


def verify_images(data: TrainingData, on_error: str = "fail", progress: bool = True) -> int:
    """Decode every distinct image of ``data``; returns how many samples were dropped.

    ``on_error``: ``"fail"`` raises :class:`DataError` naming the sample (file:line), the image
    and the problem; ``"skip"`` drops every sample that uses an unreadable image and counts it
    in ``data.report``. Each file is decoded once, however many samples use it.
    """
    if on_error not in ("fail", "skip"):
        raise DataError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    paths: dict[str, str] = {}  # image -> first sample using it
    for example in data.examples:
        for path, role in zip(example.images, example.roles, strict=True):
            if role != DUMMY:
                paths.setdefault(path, example.source)
    bad: dict[str, str] = {}
    for path, source in _bar(paths.items(), progress, len(paths)):
        try:
            with load_image(path) as image:
                image.load()
        except (ImageError, OSError) as err:
            if on_error == "fail":
                raise DataError(
                    f"{source}: image {path} cannot be used ({err}). Replace or remove the "
                    "image, or set bad_samples = 'skip' in [data] to skip its samples"
                ) from err
            bad[path] = str(err)
    if not bad:
        return 0
    keep = [i for i, e in enumerate(data.examples) if not bad.keys() & set(e.images)]
    for example in data.examples:
        if bad.keys() & set(example.images):
            data.report.add("unreadable image", example.source)
    dropped = len(data.examples) - len(keep)
    data.examples = [data.examples[i] for i in keep]
    data.file_of = [data.file_of[i] for i in keep]
    if not data.examples:
        raise DataError(
            f"no usable training samples: every sample uses an unreadable image ({data.report})"
        )
    return dropped


def _bar(items, enabled: bool, total: int):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc="checking images", unit="image")
