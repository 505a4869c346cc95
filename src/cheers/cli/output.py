"""Where a command's images go: file names from prompts, ``--out`` as a file or a folder."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cheers._files import atomic_write
from cheers.errors import CheersError

if TYPE_CHECKING:
    from PIL import Image


def slugify(text: str, max_length: int = 60) -> str:
    """A file-name-safe, lower-case ASCII version of ``text`` (``"image"`` if nothing is left)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "image"


def ensure_folder(folder: Path) -> Path:
    """Create ``folder`` (and parents); any failure becomes a CheersError naming --out."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise CheersError(
            f"cannot create the output folder {folder}: a file is in the way; pass another --out"
        ) from err
    except OSError as err:
        raise CheersError(
            f"cannot create the output folder {folder} ({err.strerror or err}); pass another --out"
        ) from err
    if not os.access(folder, os.W_OK):
        raise CheersError(f"the output folder {folder} is not writable; pass another --out")
    return folder


def output_paths(out: str, names: Sequence[str]) -> list[Path]:
    """Where each image goes: ``out`` itself for one image and a .png ``out``, else out/name."""
    if out.lower().endswith(".png"):
        if len(names) != 1:
            raise CheersError(
                f"--out {out} is a single .png file but {len(names)} images will be made; "
                "pass a folder instead"
            )
        path = Path(out)
        if path.is_dir():
            raise CheersError(f"--out {out} is a folder; pass a file name or a folder path")
        ensure_folder(path.parent)
        return [path]
    folder = ensure_folder(Path(out))
    return [folder / name for name in names]


def save_png(image: Image.Image, path: Path) -> Path:
    """Write ``image`` to ``path`` atomically: a reader never sees a half-written file."""
    return atomic_write(path, lambda f: image.save(f, format="PNG"))
