"""``videoprism reproduce``: the whole recipe in miniature, with the paper's ablations and a report.

Generates the synthetic appearance/motion benchmark, pretrains stage 1 (video-text contrastive) and
stage 2 (masked video modelling with global-local distillation and token shuffling) plus the stage-2
ablations of the paper (Fig. 4 / Table 26), evaluates every checkpoint frozen (attentive probes on the
appearance and the motion task, zero-shot retrieval and classification for the video-text model), and
writes ``OUT/report.md`` with tables and plots.

Every step writes into its own folder and is skipped when it already finished, so an interrupted
``reproduce`` continues where it stopped (and a finished one only rewrites the report).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from open_videoprism.errors import UserError

log = logging.getLogger(__name__)

DONE = ".done.json"


@dataclass(frozen=True)
class Preset:
    clips: int
    long_videos: int
    steps1: int
    steps2: int
    probe_epochs: int


PRESETS = {
    # `--preset smoke` is the CI form: every step runs, the numbers mean little.
    "smoke": Preset(clips=60, long_videos=4, steps1=12, steps2=8, probe_epochs=5),
    "quick": Preset(clips=1200, long_videos=8, steps1=1000, steps2=400, probe_epochs=60),
    "full": Preset(clips=4000, long_videos=24, steps1=2000, steps2=1000, probe_epochs=100),
}


@dataclass(frozen=True)
class Variant:
    """One stage-2 run: the paper's row name and its config overrides."""

    name: str
    label: str
    overrides: tuple[str, ...] = ()


STAGE2_VARIANTS = {
    "full": Variant("stage2", "Stage 2 (full: BEVT 0.65, global distillation, token shuffling)"),
    "no-shuffle": Variant("stage2-no-shuffle", "Stage 2 w/o token shuffling", ("objective.shuffle=false",)),
    "no-global": Variant("stage2-no-global", "Stage 2 w/o global distillation", ("objective.global_distillation=false",)),
    "local-only": Variant(
        "stage2-local-only",
        "Stage 2 token-wise only (Fig. 4 'two-stage')",
        ("objective.shuffle=false", "objective.global_distillation=false"),
    ),
    "tube": Variant("stage2-tube", "Stage 2 with tube masking", ("objective.mask.type=tube",)),
}
DEFAULT_ABLATIONS = ("no-shuffle", "no-global")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run both pretraining stages, the paper's stage-2 ablations and frozen evaluation on generated data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/reproduce", help="output folder (default: runs/reproduce)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="size of the run: smoke (seconds, CI), quick (default, minutes on 2 cores), full")
    p.add_argument("--ablations", default=",".join(DEFAULT_ABLATIONS),
                   help=f"stage-2 ablations to run besides the full model, comma-separated from "
                        f"{', '.join(k for k in STAGE2_VARIANTS if k != 'full')}; 'all' or 'none' "
                        f"(default: {','.join(DEFAULT_ABLATIONS)})")
    p.add_argument("--clips", type=int, help="synthetic clips (overrides the preset)")
    p.add_argument("--steps1", type=int, help="stage-1 steps (overrides the preset)")
    p.add_argument("--steps2", type=int, help="stage-2 steps per run (overrides the preset)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and every run")
    p.add_argument("--force", action="store_true", help="redo every step instead of skipping finished ones")
    p.set_defaults(func=run)


def _ablations(text: str) -> list[str]:
    if text == "all":
        return [k for k in STAGE2_VARIANTS if k != "full"]
    if text in ("", "none"):
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in STAGE2_VARIANTS or n == "full"]
    if unknown:
        raise UserError(f"--ablations: unknown {', '.join(unknown)}; choose from "
                        f"{', '.join(k for k in STAGE2_VARIANTS if k != 'full')}, 'all' or 'none'")
    return names


class _Steps:
    """Runs named steps once.

    A finished step leaves ``DONE`` in its folder with its timing and the run's settings; a step is
    skipped only when its marker holds the same settings (a changed preset or seed redoes it, in a
    cleared folder, so no stale result or feature cache survives).
    """

    def __init__(self, settings: dict, force: bool) -> None:
        self.settings = settings
        self.force = force
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, folder: Path, fn: Callable[[], None]) -> None:
        marker = folder / DONE
        done = json.loads(marker.read_text()) if marker.exists() else None
        if done is not None and done.get("settings") == self.settings and not self.force:
            self.timings[name] = done.get("seconds", 0.0)
            log.info("reproduce: %s already done (%s)", name, folder)
            return
        if folder.exists():
            shutil.rmtree(folder)
        log.info("reproduce: %s ...", name)
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"step": name, "seconds": round(seconds, 1), "settings": self.settings}))
        self.timings[name] = seconds


def _changed(folder: Path, settings: dict) -> bool:
    """Whether ``folder`` was finished with other settings."""
    marker = folder / DONE
    return marker.exists() and json.loads(marker.read_text()).get("settings") != settings


def _cli(argv: Sequence[object]) -> None:
    from open_videoprism.cli.main import main

    rc = main([str(a) for a in argv])
    if rc:
        raise UserError(f"reproduce: step `videoprism {' '.join(map(str, argv[:1]))}` failed (exit {rc}); see the messages above")


def _random_checkpoint(path: Path, seed: int) -> None:
    import torch

    from open_videoprism.checkpoints import save_checkpoint
    from open_videoprism.models import create_model

    torch.manual_seed(seed)
    model = create_model("videoprism_lvt_test_tiny")
    save_checkpoint(path, model.state_dict(), model.cfg, {"source": "random init"})


def run(args: argparse.Namespace) -> int:
    from open_videoprism.train.config import recipe_path

    preset = PRESETS[args.preset]
    clips = args.clips or preset.clips
    steps1 = args.steps1 or preset.steps1
    steps2 = args.steps2 or preset.steps2
    ablations = _ablations(args.ablations)
    out = Path(args.out)
    data, runs, evals = out / "data", out / "runs", out / "eval"
    settings = {"preset": args.preset, "clips": clips, "long videos": preset.long_videos, "stage-1 steps": steps1,
                "stage-2 steps": steps2, "probe epochs": preset.probe_epochs, "seed": args.seed}
    if args.force or _changed(data, settings):
        # Everything downstream of the data depends on it: start the runs and evaluations afresh.
        for sub in (runs, evals):
            shutil.rmtree(sub, ignore_errors=True)
    step = _Steps(settings, args.force)
    no_progress = ["--no-progress"]

    step("synth", data, lambda: _cli(["synth", data, "--clips", clips, "--long", preset.long_videos, "--seed", args.seed]))
    step("random", runs / "random", lambda: _random_checkpoint(runs / "random" / "model.safetensors", args.seed))
    step("stage1", runs / "stage1", lambda: _cli(
        ["pretrain", "--config", recipe_path("stage1-tiny"), "--data", data / "pretrain.jsonl", "--out", runs / "stage1",
         "--steps", steps1, f"seed={args.seed}", *no_progress]))
    variants = [STAGE2_VARIANTS["full"]] + [STAGE2_VARIANTS[a] for a in ablations]
    for v in variants:
        step(v.name, runs / v.name, partial(_cli,
            ["pretrain", "--config", recipe_path("stage2-tiny"), "--data", data / "pretrain.jsonl", "--out", runs / v.name,
             "--teacher", runs / "stage1", "--steps", steps2, f"seed={args.seed}", *v.overrides, *no_progress]))

    models = {"random": runs / "random" / "model.safetensors", "stage1": runs / "stage1"}
    models.update({v.name: runs / v.name for v in variants})
    epochs = ["--epochs", preset.probe_epochs]
    for name, ckpt in models.items():
        for task, field_ in (("appearance", "label"), ("motion", "motion_label")):
            folder = evals / name / f"probe-{task}"
            step(f"probe {task} {name}", folder, partial(_cli,
                ["eval", "probe", "--checkpoint", ckpt, "--data", data, "--out", folder, "--label-field", field_,
                 "--cache", evals / name / "features", "--seed", args.seed, *epochs]))
        if name in ("random", "stage1"):  # the video-text models
            for task in ("retrieval", "zeroshot"):
                folder = evals / name / task
                step(f"{task} {name}", folder, partial(_cli,
                    ["eval", task, "--checkpoint", ckpt, "--data", data, "--out", folder, "--cache", evals / name / "features"]))

    from open_videoprism.reproduce import write_reproduce_report

    labels = {"random": "Random init (no pretraining)", "stage1": "Stage 1 (video-text contrastive)"}
    labels.update({v.name: v.label for v in variants})
    path = write_reproduce_report(out, labels, settings, step.timings)
    print(f"wrote {path}")
    return 0
