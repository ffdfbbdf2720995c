"""``report.md`` of a reproduction study: the paper's claims, every model's scores over seeds, plots."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from open_videoprism.atomic import write_text
from open_videoprism.reproduce.results import METRICS, summarize
from open_videoprism.reproduce.runs import Preset, RunSpec
from open_videoprism.train.logging import read_metrics

HEADERS = {
    "appearance_top1": "appearance probe top-1",
    "motion_top1": "motion probe top-1",
    "retrieval_t2v_r1": "retrieval t2v R@1",
    "zeroshot_top1": "zero-shot top-1",
}

INTRO = (
    "Both pretraining stages, the paper's stage-2 ablations, the one-stage baseline and LiT, evaluated "
    "frozen on the synthetic appearance/motion benchmark (`videoprism synth`). The appearance task plays "
    "the role of K400 (one frame suffices), the motion task that of SSv2 (only temporal order separates "
    "its classes). Pretraining text is `mixed` like the paper's corpus (a few clean captions, much noisy "
    "web-like text that rarely states the motion) unless marked `clean`. Figures are mean +- standard "
    "deviation over seeds; claims compare runs of the same seed (paired differences)."
)


def _fmt(summary: tuple[float, float | None, int] | None) -> str:
    if summary is None:
        return "-"
    mean, std, _ = summary
    return f"{mean:.1f}" if std is None else f"{mean:.1f} +- {std:.1f}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f}"


def claims_table(results: dict[str, Any]) -> list[str]:
    n = len(results["seeds"])
    lines = [f"| claim | paper | paper delta | ours: delta, mean +- std over {n} seed(s) | per seed | verdict |",
             "|---|---|---:|---:|---|---|"]
    for c in results["claims"]:
        ours = "-" if c["mean"] is None else (f"{c['mean']:+.1f}" + ("" if c["std"] is None else f" +- {c['std']:.1f}"))
        paper = _signed(c["paper_delta"]) if c["paper_delta"] is not None else ("> 0" if c["paper_claim"] else "n/a")
        seeds = ", ".join(f"{d:+.1f}" for d in c["deltas"]) or "-"
        pair = f"`{c['a']}` - `{c['b']}`"
        if c.get("c") and c.get("d"):  # a difference of two gains; results of older versions have no c, d
            pair = f"({pair}) - (`{c['c']}` - `{c['d']}`)"
        lines.append(f"| {c['claim']} ({pair}, {HEADERS[c['metric']]}) | {c['paper_source']} | "
                     f"{paper} | {ours} | {seeds} | {c['verdict']} |")
    return lines


def token_stats_table(results: dict[str, Any], specs: Sequence[RunSpec]) -> list[str]:
    """Mean over seeds of each probed encoder's within-clip token cosine and frame-to-frame change."""
    rows = results.get("token_stats") or []
    if not rows:
        return []
    lines = ["", "## What the tokens carry", "",
             "Measured on each encoder's test-split tokens: the mean cosine between two tokens of one clip (1: every "
             "token the same) and the mean `1 - cos` between a patch's token and the same patch one frame later "
             "(0: nothing changes over time).", "",
             "| model | within-clip cosine | frame-to-frame change |", "|---|---:|---:|"]
    for spec in specs:
        mine = [r for r in rows if r["name"] == spec.name]
        if mine:
            cells = [statistics.fmean(r[k] for r in mine) for k in ("within_clip_cos", "frame_change")]
            lines.append(f"| `{spec.name}` | {cells[0]:.3f} | {cells[1]:.3f} |")
    return lines


def models_table(results: dict[str, Any], specs: Sequence[RunSpec]) -> list[str]:
    lines = ["| model | text regime | " + " | ".join(HEADERS.values()) + " |", "|---|---|" + "---:|" * len(HEADERS)]
    for spec in specs:
        cells = [_fmt(summarize(results, spec.name, m)) for m in METRICS]
        lines.append(f"| {spec.label} (`{spec.name}`) | {spec.regime} | " + " | ".join(cells) + " |")
    chance = results.get("chance", {})
    lines.append("| chance | | " + " | ".join(f"{chance[m]:.1f}" if m in chance else "-" for m in METRICS) + " |")
    return lines


def _plot_probes(results: dict[str, Any], specs: Sequence[RunSpec], path: Path) -> bool:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    names = [s.name for s in specs if s.probe]
    metrics = ["appearance_top1", "motion_top1"]
    stats = {(n, m): summarize(results, n, m) for n in names for m in metrics}
    if not any(stats.values()):
        return False
    fig = Figure(figsize=(max(6.0, 1.1 * len(names) + 2), 4.0))
    ax = fig.subplots()
    width = 0.4
    for i, m in enumerate(metrics):
        xs = [x + i * width for x in range(len(names))]
        means = [s[0] if (s := stats[(n, m)]) else 0.0 for n in names]
        errs = [(s[1] or 0.0) if (s := stats[(n, m)]) else 0.0 for n in names]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=HEADERS[m])
        if m in results.get("chance", {}):
            ax.axhline(results["chance"][m], color=f"C{i}", ls=":", lw=1)
    ax.set_xticks([x + width / 2 for x in range(len(names))])
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"frozen attentive probes, mean +- std over {len(results['seeds'])} seed(s) (dotted: chance)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _plot_losses(out: Path, seed: int, specs: Sequence[RunSpec], path: Path) -> bool:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    logs = {s.name: read_metrics(out / f"seed-{seed}" / "runs" / s.name / "metrics.jsonl") for s in specs if s.recipe}
    logs = {n: rows for n, rows in logs.items() if rows}
    if not logs:
        return False
    fig = Figure(figsize=(12, 4))
    axes = fig.subplots(1, 2)
    for name, rows in logs.items():
        if "loss_local" in rows[-1]:
            for key, style in (("loss_local", "-"), ("loss_global", "--")):
                pts = [(r["step"], r[key]) for r in rows if key in r]
                if pts:
                    axes[1].plot(*zip(*pts), style, lw=1, label=f"{name} {key.removeprefix('loss_')}")
        else:
            pts = [(r["step"], r["loss"]) for r in rows if "loss" in r]
            axes[0].plot(*zip(*pts), lw=1, label=name)
    axes[0].set_title("contrastive runs (stage 1, one-stage, LiT): loss")
    axes[1].set_title("stage 2: distillation losses (1 - cosine)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_report(out: Path, results: dict[str, Any], specs: Sequence[RunSpec], preset: Preset) -> Path:
    """Write ``OUT/report.md`` with its figures; returns its path."""
    seeds = results["seeds"]
    lines = ["# VideoPrism in miniature: reproduction report", "", INTRO, "", "## The paper's claims", ""]
    lines += claims_table(results)
    lines += ["", "A claim *holds* when its mean paired difference exceeds one standard deviation of the "
              "differences over seeds, is *reversed* when it is below minus one, and is *within the spread* otherwise.",
              "", "## Every model", ""]
    lines += models_table(results, specs)
    lines += ["", "Retrieval and zero-shot classification need a text tower: the stage-2 encoders get one by LiT "
              "(`stage2-lit`, text tower and heads from stage 1, encoder locked); `stage1-lit` gives the stage-1 "
              "encoder the same text-side training as a control. LiT runs reuse their locked encoder's probes."]
    lines += token_stats_table(results, specs)
    if _plot_probes(results, specs, out / "probes.png"):
        lines += ["", "![probes](probes.png)"]
    if _plot_losses(out, seeds[0], specs, out / "loss_curves.png"):
        lines += ["", f"![training losses, seed {seeds[0]}](loss_curves.png)"]
    lines += ["", "## Settings", "", "| setting | value |", "|---|---|",
              f"| preset | {results['preset']} |", f"| seeds | {', '.join(map(str, seeds))} |",
              f"| clips (pretrain / probe_train / test) | {preset.splits_text()} |",
              f"| model | `{preset.model}`; stage-2 and one-stage decoders {preset.decoder_depth} layers {preset.decoder_width} wide, one head |",
              f"| stage-1 steps / stage-2 steps / one-stage steps | {preset.steps1} / {preset.steps2} / "
              f"{preset.steps1 + preset.steps2} |",
              f"| probe | attentive (MAP), {preset.probe_epochs} epochs, peak lr {preset.probe_lr:g} |"]
    timing = results.get("timing")
    if timing:
        lines += ["", "## Time", "", f"Wall time {timing['wall_seconds'] / 60:.1f} min with {timing['workers']} worker "
                  f"process(es) of {timing['threads']} thread(s); peak resident memory {timing['peak_rss_mb_per_process']:.0f} "
                  "MB in the largest process. Steps finished by an earlier invocation count their recorded time; "
                  "the table adds up each kind of step over all seeds and workers."]
        kinds: dict[str, float] = {}
        for name, sec in timing["steps"].items():
            kind = name.split(": ", 1)[-1].split(" ")[0]
            kinds[kind] = kinds.get(kind, 0.0) + sec
        lines += ["", "| step kind | seconds (all seeds) |", "|---|---:|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in kinds.items()]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


__all__ = ["claims_table", "models_table", "token_stats_table", "write_report"]
