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
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from open_videoprism.errors import UserError
from open_videoprism.reproduce.results import read_json
from open_videoprism.reproduce.runs import DEFAULT_ABLATIONS, PRESETS, REGIMES, Preset, RunSpec, parse_ablations, plan

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
    ablations: str = ",".join(DEFAULT_ABLATIONS)
    regimes: tuple[str, ...] = REGIMES
    clips: int | None = None
    steps1: int | None = None
    force: bool = False
    progress: bool = False
    # The miniature's models are tiny: a second intra-op thread adds synchronisation, and on a busy
    # machine spinning threads made a stage-2 step 8x slower (4.8 s vs 0.6 s, 2 cores).
    threads: int = 1
    workers: int = 2  # independent steps run in this many processes (one per core suits the tiny models)

    def resolved_preset(self) -> Preset:
        if self.preset not in PRESETS:
            raise UserError(f"--preset: unknown {self.preset!r}; choose from {', '.join(PRESETS)}")
        p = PRESETS[self.preset]
        for name, value in (("--clips", self.clips), ("--steps1", self.steps1), ("--seeds", self.seeds),
                            ("--threads", self.threads), ("--workers", self.workers)):
            if value is not None and value < 1:
                raise UserError(f"{name} must be >= 1; got {value}")
        if self.clips is not None and self.clips < 12:
            raise UserError(f"--clips must be at least 12 (every split needs clips of several classes); got {self.clips}")
        bad = [r for r in self.regimes if r not in REGIMES]
        if bad or "mixed" not in self.regimes:
            raise UserError(f"--regimes: {', '.join(self.regimes)}; 'mixed' is required, 'clean' optional")
        pretrain = p.pretrain_clips
        if self.clips is not None and pretrain is not None:  # --clips keeps the preset's pretraining share
            pretrain = max(1, round(self.clips * pretrain / p.clips))
        return replace(p, clips=self.clips or p.clips, steps1=self.steps1 or p.steps1, seeds=self.seeds or p.seeds,
                       pretrain_clips=pretrain)


@dataclass
class Job:
    """One step of the study: ``fn()`` fills ``folder``; it runs after the jobs named in ``deps``."""

    name: str
    folder: Path
    settings: dict[str, Any]
    fn: Callable[[], Any]
    deps: tuple[str, ...] = ()


def _finished(job: Job) -> float | None:
    """The recorded seconds of a job finished with the same settings, else None."""
    done = read_json(job.folder / DONE)
    if done is not None and done.get("settings") == json.loads(json.dumps(job.settings)):
        return float(done.get("seconds", 0.0))
    return None


def _run_job(job: Job, threads: int | None = None) -> float:
    """Run ``job`` in a cleared folder and leave its marker; returns its seconds."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from open_videoprism.atomic import write_json

    if job.folder.exists():
        shutil.rmtree(job.folder)
    log.info("reproduce: %s ...", job.name)
    t0 = time.perf_counter()
    job.fn()
    seconds = time.perf_counter() - t0
    job.folder.mkdir(parents=True, exist_ok=True)
    write_json(job.folder / DONE, {"step": job.name, "seconds": round(seconds, 1),
                                   "settings": json.loads(json.dumps(job.settings))})
    return seconds


def execute(jobs: list[Job], workers: int, threads: int, force: bool) -> dict[str, float]:
    """Run the jobs not yet finished, each after its dependencies; ``workers`` > 1 runs independent
    jobs in that many processes. Returns every job's seconds (recorded ones for skipped jobs)."""
    timings: dict[str, float] = {}
    todo: dict[str, Job] = {}
    for job in jobs:
        # A job is redone when one it depends on is redone: its inputs change.
        seconds = None if force or any(d in todo for d in job.deps) else _finished(job)
        if seconds is None:
            todo[job.name] = job
        else:
            timings[job.name] = seconds
            log.info("reproduce: %s already done", job.name)
    if workers <= 1:
        for job in todo.values():
            timings[job.name] = _run_job(job)
        return timings
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    running: dict[Any, str] = {}
    # spawn: forking a process that already holds torch's thread pools can deadlock.
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        while todo or running:
            for name, job in list(todo.items()):
                if len(running) < workers and not any(d in todo or d in running.values() for d in job.deps):
                    running[pool.submit(_run_job, job, threads)] = name
                    del todo[name]
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                timings[running.pop(future)] = future.result()  # a failed step ends the study here
    return timings


def run_steps(spec: RunSpec, preset: Preset) -> int:
    return {"stage1": preset.steps1, "stage2": preset.steps2, "both": preset.steps1 + preset.steps2}[spec.steps]


def evaluate(task: str, *, checkpoint: Path, data: Path, out: Path, cache: Path, seed: int, progress: bool,
             label_field: str | None = None, epochs: int | None = None, lr: float | None = None) -> None:
    from open_videoprism.api import evaluate as run

    run(task, checkpoint, out=out, data=data, cache=cache, seed=seed, label_field=label_field, epochs=epochs, lr=lr,
        overrides=["plots=false"], progress=progress)


def _pretrain(spec: RunSpec, preset: Preset, data: Path, runs: Path, seed: int, progress: bool) -> None:
    assert spec.recipe is not None
    steps = run_steps(spec, preset)
    from open_videoprism.train.config import load_config

    # The recipe's own warmup fraction (the paper's proportions), kept when the preset changes the length.
    recipe = load_config(spec.recipe)
    warmup = max(1, round(recipe.schedule.warmup_steps / recipe.steps * steps))
    overrides = [f"seed={seed}", f"steps={steps}", f"schedule.warmup_steps={warmup}", f"model.name={preset.model}"]
    if "decoder" in recipe.objective:  # stage 2 and the one-stage baseline
        overrides += [f"objective.decoder.{k}={v}" for k, v in preset.decoder().items()]
    if spec.init:
        overrides.append(f"model.init={runs / spec.init}")
    if spec.locked:
        overrides.append(f"objective.locked_encoder={runs / spec.locked}")
    from open_videoprism.api import pretrain

    pretrain(spec.recipe, data=data / spec.manifest, out=runs / spec.name, overrides=[*overrides, *spec.overrides],
             teacher=runs / spec.teacher if spec.teacher else None, progress=progress)


def _random_model(path: Path, seed: int, model_name: str) -> None:
    import torch

    from open_videoprism.checkpoints import save_checkpoint
    from open_videoprism.models import create_model

    torch.manual_seed(seed)
    model = create_model(model_name)
    save_checkpoint(path, model.state_dict(), model.cfg, {"source": "random init"})


def checkpoint_of(spec: RunSpec, runs: Path) -> Path:
    return runs / spec.name / "model.safetensors" if spec.recipe is None else runs / spec.name


def seed_jobs(cfg: ReproduceConfig, preset: Preset, seed: int, specs: list[RunSpec]) -> list[Job]:
    """The jobs of one seed: data, then each run and its evaluations."""
    from open_videoprism.data.synthetic import generate

    root = Path(cfg.out) / f"seed-{seed}"
    data, runs, evals = root / "data", root / "runs", root / "eval"
    # What a seed's steps depend on: not how many other seeds the study has.
    base = {"preset": cfg.preset, **{k: v for k, v in asdict(preset).items() if k != "seeds"}, "seed": seed}
    synth = f"seed {seed}: synth"
    jobs = [Job(synth, data, base, partial(generate, data, preset.held_out, seed=seed, long_videos=preset.long_videos,
                                           pretrain_clips=preset.pretrain_clips, workers=1, progress=False))]
    train_name = {spec.name: f"seed {seed}: train {spec.name}" for spec in specs}
    for spec in specs:
        settings = {**base, "run": asdict(spec), "steps": run_steps(spec, preset) if spec.recipe else 0}
        if spec.recipe is None:
            fn = partial(_random_model, runs / spec.name / "model.safetensors", seed, preset.model)
        else:
            fn = partial(_pretrain, spec, preset, data, runs, seed, cfg.progress)
        jobs.append(Job(train_name[spec.name], runs / spec.name, settings, fn,
                        (synth, *(train_name[d] for d in spec.depends_on()))))
        ckpt = checkpoint_of(spec, runs)
        tasks: list[tuple[str, str, dict[str, Any]]] = []
        if spec.probe:
            tasks += [(f"probe-{task}", "probe", {"label_field": field, "epochs": preset.probe_epochs, "lr": preset.probe_lr})
                      for task, field in PROBES]
        if spec.video_text:
            tasks += [("retrieval", "retrieval", {}), ("zeroshot", "zeroshot", {})]
        previous = train_name[spec.name]
        for folder_name, task, kwargs in tasks:
            # A run's evaluations run one after the other and share its feature cache.
            folder = evals / spec.name / folder_name
            name = f"seed {seed}: {folder_name} {spec.name}"
            jobs.append(Job(name, folder, {**settings, "task": folder_name, **kwargs},
                            partial(evaluate, task, checkpoint=ckpt, data=data, out=folder,
                                    cache=evals / spec.name / "features", seed=seed, progress=False, **kwargs),
                            (train_name[spec.name], previous)))
            previous = name
    return jobs


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

    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with run_lock(out):  # a second study into the same folder fails at once, naming this one
            jobs = [job for seed in seeds for job in seed_jobs(cfg, preset, seed, specs)]
            timings = execute(jobs, cfg.workers, cfg.threads, cfg.force)
    finally:
        torch.set_num_threads(threads)
    wall = time.perf_counter() - t0
    # The largest resident set of this process or any worker (each worker holds one run at a time).
    peak_mb = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    results = collect_results(out, cfg.preset, seeds, specs)
    results["timing"] = {"wall_seconds": round(wall, 1), "peak_rss_mb_per_process": round(peak_mb, 1),
                         "workers": cfg.workers, "threads": cfg.threads,
                         "steps": {k: round(v, 1) for k, v in timings.items()}}
    from open_videoprism.atomic import write_json

    write_json(out / "results.json", results)
    return write_report(out, results, specs, preset)


__all__ = ["Job", "ReproduceConfig", "checkpoint_of", "execute", "reproduce", "seed_jobs"]
