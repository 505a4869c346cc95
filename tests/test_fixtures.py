"""The parity fixtures and released files are found inside the clone, each fixture run once."""

from __future__ import annotations

import hashlib
import lzma
import shutil

import pytest

import parity_fixtures
from parity_fixtures import OFFICIAL, REPO, fixture_dirs, fixture_ids

SHARED = REPO.parent / "shared"
REPO_PUBLIC = REPO / "tests" / "fixtures" / "public"


def test_public_fixture_is_found_without_anything_outside_the_clone(monkeypatch, tmp_path):
    monkeypatch.setenv("CHEERS_FIXTURES", str(tmp_path / "nowhere"))
    assert fixture_dirs() == [REPO_PUBLIC]


def test_public_fixture_weights_match_their_recorded_hash():
    import json

    meta = json.loads((REPO_PUBLIC / "reference.json").read_text())
    weights = lzma.decompress((REPO_PUBLIC / "model.safetensors.xz").read_bytes())
    assert hashlib.sha256(weights).hexdigest() == meta["model_safetensors_sha256"]


def test_extra_fixtures_run_once_each(monkeypatch, tmp_path):
    extra = tmp_path / "extra"
    # The same files under the same name and under another name: both are the repo fixture.
    shutil.copytree(REPO_PUBLIC, extra / "public")
    shutil.copytree(REPO_PUBLIC, extra / "nested" / "renamed")
    # Same name, different content: a distinct fixture, run with a distinguishing id.
    other = extra / "more" / "public"
    shutil.copytree(REPO_PUBLIC, other)
    (other / "und_image.png").write_bytes(b"different")
    monkeypatch.setenv("CHEERS_FIXTURES", str(extra))
    dirs = fixture_dirs()
    assert dirs == [REPO_PUBLIC, other]
    assert fixture_ids(dirs) == ["fixtures/public", "more/public"]


def test_extra_fixture_is_found_under_the_env_folder(monkeypatch, tmp_path):
    folder = tmp_path / "a" / "b" / "mine"
    shutil.copytree(REPO_PUBLIC, folder)
    (folder / "config.json").write_text((REPO_PUBLIC / "config.json").read_text() + "\n")
    monkeypatch.setenv("CHEERS_FIXTURES", str(tmp_path))
    assert fixture_dirs() == [REPO_PUBLIC, folder]
    assert fixture_ids(fixture_dirs()) == ["public", "mine"]


@pytest.mark.skipif(not (SHARED / "spec" / "official").is_dir(), reason="no shared spec folder")
def test_vendored_official_files_equal_the_shared_ones():
    shared = SHARED / "spec" / "official"
    for path in sorted(OFFICIAL.iterdir()):
        assert path.read_bytes() == (shared / path.name).read_bytes(), path.name
    assert {p.name for p in OFFICIAL.iterdir()} == {p.name for p in shared.iterdir()}


@pytest.mark.skipif(not (SHARED / "fixtures" / "public").is_dir(), reason="no shared fixtures")
def test_vendored_public_fixture_equals_the_shared_one():
    shared = SHARED / "fixtures" / "public"
    assert sorted(p.name for p in REPO_PUBLIC.iterdir()) == sorted(p.name for p in shared.iterdir())
    for path in REPO_PUBLIC.iterdir():
        assert path.read_bytes() == (shared / path.name).read_bytes(), path.name


def test_official_cache_is_rebuilt_when_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(parity_fixtures.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = parity_fixtures._materialize_official()
    assert folder.parent == tmp_path
    assert (folder / "vocab.json").read_bytes() == (OFFICIAL / "vocab.json").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p != folder]  # no staging folder left behind
