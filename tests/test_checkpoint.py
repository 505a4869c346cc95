"""Loading and saving model folders, and every bad checkpoint a user can hand us."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from cheers.checkpoint import load_model, load_state_dict, save_model
from cheers.config import CheersConfig
from cheers.errors import CheckpointError
from cheers.model import Cheers


def _tiny(seed: int = 0) -> Cheers:
    torch.manual_seed(seed)
    model = Cheers(CheersConfig.tiny(image_size=32, vocab_size=512)).eval()
    # BatchNorm statistics are buffers: give them non-trivial values so a lost buffer shows.
    for bn in (model.model.vae_model.bn, model.model.vae_decoder_projector.bn):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture
def saved(tmp_path):
    model = _tiny()
    save_model(model, tmp_path / "m")
    return model, tmp_path / "m"


def _same_tensors(a: Cheers, b: Cheers) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key].to(sa[key].dtype)), key


def test_round_trip_single_file(saved):
    model, folder = saved
    assert (folder / "model.safetensors").is_file()
    loaded = load_model(folder)
    _same_tensors(model, loaded)
    assert loaded.config == model.config
    # The released format stores both the head and the embeddings; loading ties them again.
    stored = load_file(str(folder / "model.safetensors"))
    assert "lm_head.weight" in stored and "model.language_model.embed_tokens.weight" in stored
    assert loaded.lm_head.weight is loaded.model.language_model.embed_tokens.weight
    pixels = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        # Same weights; kernels may pick another summation order on fresh memory, hence 1e-6.
        expected = model.understanding_tokens(pixels)
        torch.testing.assert_close(loaded.understanding_tokens(pixels), expected, rtol=0, atol=1e-6)


def test_round_trip_sharded(tmp_path):
    model = _tiny()
    folder = save_model(model, tmp_path / "m", max_shard_bytes=200_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((folder / s).is_file() for s in shards)
    assert not (folder / "model.safetensors").exists()
    _same_tensors(model, load_model(folder))
    # Saving again unsharded replaces the shards instead of leaving an ambiguous folder.
    save_model(model, folder)
    assert sorted(p.name for p in folder.glob("*.safetensors*")) == ["model.safetensors"]


def test_dtype_and_device_choice(saved):
    _, folder = saved
    model = load_model(folder, dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16
    assert model.model.vae_model.bn.num_batches_tracked.dtype == torch.int64
    with pytest.raises(CheckpointError, match="unknown dtype"):
        load_model(folder, dtype="float8")


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        load_model(tmp_path / "file.txt")
    CheersConfig.tiny().save(tmp_path)
    with pytest.raises(CheckpointError, match=r"no weights .* expected model\.safetensors"):
        load_model(tmp_path)


def test_pickle_checkpoints_are_refused(tmp_path):
    CheersConfig.tiny().save(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="pickle checkpoints are not loaded"):
        load_model(tmp_path)


def test_missing_config(saved):
    _, folder = saved
    (folder / "config.json").unlink()
    with pytest.raises(Exception, match=r"No config\.json"):
        load_model(folder)


def test_truncated_and_empty_weights(saved):
    _, folder = saved
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(folder)
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(folder)


def test_shape_mismatch_names_key_and_both_shapes(saved):
    _, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    state["model.hi_gate.gate.0.weight"] = torch.zeros(64, 32)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    assert "model.hi_gate.gate.0.weight" in str(err.value)
    assert "(64, 32)" in str(err.value) and "(64, 64)" in str(err.value)


def test_missing_and_unexpected_keys(saved):
    _, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    del state["model.und_projector.mlp.0.bias"]
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_model(folder)
    message = str(err.value)
    assert "1 missing tensor(s): model.und_projector.mlp.0.bias" in message
    assert "1 unexpected tensor(s): model.extra.weight" in message


def test_tied_head_may_be_stored_once(saved):
    model, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    del state["lm_head.weight"]
    save_file(state, str(folder / "model.safetensors"))
    loaded = load_model(folder)
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_head_differing_from_tied_embeddings_is_an_error(saved):
    _, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="ties the word embeddings"):
        load_model(folder)


def test_sharded_index_problems(tmp_path):
    folder = save_model(_tiny(), tmp_path / "m", max_shard_bytes=200_000)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first = sorted(set(index["weight_map"].values()))[0]
    (folder / first).unlink()
    with pytest.raises(CheckpointError, match=f"missing from .*{first}"):
        load_state_dict(folder)
    (folder / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a valid safetensors index"):
        load_state_dict(folder)


def test_hub_id_without_hub_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match="huggingface_hub is not installed"):
        load_model("ai9stars/Cheers-does-not-exist-locally")


def test_hub_download_is_used_for_repo_ids(monkeypatch, saved):
    _, folder = saved
    calls = []

    class FakeHub:
        @staticmethod
        def snapshot_download(repo_id, allow_patterns):
            calls.append((repo_id, allow_patterns))
            return str(folder)

    monkeypatch.setitem(sys.modules, "huggingface_hub", FakeHub)
    model = load_model("someone/some-cheers")
    assert calls and calls[0][0] == "someone/some-cheers"
    assert "*.safetensors" in calls[0][1] and not any("bin" in p for p in calls[0][1])
    assert isinstance(model, Cheers)
