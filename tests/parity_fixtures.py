"""Parity-fixture discovery and model folders built from fixtures (shared by the tests)."""

from __future__ import annotations

import json
import lzma
import os
import shutil
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
OFFICIAL = REPO.parent / "shared" / "spec" / "official"
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def fixtures_root() -> Path:
    return Path(os.environ.get("CHEERS_FIXTURES", REPO.parent / "shared" / "fixtures"))


def fixture_dirs() -> list[Path]:
    """Every fixture folder (one holding reference.json) under $CHEERS_FIXTURES."""
    root = fixtures_root()
    if not root.is_dir():
        return []
    return sorted(p.parent for p in root.rglob("reference.json"))


def fixture_params():
    dirs = fixture_dirs()
    if not dirs:
        return [
            pytest.param(None, marks=pytest.mark.skip(reason=f"no fixtures in {fixtures_root()}"))
        ]
    return [pytest.param(d, id=d.name) for d in dirs]


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
