"""Exceptions raised by cheers.

Every error names the problem and how to fix it. They all derive from :class:`CheersError`
(itself a ``ValueError``), so callers can catch one type.
"""

from __future__ import annotations


class CheersError(ValueError):
    """Base class of every error cheers raises on bad input."""


class ConfigError(CheersError):
    """A configuration is malformed or breaks a coupling the architecture relies on."""


class CheckpointError(CheersError):
    """A model folder or weight file is missing, unreadable or does not match the config."""


class ImageError(CheersError):
    """An image cannot be read or converted to RGB."""


class PromptError(CheersError):
    """A prompt is malformed or longer than the model's context."""


class ContextLengthError(PromptError):
    """A request does not fit the model's context; the message says how much room is left."""


class DataError(CheersError):
    """A training sample or data file is malformed; the message names the file and line."""


class SamplerError(CheersError):
    """A sampler name, its settings or a sampling option is invalid."""


class NumericalError(CheersError):
    """The model computed NaN or infinity: broken weights or a dtype that overflows."""
