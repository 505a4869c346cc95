"""Saving never leaves a half-written file under a final name, and says clearly when it cannot.

The fault tests kill a real subprocess (SIGKILL, no clean-up runs) in the middle of writing, by
replacing the writer with one that writes half the bytes and then kills its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch

from cheers import __version__
from cheers.checkpoint import load_model, save_model
from cheers.config import CheersConfig
from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.tokenizer import CheersTokenizer
from parity_fixtures import OFFICIAL

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "src" / "cheers" / "default_model"


def _tiny() -> Cheers:
    torch.manual_seed(0)
    return Cheers(CheersConfig.tiny(vocab_size=512)).init_weights()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _run_killed(script: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed by SIGKILL, as planned


# A writer replacement: write half of what the real writer produced, then die.
KILLER = """
import os, signal
def half_then_die(real, path_of):
    def writer(*args, **kwargs):
        real(*args, **kwargs)
        path = path_of(*args, **kwargs)
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return writer
"""


def test_save_model_onto_an_existing_file_is_a_clear_error(tmp_path):
    target = tmp_path / "model.bin"
    target.write_text("keep me")
    with pytest.raises(CheckpointError, match="existing file, not a folder"):
        save_model(_tiny(), target)
    assert target.read_text() == "keep me"
    with pytest.raises(CheckpointError, match="part of the path is a file"):
        save_model(_tiny(), target / "inside")


def test_tokenizer_save_onto_an_existing_file_is_a_clear_error(tmp_path):
    target = tmp_path / "tok"
    target.write_text("keep me")
    with pytest.raises(CheckpointError, match="existing file, not a folder"):
        CheersTokenizer.from_folder(DEFAULT_MODEL).save(target)
    assert target.read_text() == "keep me"


def test_save_pretrained_onto_an_existing_file_is_a_clear_error(tmp_path):
    from cheers.pipeline import CheersPipeline

    pipe = CheersPipeline(_tiny(), CheersTokenizer.from_folder(DEFAULT_MODEL))
    target = tmp_path / "out.safetensors"
    target.write_text("keep me")
    with pytest.raises(CheckpointError, match="existing file, not a folder"):
        pipe.save_pretrained(target)
    assert target.read_text() == "keep me"


def test_sigkill_during_save_model_keeps_the_previous_folder(tmp_path):
    folder = tmp_path / "model"
    save_model(_tiny(), folder)
    before = _snapshot(folder)
    _run_killed(
        KILLER
        + f"""
import torch, cheers.checkpoint as ck
from cheers.config import CheersConfig
from cheers.model import Cheers
ck.save_file = half_then_die(ck.save_file, lambda tensors, path, **kw: path)
torch.manual_seed(1)  # different weights: a mix-up would show
ck.save_model(Cheers(CheersConfig.tiny(vocab_size=512)).init_weights(), {str(folder)!r})
"""
    )
    assert _snapshot(folder) == before  # no final file was touched
    leftovers = [p for p in folder.iterdir() if p.is_dir()]
    assert [p.name[:8] for p in leftovers] == [".saving-"]
    reloaded = load_model(folder)
    for name, tensor in _tiny().state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    save_model(reloaded, folder)  # the next save clears the leftover
    assert not [p for p in folder.iterdir() if p.is_dir()]


def test_sigkill_during_tokenizer_save_keeps_the_previous_files(tmp_path):
    folder = tmp_path / "model"
    CheersTokenizer.from_folder(DEFAULT_MODEL).save(folder)
    before = _snapshot(folder)
    _run_killed(
        KILLER
        + f"""
import pathlib
from cheers.tokenizer import CheersTokenizer
real = pathlib.Path.write_text
pathlib.Path.write_text = half_then_die(real, lambda self, *a, **k: self)
CheersTokenizer.from_folder({str(DEFAULT_MODEL)!r}).save({str(folder)!r})
"""
    )
    assert _snapshot(folder) == before
    assert CheersTokenizer.from_folder(folder).encode(
        "a red circle"
    ) == CheersTokenizer.from_folder(DEFAULT_MODEL).encode("a red circle")


def test_sigkill_during_a_trainer_checkpoint_keeps_the_previous_one(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "training"))
    from test_trainer import write_config, write_data

    data = write_data(tmp_path / "data")
    config = write_config(data, "run", vae_steps=1, joint_steps=2, save_every=1)
    # The embedded model's small vocabulary keeps this test fast; the checkpoint path is the same.
    CheersConfig.tiny(image_size=32, vocab_size=512).save(data)
    config.write_text(config.read_text().replace(str(OFFICIAL), str(DEFAULT_MODEL)))
    ckpts = data / "run" / "checkpoints"
    _run_killed(
        KILLER
        + f"""
import cheers.training.checkpointing as ck
import cheers.training.trainer as tr
from cheers.training.recipe import TrainConfig
calls = []
real = ck.save_file
def maybe_die(tensors, path, **kw):
    calls.append(path)
    (half_then_die(real, lambda t, p, **k: p) if len(calls) == 2 else real)(tensors, path, **kw)
ck.save_file = maybe_die  # the optimizer state of the second checkpoint is cut short
tr.Trainer(TrainConfig.from_toml({str(config)!r})).run()
"""
    )
    assert (ckpts / "latest").read_text() == "step-0000001"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        ".tmp-step-0000002",
        "latest",
        "step-0000001",
    ]
    assert load_model(ckpts / "step-0000001" / "model").config.image_size == 32
    from cheers.training.recipe import TrainConfig
    from cheers.training.trainer import Trainer

    final = Trainer(TrainConfig.from_toml(config), resume=True).run()
    assert final == ckpts / "step-0000003" / "model"
    assert (ckpts / "latest").read_text() == "step-0000003"
    assert not (ckpts / ".tmp-step-0000002").exists()


def test_version_flag_prints_the_package_version():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == meta
    out = subprocess.run(
        [sys.executable, "-m", "cheers", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.strip() == f"cheers {meta}"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_saved_weights_get_the_permissions_of_any_new_file(tmp_path, umask, mode):
    """safetensors creates owner-only files; a saved model is readable like its config, as
    the umask says, and the probe that reads those permissions leaves nothing behind."""
    old = os.umask(umask)
    try:
        save_model(_tiny(), tmp_path / "m", max_shard_bytes=2**20)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "m").iterdir()}
    assert any(name.endswith(".safetensors") for name in modes)
    assert set(modes.values()) == {mode}, modes
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]
