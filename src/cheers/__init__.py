"""cheers: Cheers (arXiv 2603.12793), a unified multimodal model, in plain PyTorch."""

from cheers.checkpoint import load_model, save_model
from cheers.config import CheersConfig, TextConfig, VAEConfig, VisionConfig
from cheers.errors import (
    CheckpointError,
    CheersError,
    ConfigError,
    ContextLengthError,
    DataError,
    ImageError,
    NumericalError,
    PromptError,
    SamplerError,
)
from cheers.model import Cheers
from cheers.pipeline import CheersPipeline, ImagePipelineOutput
from cheers.tokenizer import CheersTokenizer

__all__ = [
    "CheckpointError",
    "Cheers",
    "CheersConfig",
    "CheersError",
    "CheersPipeline",
    "CheersTokenizer",
    "ConfigError",
    "ContextLengthError",
    "DataError",
    "ImageError",
    "ImagePipelineOutput",
    "NumericalError",
    "PromptError",
    "SamplerError",
    "TextConfig",
    "VAEConfig",
    "VisionConfig",
    "load_model",
    "save_model",
]
__version__ = "0.1.0"
