"""The recipe in miniature: both pretraining stages, the paper's ablations, the one-stage baseline,
LiT and frozen evaluation on generated videos, over seeds, with the paper's claims measured.

    from open_videoprism.reproduce import ReproduceConfig, reproduce
    reproduce(ReproduceConfig(out="runs/reproduce", preset="quick", seed=7, seeds=1))
"""

from open_videoprism.reproduce.pipeline import ReproduceConfig, reproduce
from open_videoprism.reproduce.results import CLAIMS, collect_results, measure_claims
from open_videoprism.reproduce.runs import ABLATIONS, PRESETS, Preset, RunSpec, plan

__all__ = ["ABLATIONS", "CLAIMS", "PRESETS", "Preset", "ReproduceConfig", "RunSpec", "collect_results",
           "measure_claims", "plan", "reproduce"]
