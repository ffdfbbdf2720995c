"""The reproduction study: data, every run of :func:`~open_videoprism.reproduce.runs.plan`, their
evaluation, for each seed; then ``results.json`` and ``report.md``.

Layout of ``OUT``::

    seed-S/data/               the synthetic benchmark of seed S (videos, manifests, tokenizer)
    seed-S/runs/<run>/         training runs (random: model.safetensors)
    seed-S/eval/<run>/<task>/  metrics.json per evaluation; seed-S/eval/<run>/features: feature cache
    results.json               one entry per run and seed (schema: results.py)
    report.md, *.png           claims, tables, plots

Every step leaves ``.done.json`` with its settings in its folder; a rerun skips the steps
finished with the same settings (an interrupted study continues where it stopped) and redoes
the others in cleared folders, so no stale checkpoint or feature cache survives.
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from open_videoprism.errors import UserError
from open_videoprism.reproduce.runs import PRESETS, REGIMES, WARMUP, Preset, RunSpec, parse_ablations, plan

log = logging.getLogger(__name__)

DONE = ".done.json"
PROBES = (("appearance", "label"), ("motion", "motion_label"))


@dataclass
class ReproduceConfig:
    """Settings of one study (``videoprism reproduce`` options)."""

    out: str = "runs/reproduce"
    preset: str = "quick"
    seed: int = 0
    seeds: int | None = None  # None: the preset's
    ablations: str = ",".join(("no-shuffle", "no-global", "tube"))
    regimes: tuple[str, ...] = REGIMES
    clips: int | None = None
    steps1: int | None = None
    force: bool = False
    progress: bool = False
    # The miniature's models are tiny: a second intra-op thread adds synchronisation, and on a busy
    # machine spinning threads made a stage-2 step 8x slower (4.8 s vs 0.6 s, 2 cores).
    threads: int = 1

    def resolved_preset(self) -> Preset:
        if self.preset not in PRESETS:
            raise UserError(f"--preset: unknown {self.preset!r}; choose from {', '.join(PRESETS)}")
        p = PRESETS[self.preset]
        for name, value in (("--clips", self.clips), ("--steps1", self.steps1), ("--seeds", self.seeds),
                            ("--threads", self.threads)):
            if value is not None and value < 1:
                raise UserError(f"{name} must be >= 1; got {value}")
        if self.clips is not None and self.clips < 12:
            raise UserError(f"--clips must be at least 12 (every split needs clips of several classes); got {self.clips}")
        bad = [r for r in self.regimes if r not in REGIMES]
        if bad or "mixed" not in self.regimes:
            raise UserError(f"--regimes: {', '.join(self.regimes)}; 'mixed' is required, 'clean' optional")
        return Preset(clips=self.clips or p.clips, long_videos=p.long_videos, steps1=self.steps1 or p.steps1,
                      probe_epochs=p.probe_epochs, probe_lr=p.probe_lr, seeds=self.seeds or p.seeds)


class _Steps:
    """Runs named steps once; a step is skipped when its marker holds the same settings."""

    def __init__(self, force: bool) -> None:
        self.force = force
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, folder: Path, settings: dict[str, Any], fn: Callable[[], object]) -> None:
        settings = json.loads(json.dumps(settings))  # as the marker stores it (tuples become lists)
        marker = folder / DONE
        done = _read_json(marker)
        if done is not None and done.get("settings") == settings and not self.force:
            self.timings[name] = float(done.get("seconds", 0.0))
            log.info("reproduce: %s already done", name)
            return
        if folder.exists():
            shutil.rmtree(folder)
        log.info("reproduce: %s ...", name)
        t0 = time.perf_counter()
        fn()
        seconds = time.perf_counter() - t0
        folder.mkdir(parents=True, exist_ok=True)
        from open_videoprism.atomic import write_json

        write_json(marker, {"step": name, "seconds": round(seconds, 1), "settings": settings})
        self.timings[name] = seconds


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def run_steps(spec: RunSpec, preset: Preset) -> int:
    return {"stage1": preset.steps1, "stage2": preset.steps2, "both": preset.steps1 + preset.steps2}[spec.steps]


def _cli(argv: list[Any]) -> None:
    from open_videoprism.cli.main import main

    rc = main([str(a) for a in argv])
    if rc:
        raise UserError(f"reproduce: step `videoprism {argv[0]}` failed (exit {rc}); see the messages above")


def pretrain(recipe: str, *, data: Path, out: Path, overrides: list[str], teacher: str | None, progress: bool) -> None:
    from open_videoprism.train.config import recipe_path

    argv: list[Any] = ["pretrain", "--config", recipe_path(recipe), "--data", data, "--out", out]
    argv += ["--teacher", teacher] if teacher else []
    _cli([*argv, *overrides] + ([] if progress else ["--no-progress"]))


def evaluate(task: str, *, checkpoint: Path, data: Path, out: Path, cache: Path, seed: int, progress: bool,
             label_field: str | None = None, epochs: int | None = None, lr: float | None = None) -> None:
    argv: list[Any] = ["eval", task, "--checkpoint", checkpoint, "--data", data, "--out", out, "--cache", cache,
                       "--seed", seed, "--no-plots"]
    for flag, value in (("--label-field", label_field), ("--epochs", epochs), ("--lr", lr)):
        if value is not None:
            argv += [flag, value]
    _cli(argv)


def _pretrain(spec: RunSpec, preset: Preset, data: Path, runs: Path, seed: int, progress: bool) -> None:
    assert spec.recipe is not None
    steps = run_steps(spec, preset)
    overrides = [f"seed={seed}", f"steps={steps}", f"schedule.warmup_steps={max(1, round(WARMUP[spec.recipe] * steps))}"]
    if spec.init:
        overrides.append(f"model.init={runs / spec.init}")
    if spec.locked:
        overrides.append(f"objective.locked_encoder={runs / spec.locked}")
    pretrain(spec.recipe, data=data / spec.manifest, out=runs / spec.name, overrides=[*overrides, *spec.overrides],
             teacher=str(runs / spec.teacher) if spec.teacher else None, progress=progress)


def _random_model(path: Path, seed: int) -> None:
    import torch

    from open_videoprism.checkpoints import save_checkpoint
    from open_videoprism.models import create_model

    torch.manual_seed(seed)
    model = create_model("videoprism_lvt_test_tiny")
    save_checkpoint(path, model.state_dict(), model.cfg, {"source": "random init"})


def checkpoint_of(spec: RunSpec, runs: Path) -> Path:
    return runs / spec.name / "model.safetensors" if spec.recipe is None else runs / spec.name


def run_seed(cfg: ReproduceConfig, preset: Preset, seed: int, specs: list[RunSpec], step: _Steps) -> None:
    """Data, training and evaluation of one seed."""
    from open_videoprism.data.synthetic import generate

    root = Path(cfg.out) / f"seed-{seed}"
    data, runs, evals = root / "data", root / "runs", root / "eval"
    base = {"preset": cfg.preset, **asdict(preset), "seed": seed}
    step(f"seed {seed}: synth", data, base, lambda: generate(
        data, preset.clips, seed=seed, long_videos=preset.long_videos, workers=2, progress=cfg.progress))
    for spec in specs:
        # A run's settings include those of the runs it starts from, so a changed teacher redoes it.
        settings = {**base, "run": asdict(spec), "steps": run_steps(spec, preset) if spec.recipe else 0}
        if spec.recipe is None:
            fn = lambda s=spec: _random_model(runs / s.name / "model.safetensors", seed)  # noqa: E731
        else:
            fn = lambda s=spec: _pretrain(s, preset, data, runs, seed, cfg.progress)  # noqa: E731
        step(f"seed {seed}: train {spec.name}", runs / spec.name, settings, fn)
        ckpt = checkpoint_of(spec, runs)
        tasks: list[tuple[str, str, dict[str, Any]]] = []
        if spec.probe:
            tasks += [(f"probe-{task}", "probe", {"label_field": field, "epochs": preset.probe_epochs, "lr": preset.probe_lr})
                      for task, field in PROBES]
        if spec.video_text:
            tasks += [("retrieval", "retrieval", {}), ("zeroshot", "zeroshot", {})]
        for folder_name, task, kwargs in tasks:
            folder = evals / spec.name / folder_name
            step(f"seed {seed}: {folder_name} {spec.name}", folder, {**settings, "task": folder_name, **kwargs},
                 partial(evaluate, task, checkpoint=ckpt, data=data, out=folder, cache=evals / spec.name / "features",
                         seed=seed, progress=cfg.progress, **kwargs))


def reproduce(cfg: ReproduceConfig) -> Path:
    """Run the study of ``cfg`` and write ``results.json`` and ``report.md``; returns the report path."""
    from open_videoprism.reproduce.report import write_report
    from open_videoprism.reproduce.results import collect_results

    preset = cfg.resolved_preset()
    specs = plan(parse_ablations(cfg.ablations), cfg.regimes)
    seeds = [cfg.seed + i for i in range(preset.seeds)]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    from open_videoprism.runlock import run_lock

    step = _Steps(cfg.force)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with run_lock(out):  # a second study into the same folder fails at once, naming this one
            for seed in seeds:
                run_seed(cfg, preset, seed, specs, step)
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results = collect_results(out, cfg.preset, seeds, specs)
    results["timing"] = {"wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_mb, 1),
                         "steps": {k: round(v, 1) for k, v in step.timings.items()}}
    from open_videoprism.atomic import write_json

    write_json(out / "results.json", results)
    return write_report(out, results, specs, preset)


__all__ = ["ReproduceConfig", "checkpoint_of", "reproduce", "run_seed"]
