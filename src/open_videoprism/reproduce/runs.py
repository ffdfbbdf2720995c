"""What ``videoprism reproduce`` trains and evaluates: presets and runs, as data.

A :class:`RunSpec` names one model of the study (a recipe, its data, the runs it starts
from, its overrides) and how it is evaluated: probes for every video encoder, text
retrieval and zero-shot classification for the video-text models. :func:`plan` turns
the chosen ablations and caption regimes into the ordered list of runs; a run comes
after the runs it starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

from open_videoprism.errors import UserError


@dataclass(frozen=True)
class Preset:
    """Sizes of one study. Stage 2 runs 1.5x the stage-1 steps (the paper's 3e5 vs 2e5).

    Attributes:
        clips: synthetic clips per seed, all splits together.
        long_videos: long videos for localization.
        steps1: stage-1 steps.
        probe_epochs, probe_lr: the attentive probes' training.
        seeds: default ``--seeds``.
        pretrain_clips: clips of the pretraining split (the rest split evenly between
            ``probe_train`` and ``test``); None: half of ``clips``.
        model: registered encoder every run of the study trains (stage 2 copies its teacher's).
        decoder_width, decoder_depth: the stage-2 and one-stage decoders (one head, MLP 4x).
            The paper's have 4 layers (Table 11) and 0.12x its encoder's weights; 4 layers
            40 wide are 0.14x the mini encoder's (1 layer 80 wide, the earlier choice: 0.15x).
    """

    clips: int
    long_videos: int
    steps1: int
    probe_epochs: int
    probe_lr: float
    seeds: int
    pretrain_clips: int | None = None
    model: str = "videoprism_lvt_mini"
    decoder_width: int = 40
    decoder_depth: int = 4

    @property
    def steps2(self) -> int:
        return max(1, round(1.5 * self.steps1))

    @property
    def held_out(self) -> int:
        """The ``clips`` argument of :func:`~open_videoprism.data.synthetic.generate`: all clips, or
        the probe_train + test clips when the pretraining count is given apart."""
        return self.clips - self.pretrain_clips if self.pretrain_clips else self.clips

    def splits(self) -> dict[str, int]:
        """Clips per split (``pretrain``, ``probe_train``, ``test``)."""
        from open_videoprism.data.synthetic import split_sizes

        return split_sizes(self.held_out, self.pretrain_clips)

    def decoder(self) -> dict[str, int]:
        """The ``objective.decoder`` settings of stage 2 and the one-stage baseline: one head, MLP 4x."""
        w = self.decoder_width
        return {"width": w, "depth": self.decoder_depth, "num_heads": 1, "mlp_dim": 4 * w}

    def splits_text(self) -> str:
        """``"pretrain / probe_train / test"`` clip counts, for the report and ``--help``."""
        sizes = self.splits()
        return " / ".join(str(sizes[k]) for k in ("pretrain", "probe_train", "test"))


# Probes train about 7,500 steps (batch 32): on a validation split (800 probe clips -> 200 held out of
# probe_train, seed 100, never the test split) stage-1 and stage-2 probes had both reached their plateau
# there, while at 3,750 steps the stage-2 probe was still 5 points short of it (docs/reproduce.md).
# `quick` probes fit on 600 clips and score 600 (the same 7,500 steps at 400 epochs): with 300 and 300
# the same features moved by up to 6 points between probe seeds on validation.
PRESETS: dict[str, Preset] = {
    # `smoke` is the CI form: every run and evaluation happens, the numbers mean little.
    "smoke": Preset(clips=60, long_videos=2, steps1=6, probe_epochs=3, probe_lr=1e-3, seeds=1),
    "quick": Preset(clips=1800, long_videos=8, steps1=1000, probe_epochs=400, probe_lr=1e-3, seeds=3,
                    pretrain_clips=600),
    "full": Preset(clips=4000, long_videos=24, steps1=2000, probe_epochs=240, probe_lr=1e-3, seeds=3),
}


@dataclass(frozen=True)
class RunSpec:
    """One model of the study.

    Attributes:
        name: folder and results name (``stage2-no-shuffle``...).
        label: the paper's row name for the report.
        recipe: shipped recipe; None for the randomly initialised baseline.
        manifest: pretraining manifest in the data folder (text regime).
        steps: ``"stage1"``, ``"stage2"`` or ``"both"`` (stage 1 + stage 2 steps).
        teacher: run whose final model is the stage-2 teacher.
        init: run whose model initialises this one (``model.init``).
        locked: run whose encoder LiT locks (``objective.locked_encoder``).
        overrides: extra ``key=value`` recipe overrides.
        video_text: has a text tower: scored by retrieval and zero-shot classification.
        probe: a new encoder: scored by the appearance and motion probes (LiT runs reuse
            the encoder of the run they lock, so they are not probed again).
        regime: caption regime of its pretraining text (``mixed`` or ``clean``).
    """

    name: str
    label: str
    recipe: str | None = None
    manifest: str = "pretrain.jsonl"
    steps: str = "stage1"
    teacher: str | None = None
    init: str | None = None
    locked: str | None = None
    overrides: tuple[str, ...] = ()
    video_text: bool = False
    probe: bool = True
    regime: str = "mixed"

    def depends_on(self) -> tuple[str, ...]:
        return tuple(r for r in (self.teacher, self.init, self.locked) if r)


def _stage2(name: str, label: str, *overrides: str, teacher: str = "stage1", regime: str = "mixed") -> RunSpec:
    return RunSpec(name, label, "stage2-tiny", steps="stage2", teacher=teacher, overrides=overrides, regime=regime,
                   manifest="pretrain.jsonl" if regime == "mixed" else "pretrain_clean.jsonl")


# Stage-2 ablations of the paper (Fig. 4, Table 26, Fig. 6), by the name `--ablations` takes.
ABLATIONS: dict[str, RunSpec] = {
    "no-shuffle": _stage2("stage2-no-shuffle", "Stage 2 w/o token shuffling", "objective.shuffle=false"),
    "no-global": _stage2("stage2-no-global", "Stage 2 w/o global distillation", "objective.global_distillation=false"),
    "tube": _stage2("stage2-tube", "Stage 2 with tube instead of BEVT masking", "objective.mask.type=tube"),
    "local-only": _stage2("stage2-local-only", "Stage 2 token-wise only (Fig. 4 'two-stage' row)",
                          "objective.shuffle=false", "objective.global_distillation=false"),
}
DEFAULT_ABLATIONS: tuple[str, ...] = ("no-shuffle", "no-global", "tube")
REGIMES: tuple[str, ...] = ("mixed", "clean")


def parse_ablations(text: str) -> list[str]:
    """``"all"``, ``"none"`` or a comma-separated list of :data:`ABLATIONS` names."""
    if text == "all":
        return list(ABLATIONS)
    if text in ("", "none"):
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise UserError(f"--ablations: unknown {', '.join(unknown)}; choose from {', '.join(ABLATIONS)}, 'all' or 'none'")
    return names


def plan(ablations: list[str], regimes: tuple[str, ...] = REGIMES) -> list[RunSpec]:
    """The runs of one seed, each after the runs it depends on."""
    runs = [
        RunSpec("random", "Random init (no pretraining)", video_text=True),
        RunSpec("stage1", "Stage 1 (video-text contrastive)", "stage1-tiny", video_text=True),
        _stage2("stage2", "Stage 2 (BEVT 0.65, global distillation, token shuffling)"),
        *(ABLATIONS[a] for a in ablations),
        RunSpec("one-stage", "Contrastive + MAE in one stage (Fig. 4)", "one-stage-tiny", steps="both", video_text=True),
        # LiT on both encoders: the same text-side training, so their zero-shot gap is the encoders'.
        RunSpec("stage1-lit", "Stage 1 + LiT (frozen stage-1 encoder)", "lit-tiny", init="stage1", locked="stage1",
                video_text=True, probe=False),
        RunSpec("stage2-lit", "Stage 2 + LiT (frozen stage-2 encoder)", "lit-tiny", init="stage1", locked="stage2",
                video_text=True, probe=False),
    ]
    if "clean" in regimes:
        runs += [
            RunSpec("stage1-clean", "Stage 1, all captions clean", "stage1-tiny", manifest="pretrain_clean.jsonl",
                    video_text=True, regime="clean"),
            _stage2("stage2-clean", "Stage 2 from the all-clean stage 1", teacher="stage1-clean", regime="clean"),
        ]
    return runs


__all__ = ["ABLATIONS", "DEFAULT_ABLATIONS", "PRESETS", "REGIMES", "Preset", "RunSpec", "parse_ablations", "plan"]
