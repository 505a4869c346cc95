"""Initialise a Cheers model from its pretrained *components*, as training from scratch does.

The paper assembles Cheers from three public checkpoints: a Qwen2 language model
(Qwen2.5-1.5B-Instruct), a SigLIP2 vision tower (siglip2-so400m-patch16-512, the fixed-resolution
variant) and the FLUX.2 autoencoder. Each loader here reads one of them in its *own* published
format, checks it against the Cheers config, and copies its tensors into the matching part of a
:class:`~cheers.model.Cheers`:

====================  ==========================================  ===============================
loader                source keys                                 model keys
====================  ==========================================  ===============================
load_language_model   ``model.*``, ``lm_head.weight``             ``model.language_model.*``,
                                                                  ``lm_head.weight``
load_vision_model     ``vision_model.*``                          ``model.vision_representation.*``
load_vae              ``encoder.*``, ``decoder.*``, ``bn.*``      ``model.vae_model.*`` and
                                                                  ``model.vae_decoder_projector.*``
====================  ==========================================  ===============================

Every loader validates *everything* (config fields, key sets, shapes) before it writes a single
tensor, so a failed call leaves the model as it was. The modules that have no pretrained
counterpart (``und_projector``, ``time_embed``, ``gen_projector``, ``hi_gate``, ``hi_projector``)
keep their initialisation; training learns them.
"""

from __future__ import annotations

import os

from cheers.errors import CheckpointError
from cheers.model import Cheers
from cheers.training.components.common import LoadReport
from cheers.training.components.language import load_language_model
from cheers.training.components.vae import load_vae
from cheers.training.components.vision import load_vision_model

__all__ = [
    "LoadReport",
    "init_from_components",
    "load_language_model",
    "load_vae",
    "load_vision_model",
]


# --------------------------------------------------------------------------------- all three
def init_from_components(
    model: Cheers,
    *,
    language_model: str | os.PathLike[str] | None = None,
    vision_model: str | os.PathLike[str] | None = None,
    vae: str | os.PathLike[str] | None = None,
) -> list[LoadReport]:
    """Load each given component checkpoint into ``model``; returns one report per component.

    Order: language model, vision tower, VAE. Each loader validates before writing, but a
    later component's failure does not undo an earlier component's load. Modules without a
    pretrained counterpart (projectors, flow heads, gate, time embedder) are left untouched.
    """
    if language_model is None and vision_model is None and vae is None:
        raise CheckpointError(
            "init_from_components got no checkpoint; pass language_model=, vision_model= "
            "and/or vae="
        )
    reports: list[LoadReport] = []
    if language_model is not None:
        reports.append(load_language_model(model, language_model))
    if vision_model is not None:
        reports.append(load_vision_model(model, vision_model))
    if vae is not None:
        reports.append(load_vae(model, vae))
    return reports
