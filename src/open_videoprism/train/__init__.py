"""The training engine: config, optimisers, schedules, checkpoints, logging, DDP, the loop.

>>> from open_videoprism.train import load_config, train
>>> cfg = load_config("configs/stage1-tiny.yaml", ["steps=50"])
"""

from open_videoprism.train.config import TrainConfig, load_config
from open_videoprism.train.engine import Trainer, TrainResult, build_objective, train

__all__ = ["TrainConfig", "TrainResult", "Trainer", "build_objective", "load_config", "train"]
