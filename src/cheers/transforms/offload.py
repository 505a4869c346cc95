"""Model CPU offload: the large components live on the CPU and visit the accelerator when used.

For a GPU smaller than the model. Each component below (the ones that hold nearly all the
weights) waits on the offload device; a forward pre-hook on its entry modules moves it to the
execution device just before it runs, and moves components used earlier back once the ones on
the device would exceed ``max_resident_bytes`` (by default: one component at a time, as
diffusers' ``enable_model_cpu_offload``). Everything else (norms, embeddings of the ViT, the
latent statistics, the projectors: a few percent of the weights) stays on the execution device.

    >>> offload = enable_model_cpu_offload(pipe.model, "cuda")       # doctest: +SKIP
    >>> pipe("a red circle")                                          # doctest: +SKIP
    >>> offload.release()    # every component back on the CPU         # doctest: +SKIP

A text-to-image step uses the decoder projector, the ViT, the LLM and both flow heads in turn,
so with one component at a time each step moves them all; raise ``max_resident_bytes`` to keep
more of them on the device.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from cheers.errors import CheersError
from cheers.model import Cheers


@dataclass(frozen=True)
class Component:
    """Modules that travel together, and the modules whose call brings them in."""

    name: str
    modules: tuple[str, ...]  # moved together (checkpoint names)
    entries: tuple[str, ...]  # a call of any of these needs the component on the device


def components(model: Cheers) -> list[Component]:
    """The offloaded components of ``model`` (the language model and its embeddings and
    output layer are one: decoding uses all three for every token)."""
    llm = ("model.language_model", "lm_head")
    llm_entries = ("model.language_model", "model.language_model.embed_tokens", "lm_head")
    out = [
        Component("vae_encoder", ("model.vae_model.encoder",), ("model.vae_model.encoder",)),
        Component("vae_decoder", ("model.vae_model.decoder",), ("model.vae_model.decoder",)),
        Component(
            "vit",
            ("model.vision_representation.encoder",),
            ("model.vision_representation.encoder",),
        ),
        Component("llm", llm, llm_entries),
        Component("semantic_head", ("model.gen_projector",), ("model.gen_projector",)),
        Component("detail_head", ("model.hi_projector",), ("model.hi_projector",)),
    ]
    if model.model.vae_decoder_projector is not None:
        name = "model.vae_decoder_projector"
        out.insert(2, Component("decoder_projector", (name,), (name,)))
    return out


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


def _nbytes(modules: list[nn.Module]) -> int:
    seen: dict[int, int] = {}
    for m in modules:
        for t in _tensors(m):
            seen[id(t)] = t.numel() * t.element_size()
    return sum(seen.values())


class ModelOffload:
    """The offload state of one model: which components are on the execution device."""

    def __init__(
        self,
        model: Cheers,
        device: str | torch.device,
        offload_device: str | torch.device = "cpu",
        max_resident_bytes: int = 0,
    ) -> None:
        self.model = model
        self.device = torch.device(device)
        self.offload_device = torch.device(offload_device)
        self.max_resident_bytes = max_resident_bytes
        self.components = {c.name: c for c in components(model)}
        self._modules = {
            n: [model.get_submodule(m) for m in c.modules] for n, c in self.components.items()
        }
        self.sizes = {n: _nbytes(ms) for n, ms in self._modules.items()}
        self.resident: OrderedDict[str, None] = OrderedDict()  # on the device, oldest first
        self._hooks = []

    # ------------------------------------------------------------------ moves
    def _move(self, name: str, to_device: bool) -> None:
        """Component ``name`` to the execution device (True) or the offload device."""
        device = self.device if to_device else self.offload_device
        for module in self._modules[name]:
            module.to(device)

    def activate(self, name: str) -> None:
        """Bring component ``name`` to the execution device (evicting older ones as needed)."""
        if name in self.resident:
            self.resident.move_to_end(name)
            return
        while self.resident and (
            sum(self.sizes[n] for n in self.resident) + self.sizes[name] > self.max_resident_bytes
        ):
            old, _ = self.resident.popitem(last=False)
            self._move(old, False)
        self._move(name, True)
        self.resident[name] = None

    def release(self) -> None:
        """Every component back on the offload device."""
        for name in list(self.resident):
            self._move(name, False)
        self.resident.clear()

    # ------------------------------------------------------------------ set-up
    def attach(self) -> ModelOffload:
        """Place the model (resident parts on the device, components off it) and hook it."""
        if self.model.execution_device is not None:
            raise CheersError(
                "model offload is already enabled on this model; call remove() on it first"
            )
        offloaded = {id(t) for ms in self._modules.values() for m in ms for t in _tensors(m)}
        for module in self.model.modules():  # everything not in a component: to the device
            for param in module._parameters.values():
                if param is not None and id(param) not in offloaded:
                    param.data = param.data.to(self.device)
            for key, buf in module._buffers.items():
                if buf is not None and id(buf) not in offloaded:
                    module._buffers[key] = buf.to(self.device)
        for name in self.components:
            self._move(name, False)
        for name, comp in self.components.items():
            for entry in comp.entries:
                hook = self.model.get_submodule(entry).register_forward_pre_hook(
                    lambda _module, _args, name=name: self.activate(name)
                )
                self._hooks.append(hook)
        self.model.execution_device = self.device
        return self

    def remove(self) -> None:
        """Remove the hooks and put the whole model on the execution device."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        self.resident.clear()
        self.model.to(self.device)
        self.model.execution_device = None


def enable_model_cpu_offload(
    model: Cheers,
    device: str | torch.device = "cuda",
    max_resident_bytes: int = 0,
) -> ModelOffload:
    """Offload ``model``'s large components to the CPU, running each on ``device`` when used.

    ``max_resident_bytes``: how many bytes of components may stay on ``device`` at once (the
    least recently used leave first); 0 keeps one at a time.
    """
    return ModelOffload(model, device, max_resident_bytes=max_resident_bytes).attach()


__all__ = ["Component", "ModelOffload", "components", "enable_model_cpu_offload"]
