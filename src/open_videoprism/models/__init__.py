"""VideoPrism models, configs and the registry."""

from open_videoprism.models.config import TextConfig, VideoPrismConfig, VisionConfig
from open_videoprism.models.registry import create_model, get_config, list_models, register_config
from open_videoprism.models.videoprism import FactorizedEncoder, TextEncoder, VideoOutput, VideoPrism

__all__ = [
    "FactorizedEncoder",
    "TextConfig",
    "TextEncoder",
    "VideoOutput",
    "VideoPrism",
    "VideoPrismConfig",
    "VisionConfig",
    "create_model",
    "get_config",
    "list_models",
    "register_config",
]
