"""load_model streams: it never holds two copies of the weights.

A spy around ``safe_open`` records every tensor read from the files. A tensor that is
converted (another dtype) or quantized must be gone before the next one is read, and a tensor
already in the requested dtype must become the module's storage as mapped (no copy)."""

from __future__ import annotations

import weakref

import pytest
import torch

import cheers.checkpoint as checkpoint
from cheers.checkpoint import load_model, save_model
from cheers.config import CheersConfig
from cheers.model import Cheers
from cheers.transforms.quantize import Int8Linear, quantize_int8


class Spy:
    """Wraps ``safe_open``; counts, at every read, the earlier reads still alive."""

    def __init__(self, real, watch) -> None:
        self.real, self.watch = real, watch  # watch(name, tensor): must not outlive its turn
        self.watched: list[weakref.ref] = []
        self.most_alive = 0
        self.ptrs: dict[str, int] = {}

    def __call__(self, *args, **kwargs):
        return _Handle(self, self.real(*args, **kwargs))


class _Handle:
    def __init__(self, spy: Spy, ctx) -> None:
        self.spy, self.ctx = spy, ctx

    def __enter__(self):
        self.handle = self.ctx.__enter__()
        return self

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)

    def keys(self):
        return self.handle.keys()

    def get_slice(self, name):
        return self.handle.get_slice(name)

    def get_tensor(self, name):
        spy = self.spy
        spy.most_alive = max(spy.most_alive, sum(r() is not None for r in spy.watched))
        tensor = self.handle.get_tensor(name)
        spy.ptrs[name] = tensor.data_ptr()
        if spy.watch(name, tensor):
            spy.watched.append(weakref.ref(tensor))
        return tensor


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.manual_seed(0)
    model = Cheers(CheersConfig.tiny(image_size=32, vocab_size=512)).eval()
    root = tmp_path_factory.mktemp("stream")
    f32 = save_model(model, root / "f32", max_shard_bytes=300_000)
    bf16 = save_model(model.to(torch.bfloat16), root / "bf16", max_shard_bytes=300_000)
    return f32, bf16


def _spy(monkeypatch, watch) -> Spy:
    spy = Spy(checkpoint.safe_open, watch)
    monkeypatch.setattr(checkpoint, "safe_open", spy)
    return spy


def test_a_converting_load_holds_one_source_tensor_at_a_time(folders, monkeypatch):
    _, bf16 = folders
    spy = _spy(monkeypatch, lambda name, t: t.dtype == torch.bfloat16)
    model = load_model(bf16, dtype="float32")
    assert len(spy.watched) > 50  # every floating tensor was converted ...
    assert spy.most_alive == 0  # ... and dropped before the next was read
    assert all(r() is None for r in spy.watched)
    assert model.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_tensors_in_the_requested_dtype_become_the_modules_storage(folders, monkeypatch):
    f32, _ = folders
    spy = _spy(monkeypatch, lambda name, t: False)
    model = load_model(f32, dtype="float32")
    state = model.state_dict()
    read = {k: v for k, v in spy.ptrs.items() if k != "lm_head.weight"}
    assert read and read.keys() <= state.keys()
    # The storage of every loaded tensor is the mapped tensor that was read: no copy.
    assert all(state[k].data_ptr() == ptr for k, ptr in read.items())


def test_an_int8_load_drops_each_float_weight_after_quantizing_it(folders, monkeypatch):
    f32, _ = folders
    reference = load_model(f32)
    targets = set(quantize_int8(reference))
    spy = _spy(monkeypatch, lambda name, t: name.removesuffix(".weight") in targets)
    model = load_model(f32, quantize="int8")
    assert len(spy.watched) == len(targets) and spy.most_alive == 0
    # Quantizing while loading equals quantizing the loaded model.
    for name in targets:
        got, want = model.get_submodule(name), reference.get_submodule(name)
        assert isinstance(got, Int8Linear)
        assert torch.equal(got.weight, want.weight) and torch.equal(got.scales, want.scales)
    state = model.state_dict()
    assert state.keys() == reference.state_dict().keys()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in state.items())
