"""The sampling settings of each benchmark, written once.

Published scores of unified models are hard to reproduce mainly because the settings are not
stated: the authors' repository samples with 80 steps and time shift α = 0.5 in its README,
with α = 1.0 in its GenEval scripts and with 250 steps for DPG-Bench. Every evaluation command
takes its defaults from :data:`SETTINGS` and records the settings it used, and
``--settings NAME`` applies a row (see ``docs/evaluation.md``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cheers.errors import CheersError
from cheers.samplers import DEFAULTS

_STEPS, _GUIDANCE, _SHIFT = (
    DEFAULTS.num_inference_steps,
    DEFAULTS.guidance_scale,
    DEFAULTS.time_shift,
)


@dataclass(frozen=True)
class Settings:
    """How images are sampled for one benchmark."""

    steps: int
    guidance: float | None  # None: no classifier-free guidance
    time_shift: float
    images_per_prompt: int
    seed: int = 0
    prompt_variant: str = "original"  # "long": the rewritten (longer) prompts of a benchmark
    dtype: str = "bfloat16 on CUDA, float32 on CPU"

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


SETTINGS: dict[str, Settings] = {
    # The model's own defaults (the authors' README): what `cheers generate` uses.
    "default": Settings(_STEPS, _GUIDANCE, _SHIFT, images_per_prompt=1),
    # GenEval: 4 images per prompt, α = 1.0 as in the authors' GenEval scripts.
    "geneval": Settings(_STEPS, _GUIDANCE, time_shift=1.0, images_per_prompt=4),
    "geneval-long": Settings(
        _STEPS, _GUIDANCE, time_shift=1.0, images_per_prompt=4, prompt_variant="long"
    ),
    # DPG-Bench: a 2×2 grid of 4 images per prompt, 250 steps as in the authors' scripts.
    "dpg": Settings(steps=250, guidance=_GUIDANCE, time_shift=_SHIFT, images_per_prompt=4),
    # The Shapes benchmarks run on a CPU: fewer steps.
    "shapes-gen": Settings(steps=20, guidance=_GUIDANCE, time_shift=_SHIFT, images_per_prompt=4),
    "shapes-edit": Settings(steps=20, guidance=_GUIDANCE, time_shift=_SHIFT, images_per_prompt=1),
}


def settings(name: str) -> Settings:
    """The row ``name`` of :data:`SETTINGS`.

    Raises:
        CheersError: on an unknown name, listing the known ones.
    """
    if name not in SETTINGS:
        raise CheersError(f"unknown settings {name!r}; choose one of {', '.join(SETTINGS)}")
    return SETTINGS[name]


def markdown_table() -> str:
    """:data:`SETTINGS` as the Markdown table of ``docs/evaluation.md``."""
    rows = [
        "| settings | steps | guidance | time shift α | images per prompt | seed | prompts "
        "| dtype |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in SETTINGS.items():
        rows.append(
            f"| `{name}` | {s.steps} | {s.guidance} | {s.time_shift} | {s.images_per_prompt} "
            f"| {s.seed} | {s.prompt_variant} | {s.dtype} |"
        )
    return "\n".join(rows)


__all__ = ["SETTINGS", "Settings", "markdown_table", "settings"]
