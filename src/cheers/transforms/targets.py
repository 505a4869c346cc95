"""Which linear layers a transform touches, by module group (written once for all transforms)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from torch import nn

from cheers.errors import CheersError

# Module names (as in the released checkpoint) of each group's linear layers.
TARGET_GROUPS: dict[str, str] = {
    "llm_attention": r"model\.language_model\.layers\.\d+\.self_attn\.[qkvo]_proj",
    "llm_mlp": r"model\.language_model\.layers\.\d+\.mlp\.(gate|up|down)_proj",
    "semantic_head": r"model\.gen_projector\..+",
    "detail_head": r"model\.hi_projector\..+",
    "vit": r"model\.vision_representation\.encoder\..+",
    "projectors": r"model\.(und_projector|hi_gate|time_embed)\..+",
}

# The repeated blocks (an LLM decoder layer, a ViT encoder layer, a flow-head block) by name:
# what block-wise refinement of quantized layers matches outputs on.
BLOCK = re.compile(r"(.*\.(?:layers|diffusion_head_a)\.\d+|.*\.diffusion_head_b)\..+")


def block_of(name: str) -> str | None:
    """The name of the repeated block holding module ``name``, or None outside one."""
    match = BLOCK.fullmatch(name)
    return None if match is None else match.group(1)


def check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    """``groups`` as a tuple, each a key of :data:`TARGET_GROUPS`.

    Raises:
        CheersError: on an empty list or an unknown group, naming the known ones.
    """
    unknown = [g for g in groups if g not in TARGET_GROUPS]
    if unknown or not groups:
        raise CheersError(
            f"unknown or no target group(s) {unknown or list(groups)}; choose from "
            f"{', '.join(TARGET_GROUPS)}"
        )
    return tuple(groups)


def linear_targets(model: nn.Module, groups: Sequence[str]) -> Iterator[tuple[str, nn.Linear]]:
    """``(name, module)`` of every ``nn.Linear`` in ``groups``, in model order."""
    pattern = re.compile("|".join(f"(?:{TARGET_GROUPS[g]})" for g in check_groups(groups)))
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and pattern.fullmatch(name):
            yield name, module


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` is."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
