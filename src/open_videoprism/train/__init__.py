"""The training engine: config, optimisers, schedules, checkpoints, logging, DDP, the loop.

>>> from open_videoprism.train import Trainer, build_objective, load_config
>>> from open_videoprism.train.data import build_stream_factory
>>> cfg = load_config("configs/stage1-tiny.yaml", ["steps=50"])
>>> Trainer(cfg, build_objective(cfg), build_stream_factory(cfg, "random"), "runs/demo").fit()
"""

from open_videoprism.train.config import TrainConfig, load_config
from open_videoprism.train.engine import Trainer, TrainResult, build_objective

__all__ = ["TrainConfig", "TrainResult", "Trainer", "build_objective", "load_config"]
