"""Pytest fixtures shared by the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from parity_fixtures import fixture_dirs, materialize_fixture_model


@pytest.fixture(scope="session")
def public_model_dir(tmp_path_factory) -> Path:
    """The public fixture as a model folder (tokenizer included), built once per session."""
    dirs = [d for d in fixture_dirs() if d.name == "public"] or fixture_dirs()
    if not dirs:
        pytest.skip("no parity fixture available")
    return materialize_fixture_model(dirs[0], tmp_path_factory.mktemp("public_model"))


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
