"""open-videoprism: VideoPrism in PyTorch.

>>> import open_videoprism as ovp
>>> model = ovp.load("flax_lvt_base_f16r288_repeated.npz")     # official weights
>>> out = model.encode_video(video)                              # [B, T, 3, H, W] in [0, 1]
>>> out.tokens, out.embedding
>>> model.encode_text(["a video of drumming."], tokenizer="c4_en.model")
"""

from open_videoprism.checkpoints import PUBLIC_CHECKPOINTS, convert, load, save_checkpoint
from open_videoprism.errors import CheckpointError, ConfigError, DataError, InputError, UserError, VideoPrismError
from open_videoprism.models import (
    TextConfig,
    VideoOutput,
    VideoPrism,
    VideoPrismConfig,
    VisionConfig,
    create_model,
    get_config,
    list_models,
)
from open_videoprism.tokenizer import Tokenizer, canonicalize_text

__version__ = "0.1.0"

__all__ = [
    "PUBLIC_CHECKPOINTS",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "InputError",
    "TextConfig",
    "Tokenizer",
    "UserError",
    "VideoOutput",
    "VideoPrism",
    "VideoPrismConfig",
    "VideoPrismError",
    "VisionConfig",
    "canonicalize_text",
    "convert",
    "create_model",
    "get_config",
    "list_models",
    "load",
    "save_checkpoint",
]
