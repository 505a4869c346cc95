"""Parity fixtures and the released tokenizer/config files, all found inside the clone.

The public parity fixture lives in ``tests/fixtures/public`` and the released tokenizer and
config files in ``tests/fixtures/official`` (the large ones xz-compressed), so ``pytest`` in a
fresh clone runs the parity tests. Extra fixture folders under ``$CHEERS_FIXTURES`` (default
``../shared/fixtures``) are run too; a folder whose content equals one already found (the
shared copy of the public fixture, typically) is run once.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REPO_FIXTURES = REPO / "tests" / "fixtures"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def _materialize_official() -> Path:
    """The released files of ``tests/fixtures/official``, decompressed once into a cache folder.

    The folder name carries a hash of the stored files, so an edited copy never reuses a stale
    cache; it is filled under a temporary name and renamed, so parallel runs never see half of it.
    """
    source = REPO_FIXTURES / "official"
    digest = hashlib.sha256()
    for path in sorted(source.iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    dest = Path(tempfile.gettempdir()) / f"cheers-tests-official-{digest.hexdigest()[:16]}"
    if dest.is_dir():
        return dest
    staging = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    for path in source.iterdir():
        if path.suffix == ".xz":
            (staging / path.stem).write_bytes(lzma.decompress(path.read_bytes()))
        else:
            shutil.copy(path, staging / path.name)
    try:
        staging.rename(dest)
    except OSError:  # another process got there first; its copy is identical
        shutil.rmtree(staging, ignore_errors=True)
    return dest


#: The released checkpoint's config, tokenizer and index files (no weights), from the repository.
OFFICIAL = _materialize_official()


def fixtures_root() -> Path:
    """Where extra fixtures are looked for: ``$CHEERS_FIXTURES``, default ``../shared/fixtures``."""
    return Path(os.environ.get("CHEERS_FIXTURES", REPO.parent / "shared" / "fixtures"))


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _discover(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("reference.json"))


def fixture_dirs() -> list[Path]:
    """Every distinct fixture folder: the repository's first, then those under $CHEERS_FIXTURES.

    Two folders with the same files (names and bytes) are one fixture, whatever their location.
    """
    seen: set[str] = set()
    found: list[Path] = []
    for folder in [*_discover(REPO_FIXTURES), *_discover(fixtures_root())]:
        key = _content_hash(folder)
        if key not in seen:
            seen.add(key)
            found.append(folder)
    return found


def fixture_ids(dirs: list[Path]) -> list[str]:
    """Test ids: the folder name, with its parent's name added where two names clash."""
    names = [d.name for d in dirs]
    return [f"{d.parent.name}/{d.name}" if names.count(d.name) > 1 else d.name for d in dirs]


def fixture_params():
    dirs = fixture_dirs()
    if not dirs:
        return [pytest.param(None, marks=pytest.mark.skip(reason="no parity fixtures found"))]
    return [pytest.param(d, id=i) for d, i in zip(dirs, fixture_ids(dirs), strict=True)]


def materialize_fixture_model(fixture: Path, dest: Path, with_tokenizer: bool = True) -> Path:
    """A released-format model folder from a fixture: decompressed weights, config, tokenizer."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "model.safetensors").write_bytes(
        lzma.decompress((fixture / "model.safetensors.xz").read_bytes())
    )
    shutil.copy(fixture / "config.json", dest / "config.json")
    if with_tokenizer:
        for name in TOKENIZER_FILES:
            shutil.copy(OFFICIAL / name, dest / name)
    return dest


def load_reference(fixture: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    meta = json.loads((fixture / "reference.json").read_text())
    return meta, load_file(str(fixture / "reference.safetensors"))
