"""Where a command's images go: file names from prompts, ``--out`` as a file or a folder.

An ``--out`` ending in an image suffix (``.png``, ``.jpg``, ``.webp``…) is one file, written in
that format; any other ``--out`` is a folder (created if missing) for PNG files.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cheers._files import atomic_write, output_folder
from cheers.errors import CheersError

if TYPE_CHECKING:
    from PIL import Image

#: File suffixes --out may end in, and the format (with its save options) each is written in.
#: Lossless formats keep the pixels; JPEG and WebP are written at high quality.
IMAGE_FORMATS: dict[str, tuple[str, dict[str, object]]] = {
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".webp": ("WEBP", {"quality": 95}),
    ".bmp": ("BMP", {}),
    ".tif": ("TIFF", {}),
    ".tiff": ("TIFF", {}),
}
# Image suffixes PIL knows but that would change the picture (GIF: 256 colours) or are no
# picture file at all (PDF): refused by name rather than taken for a folder.
_REFUSED_SUFFIXES = (".gif", ".ico", ".pdf", ".eps", ".svg", ".heic", ".avif", ".jxl")


def slugify(text: str, max_length: int = 60) -> str:
    """A file-name-safe, lower-case ASCII version of ``text`` (``"image"`` if nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "image"


def output_paths(out: str, names: Sequence[str]) -> list[Path]:
    """Where each image goes: ``out`` itself for one image and an image-file ``out``, else
    out/name (a folder, created with its parents)."""
    suffix = Path(out).suffix.lower()
    if suffix in _REFUSED_SUFFIXES:
        raise CheersError(
            f"--out {out}: cheers does not write {suffix} files; end the name in "
            f"{', '.join(IMAGE_FORMATS)} for one image, or pass a folder"
        )
    if suffix in IMAGE_FORMATS:
        if len(names) != 1:
            raise CheersError(
                f"--out {out} is a single {suffix} file but {len(names)} images will be made; "
                "pass a folder instead"
            )
        path = Path(out)
        if path.is_dir():
            raise CheersError(f"--out {out} is a folder; pass a file name or a folder path")
        output_folder(path.parent, f"--out {out}")
        return [path]
    folder = output_folder(Path(out), f"--out {out}")
    return [folder / name for name in names]


def save_image(image: Image.Image, path: Path) -> Path:
    """Write ``image`` to ``path`` in the format its suffix names (PNG for any other suffix),
    atomically: a reader never sees a half-written file."""
    fmt, options = IMAGE_FORMATS.get(path.suffix.lower(), IMAGE_FORMATS[".png"])
    return atomic_write(path, lambda f: image.save(f, format=fmt, **options))
