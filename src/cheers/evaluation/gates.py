"""Gate heat-maps (the paper's Fig. 5): how much patch detail each token takes at each step.

The gate (:class:`~cheers.modules.heads.HiGate`, docs/architecture.md §8) mixes the ViT patch
embeddings into the semantic head's output as ``LayerNorm(low + g(low)·high)`` with one scalar
``g`` per token. :class:`GateRecorder` records ``g`` of every token at every model evaluation
with forward hooks, so no pipeline or model code changes to use it::

    >>> with GateRecorder(pipe) as gates:                                 # doctest: +SKIP
    ...     images = pipe.text_to_image("a red circle", generator=0).images
    >>> maps = gates.maps(images=1)             # (evaluations, images, G, G) and t per row
    >>> write_gate_maps(maps, "runs/gates", images)                       # doctest: +SKIP

:func:`gate_strip` draws the maps as a PNG strip (one tile per step, one row per image, a
colour scale below) and :class:`GateMaps` saves the raw tensor as safetensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from cheers._files import atomic_write
from cheers.errors import CheersError

PNG_NAME = "gates.png"
TENSOR_NAME = "gates.safetensors"
#: viridis at 0, ¼, ½, ¾, 1: a perceptually even scale that reads in grey too.
_VIRIDIS = np.array(
    [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64
)
_LABEL = 12  # height of a line of PIL's default font
_BAR = 10
_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)


@dataclass(frozen=True)
class GateMaps:
    """Recorded gate values: ``gates`` (steps, images, G, G) in the image's token grid
    (row-major, as :func:`cheers.layouts.tokens_to_feature_map` lays tokens out) and the time
    ``t`` (steps,) of each model evaluation (0 = noise, 1 = image)."""

    gates: torch.Tensor
    t: torch.Tensor

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write both tensors to a safetensors file, atomically."""
        from safetensors.torch import save

        data = save(
            {"gates": self.gates.contiguous(), "t": self.t.contiguous()},
            metadata={"gates": "steps images h w", "t": "steps"},
        )
        return atomic_write(Path(path), lambda f: f.write(data))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GateMaps:
        """Read a file written by :meth:`save`."""
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        return cls(tensors["gates"], tensors["t"])


def _gate_owner(obj: Any) -> nn.Module:
    """The module holding ``hi_gate`` and ``time_embed``: from a pipeline or a model."""
    for _ in range(3):
        if hasattr(obj, "hi_gate") and hasattr(obj, "time_embed"):
            return obj
        obj = getattr(obj, "model", None)
    raise CheersError("no gate found: pass a CheersPipeline or a Cheers model to GateRecorder")


class GateRecorder:
    """Records the gate value ``g(low)`` of every token at every model evaluation.

    A context manager: forward hooks on the gate's MLP and the time embedder are attached on
    entry and removed on exit. Each evaluation adds one entry of ``(rows, G·G)`` values: with
    classifier-free guidance the rows are the conditional ones, then their unconditional twins
    (``maps(images=B)`` keeps the first ``B``). A skipped evaluation (``step_cache``) records
    nothing; a sampler with several evaluations per step records each.
    """

    def __init__(self, pipe_or_model: Any) -> None:
        self._owner = _gate_owner(pipe_or_model)
        self._handles: list[Any] = []
        self._pending_t: float | None = None
        self.values: list[torch.Tensor] = []  # per evaluation: (rows, G·G), float32 on the CPU
        self.times: list[float] = []

    def __enter__(self) -> GateRecorder:
        def on_time(_module: nn.Module, args: tuple[Any, ...], _output: Any) -> None:
            self._pending_t = float(args[0].reshape(-1)[0])

        def on_gate(_module: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> None:
            # output: (rows, G·G, 1), one scalar per token.
            self.values.append(output.detach().float().squeeze(-1).cpu())
            self.times.append(float("nan") if self._pending_t is None else self._pending_t)

        self._handles = [
            self._owner.time_embed.register_forward_hook(on_time),
            self._owner.hi_gate.gate.register_forward_hook(on_gate),
        ]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def maps(self, images: int | None = None) -> GateMaps:
        """The recording as :class:`GateMaps`: the first ``images`` rows of every evaluation
        (default: the rows of the first evaluation), each laid out on its G×G token grid.

        Raises:
            CheersError: when nothing was recorded (no image was generated, or the model has
                its detail injection off) or an evaluation had fewer rows than ``images``.
        """
        if not self.values:
            raise CheersError(
                "no gate values were recorded: record around an image generation (text_to_image "
                "or edit) of a model with detail injection on (config.detail_injection)"
            )
        rows = self.values[0].shape[0] if images is None else images
        if any(v.shape[0] < rows for v in self.values):
            raise CheersError(f"an evaluation had fewer than {rows} rows; pass images=<count>")
        grid = math.isqrt(self.values[0].shape[1])
        stacked = torch.stack([v[:rows] for v in self.values])
        gates = rearrange(stacked, "s b (h w) -> s b h w", h=grid)
        return GateMaps(gates, torch.tensor(self.times, dtype=torch.float32))


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] → uint8 RGB (…, 3) on the viridis scale (linear between 5 anchors)."""
    x = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    lo = np.minimum(np.floor(x).astype(int), len(_VIRIDIS) - 2)
    frac = (x - lo)[..., None]
    rgb = _VIRIDIS[lo] * (1 - frac) + _VIRIDIS[lo + 1] * frac
    return np.round(rgb).astype(np.uint8)


def shown_steps(steps: int, max_tiles: int) -> list[int]:
    """At most ``max_tiles`` evaluation indices, evenly spread, the first and last included."""
    if steps <= max_tiles:
        return list(range(steps))
    return sorted(set(np.linspace(0, steps - 1, max_tiles).round().astype(int).tolist()))


def strip_size(rows: int, tiles: int, tile: int, gap: int, with_images: bool) -> tuple[int, int]:
    """``(width, height)`` of :func:`gate_strip`'s picture."""
    cols = tiles + int(with_images)
    return gap + cols * (tile + gap), _LABEL + rows * (tile + gap) + gap + _BAR + _LABEL


def gate_strip(
    maps: GateMaps,
    images: Sequence[Image.Image] | None = None,
    *,
    tile: int = 64,
    gap: int = 4,
    max_tiles: int = 16,
) -> Image.Image:
    """A heat-map strip: one row per image, one ``tile``-pixel tile per shown step (labelled
    with its t), the image itself first when given, and a colour bar from the lowest to the
    highest shown gate value below. Tiles are the G×G maps scaled up by nearest neighbour, so
    each token is a square block; one colour scale serves every tile.

    The picture is :func:`strip_size` big.

    Raises:
        CheersError: on a non-positive size or a count of images that does not match.
    """
    if tile < 1 or gap < 0 or max_tiles < 1:
        raise CheersError("tile and max_tiles must be positive, gap not negative")
    n_steps, n_rows = maps.gates.shape[:2]
    if images is not None and len(images) != n_rows:
        raise CheersError(f"{len(images)} images for gate maps of {n_rows}; pass one per row")
    steps = shown_steps(n_steps, max_tiles)
    values = maps.gates[steps].double().numpy()  # (tiles, rows, G, G)
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) if hi > lo else np.full_like(values, 0.5)
    width, height = strip_size(n_rows, len(steps), tile, gap, images is not None)
    picture = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    first = int(images is not None)
    for c, step in enumerate(steps):
        x = gap + (first + c) * (tile + gap)
        draw.text((x, 0), f"t={float(maps.t[step]):.2f}", fill=_TEXT, font=font)
        for r in range(n_rows):
            heat = Image.fromarray(colormap(scaled[c, r]))
            picture.paste(
                heat.resize((tile, tile), Image.Resampling.NEAREST), (x, _row_y(r, tile, gap))
            )
    for r, image in enumerate(images or []):
        picture.paste(image.convert("RGB").resize((tile, tile)), (gap, _row_y(r, tile, gap)))
    bar_y = _row_y(n_rows, tile, gap) + gap
    bar_w = width - 2 * gap
    ramp = colormap(np.linspace(0.0, 1.0, bar_w))[None].repeat(_BAR, axis=0)
    picture.paste(Image.fromarray(ramp), (gap, bar_y))
    draw.text((gap, bar_y + _BAR), f"gate {lo:.3g}", fill=_TEXT, font=font)
    right = f"{hi:.3g}"
    draw.text(
        (width - gap - draw.textlength(right, font=font), bar_y + _BAR),
        right,
        fill=_TEXT,
        font=font,
    )
    return picture


def _row_y(r: int, tile: int, gap: int) -> int:
    return _LABEL + r * (tile + gap)


def write_gate_maps(
    maps: GateMaps,
    folder: str | os.PathLike[str],
    images: Sequence[Image.Image] | None = None,
    **strip_options: Any,
) -> tuple[Path, Path]:
    """Write ``gates.png`` (:func:`gate_strip`) and ``gates.safetensors`` into ``folder``."""
    folder = Path(folder)
    strip = gate_strip(maps, images, **strip_options)
    png = atomic_write(folder / PNG_NAME, lambda f: strip.save(f, format="PNG"))
    return png, maps.save(folder / TENSOR_NAME)


__all__ = [
    "GateMaps",
    "GateRecorder",
    "colormap",
    "gate_strip",
    "shown_steps",
    "strip_size",
    "write_gate_maps",
]
