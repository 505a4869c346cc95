"""Model CPU offload on the CPU: the same outputs, and each component on the execution device
only while it is used (recorded at call time by hooks that run after the offload's own)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from cheers.config import CheersConfig
from cheers.errors import CheersError
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline
from cheers.transforms.offload import ModelOffload, components, enable_model_cpu_offload

MODEL = "src/cheers/default_model"
IMAGE = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


def _tasks(pipe: CheersPipeline) -> dict:
    cfg = pipe.model.config
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(2, cfg.latent_channels, cfg.grid_size, cfg.grid_size, generator=g)
    kw = {"num_inference_steps": 3, "output_type": "latent"}
    return {
        "t2i": pipe(["a red circle", "two squares"], latents=noise, **kw).images,
        "edit": pipe.edit(IMAGE, "make it blue", latents=noise[:1], **kw).images,
        "answer": pipe.understand(IMAGE, "What shape is it?", max_new_tokens=6),
        "chat": pipe.chat("Hello", max_new_tokens=4, generator=0),
        "image": pipe("a square", latents=noise[:1], num_inference_steps=2, output_type="pt"),
    }


class Recorder:
    """The components on the device each time a component's entry module runs, and every
    move the offload makes."""

    def __init__(self, offload: ModelOffload) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.moves: list[tuple[str, str]] = []
        move = offload._move

        def recorded_move(name, to_device):
            self.moves.append((name, "device" if to_device else "off"))
            move(name, to_device)

        offload._move = recorded_move
        for comp in offload.components.values():
            for entry in comp.entries:
                offload.model.get_submodule(entry).register_forward_pre_hook(
                    lambda m, args, name=comp.name: self.calls.append(
                        (name, tuple(offload.resident))
                    )
                )


def test_outputs_are_equal_with_and_without_offload():
    plain = _tasks(CheersPipeline.from_pretrained(MODEL))
    pipe = CheersPipeline.from_pretrained(MODEL)
    pipe.enable_model_cpu_offload("cpu")
    offloaded = _tasks(pipe)
    for key in ("t2i", "edit"):
        assert torch.equal(offloaded[key], plain[key])
    assert torch.equal(offloaded["image"].images, plain["image"].images)
    assert offloaded["answer"] == plain["answer"] and offloaded["chat"] == plain["chat"]


def test_each_component_is_on_the_device_only_while_it_is_used():
    pipe = CheersPipeline.from_pretrained(MODEL)
    offload = pipe.enable_model_cpu_offload("cpu")
    rec = Recorder(offload)
    _tasks(pipe)
    used = {name for name, _ in rec.calls}
    assert used == set(offload.components)  # every component ran ...
    assert all(resident == (name,) for name, resident in rec.calls)  # ... alone on the device
    # Moves alternate per component: to the device, back, to the device, ...
    for name in offload.components:
        mine = [where for n, where in rec.moves if n == name]
        assert mine[0] == "device" and all(a != b for a, b in itertools.pairwise(mine))
    offload.release()
    assert not offload.resident
    assert [w for n, w in rec.moves if n == rec.calls[-1][0]][-1] == "off"


def test_a_budget_keeps_recently_used_components_on_the_device():
    pipe = CheersPipeline.from_pretrained(MODEL)
    probe = ModelOffload(pipe.model, "cpu")
    everything = sum(probe.sizes.values())
    offload = pipe.enable_model_cpu_offload("cpu", max_resident_bytes=everything)
    rec = Recorder(offload)
    _tasks(pipe)
    # Room for all: each component moved to the device once and never back.
    assert sorted(n for n, w in rec.moves) == sorted(offload.components)
    assert all(w == "device" for _, w in rec.moves)
    # Room for the largest only: every call still finds its component on the device.
    pipe.enable_model_cpu_offload("cpu", max_resident_bytes=max(probe.sizes.values()))
    rec = Recorder(pipe.offload)
    _tasks(pipe)
    assert all(name in resident for name, resident in rec.calls)


def test_components_partition_the_official_weights():
    with torch.device("meta"):
        model = Cheers(CheersConfig.official())
    comps = components(model)
    owners: dict[int, str] = {}
    for c in comps:
        for m in c.modules:
            for t in [*model.get_submodule(m).parameters(), *model.get_submodule(m).buffers()]:
                assert owners.setdefault(id(t), c.name) == c.name  # in one component only
    total = {id(t): t.numel() for t in [*model.parameters(), *model.buffers()]}
    resident = sum(n for i, n in total.items() if i not in owners)
    # What stays on the device is small: the ViT's patch and position embeddings, the
    # projectors, norms and the latent statistics.
    assert resident / sum(total.values()) < 0.05


def test_offload_twice_is_refused_and_remove_restores():
    pipe = CheersPipeline.from_pretrained(MODEL)
    offload = enable_model_cpu_offload(pipe.model, "cpu")
    with pytest.raises(CheersError, match="already enabled"):
        enable_model_cpu_offload(pipe.model, "cpu")
    offload.remove()
    assert pipe.model.execution_device is None
    enable_model_cpu_offload(pipe.model, "cpu").remove()
