"""``results.json`` of a reproduction study and the paper's claims measured on it.

Schema::

    {"preset": "quick", "seeds": [7, 8, 9],
     "runs": [{"name": "stage1", "seed": 7, "regime": "mixed",
               "metrics": {"appearance_top1": 44.0, "motion_top1": 43.3,
                           "retrieval_t2v_r1": 6.9, "zeroshot_top1": 32.0}}, ...],
     "chance": {"appearance_top1": 6.25, ...},
     "token_stats": [{"name": "stage1", "seed": 7, "within_clip_cos": 0.8, "frame_change": 0.11}, ...],
     "claims": [{"claim": ..., "metric": ..., "a": "stage2", "b": "stage1", "c": null, "d": null, "paper_delta": 8.2,
                 "paper_source": ..., "deltas": [...], "mean": ..., "std": ..., "verdict": ...}, ...]}

Every run has all four metrics; a metric a run is not scored on (probes of a LiT run, text
retrieval of an encoder without a text tower) is ``null``. Deltas are paired by seed: each
seed's ``a - b`` on the same data, so seed-to-seed variation of the data cancels. A claim
about a gain under one condition against another (``"c"``, ``"d"`` not null) measures
``(a - b) - (c - d)`` on each seed.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from open_videoprism.reproduce.runs import RunSpec

# metric key -> (eval folder, key in its metrics.json)
METRICS: dict[str, tuple[str, str]] = {
    "appearance_top1": ("probe-appearance", "top1"),
    "motion_top1": ("probe-motion", "top1"),
    "retrieval_t2v_r1": ("retrieval", "t2v_R@1"),
    "zeroshot_top1": ("zeroshot", "top1"),
}


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a paired difference ``a - b`` of one metric, or, with ``c`` and
    ``d``, as a difference of two gains ``(a - b) - (c - d)``."""

    claim: str
    metric: str
    a: str
    b: str
    paper_delta: float | None
    paper_source: str
    paper_claim: bool = True
    c: str | None = None
    d: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return (self.a, self.b) if self.c is None or self.d is None else (self.a, self.b, self.c, self.d)

    def delta(self, values: Sequence[float | None]) -> float | None:
        """The claim's difference from the values of :attr:`names` (None when one is missing)."""
        v = [x for x in values if x is not None]
        if len(v) < len(values):
            return None
        return v[0] - v[1] - (v[2] - v[3] if len(v) == 4 else 0.0)


CLAIMS: tuple[Claim, ...] = (
    Claim("Stage 2 beats stage 1 on motion (SSv2)", "motion_top1", "stage2", "stage1", 8.2,
          "Fig. 7: SSv2 55.4 -> 63.6"),
    Claim("Stage 2 beats stage 1 on appearance (K400)", "appearance_top1", "stage2", "stage1", 0.4,
          "Fig. 7: K400 83.8 -> 84.2"),
    Claim("Global distillation keeps appearance", "appearance_top1", "stage2", "stage2-no-global", 0.8,
          "Table 26: K400 84.2 vs 83.4 without it"),
    Claim("Token shuffling helps motion", "motion_top1", "stage2", "stage2-no-shuffle", 1.8,
          "Table 26: SSv2 63.6 vs 61.8 without it"),
    Claim("BEVT masking beats tube masking (motion)", "motion_top1", "stage2", "stage2-tube", None,
          "Fig. 6: BEVT above tube in most cases (plotted only)"),
    Claim("Two-stage beats one-stage on motion", "motion_top1", "stage2", "one-stage", 7.7,
          "Fig. 4: SSv2 63.6 vs 55.9"),
    Claim("Two-stage beats one-stage on appearance", "appearance_top1", "stage2", "one-stage", 1.5,
          "Fig. 4: K400 84.2 vs 82.7"),
    Claim("Stage 2 improves zero-shot text-to-video retrieval (LiT on each)", "retrieval_t2v_r1", "stage2-lit",
          "stage1-lit", 2.7, "Fig. 7: MSRVTT ZS T2V R@1 34.3 -> 37.0"),
    Claim("Stage 2 improves zero-shot classification (LiT on each)", "zeroshot_top1", "stage2-lit", "stage1-lit", 0.3,
          "Fig. 7: K400 ZSC 71.0 -> 71.3"),
    # The premise of stage 2 (Sec. 2.1): it teaches what noisy text leaves out, so it should gain more
    # over a stage 1 trained on noisy text than over one whose every caption states the motion.
    Claim("Stage 2 gains more on motion after noisy text than after all-clean captions", "motion_top1", "stage2",
          "stage1", None, "not a paper figure: the premise of stage 2 (Sec. 2.1)", paper_claim=False,
          c="stage2-clean", d="stage1-clean"),
)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable (an unfinished step)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_run_metrics(eval_dir: Path) -> tuple[dict[str, float | None], dict[str, float]]:
    """``(metrics, chance)`` of one run's evaluation folder (missing results are None)."""
    metrics: dict[str, float | None] = {}
    chance: dict[str, float] = {}
    for key, (folder, field) in METRICS.items():
        m = read_json(eval_dir / folder / "metrics.json")
        value = (m or {}).get("metrics", {}).get(field)
        metrics[key] = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        c = (m or {}).get("chance", {}).get(field)
        if isinstance(c, (int, float)):
            chance[key] = float(c)
    return metrics, chance


def read_token_stats(eval_dir: Path) -> dict[str, float] | None:
    """Within-clip similarity and frame-to-frame change of a run's cached test-split tokens
    (:func:`open_videoprism.eval.token_stats.token_stats`); None when the run has none cached."""
    from open_videoprism.eval.features import FeatureCacheError, load_features
    from open_videoprism.eval.token_stats import token_stats

    for folder in sorted((eval_dir / "features").glob("test-*")):
        try:
            feats = load_features(folder)
        except (FeatureCacheError, OSError):
            continue
        tokens = feats.token_tensor()
        frames = feats.meta.get("identity", {}).get("config", {}).get("num_frames")
        if tokens is not None and isinstance(frames, int):
            return {k: round(v, 4) for k, v in token_stats(tokens, frames).items()}
    return None


def verdict(deltas: Sequence[float]) -> str:
    """Whether a paired difference holds beyond its seed-to-seed spread (one standard deviation)."""
    if not deltas:
        return "not measured"
    mean = statistics.fmean(deltas)
    if len(deltas) == 1:
        return f"{'holds' if mean > 0 else 'does not hold'} (1 seed, no spread)"
    std = statistics.stdev(deltas)
    if mean > std:
        return "holds"
    if mean < -std:
        return "reversed"
    return "within the spread"


def measure_claims(runs: list[dict[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
    """Each :data:`CLAIMS` entry with its paired deltas over ``seeds`` (claims whose runs are absent are left out)."""
    by = {(r["name"], r["seed"]): r["metrics"] for r in runs}
    out = []
    for c in CLAIMS:
        deltas = []
        for s in seeds:
            d = c.delta([by.get((n, s), {}).get(c.metric) for n in c.names])
            if d is not None:
                deltas.append(round(d, 4))
        if not any(all((n, s) in by for n in c.names) for s in seeds):
            continue
        out.append({
            "claim": c.claim, "metric": c.metric, "a": c.a, "b": c.b, "c": c.c, "d": c.d, "paper_delta": c.paper_delta,
            "paper_source": c.paper_source, "paper_claim": c.paper_claim, "deltas": deltas,
            "mean": round(statistics.fmean(deltas), 2) if deltas else None,
            "std": round(statistics.stdev(deltas), 2) if len(deltas) > 1 else None,
            "verdict": verdict(deltas),
        })
    return out


def collect_results(out: Path, preset: str, seeds: Sequence[int], specs: Sequence[RunSpec]) -> dict[str, Any]:
    """Gather every run's metrics under ``out`` into the ``results.json`` payload."""
    runs, chance, stats = [], {}, []
    for seed in seeds:
        for spec in specs:
            eval_dir = out / f"seed-{seed}" / "eval" / spec.name
            metrics, ch = read_run_metrics(eval_dir)
            chance.update(ch)
            runs.append({"name": spec.name, "seed": seed, "regime": spec.regime, "metrics": metrics})
            st = read_token_stats(eval_dir) if spec.probe else None
            if st is not None:
                stats.append({"name": spec.name, "seed": seed, **st})
    return {"preset": preset, "seeds": list(seeds), "runs": runs, "chance": chance,
            "claims": measure_claims(runs, seeds), "token_stats": stats}


def summarize(results: dict[str, Any], name: str, metric: str) -> tuple[float, float | None, int] | None:
    """``(mean, std or None, n)`` of one run's metric over the seeds that have it."""
    values = [r["metrics"][metric] for r in results["runs"] if r["name"] == name and r["metrics"].get(metric) is not None]
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None), len(values)


__all__ = ["CLAIMS", "METRICS", "Claim", "collect_results", "measure_claims", "read_run_metrics", "read_token_stats",
           "summarize", "verdict"]
