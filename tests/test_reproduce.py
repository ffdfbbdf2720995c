"""``videoprism reproduce``: the smoke study end to end (once), results.json schema, claims, resume."""

from __future__ import annotations

import json

import pytest

from open_videoprism.cli.main import main
from open_videoprism.reproduce.results import METRICS, measure_claims, verdict
from open_videoprism.reproduce.runs import PRESETS, parse_ablations, plan

RUNS = ["random", "stage1", "stage2", "stage2-no-shuffle", "stage2-no-global", "stage2-tube", "one-stage",
        "stage1-lit", "stage2-lit", "stage1-clean", "stage2-clean"]


@pytest.mark.slow
def test_smoke_study_runs_every_model_writes_results_and_resumes(tmp_path):
    out = tmp_path / "rep"
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--seed", "3", "--seeds", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    # Schema: one entry per model and seed, all four metrics (null where a run is not scored).
    assert results["preset"] == "smoke" and results["seeds"] == [3, 4]
    assert [(r["name"], r["seed"]) for r in results["runs"]] == [(n, s) for s in (3, 4) for n in RUNS]
    for r in results["runs"]:
        assert set(r["metrics"]) == set(METRICS) and r["regime"] in ("mixed", "clean")
        probed = r["name"] not in ("stage1-lit", "stage2-lit")
        text = r["name"] in ("random", "stage1", "one-stage", "stage1-lit", "stage2-lit", "stage1-clean")
        for key in ("appearance_top1", "motion_top1"):
            assert (r["metrics"][key] is not None) == probed, (r["name"], key)
        for key in ("retrieval_t2v_r1", "zeroshot_top1"):
            assert (r["metrics"][key] is not None) == text, (r["name"], key)
            if text:
                assert 0.0 <= r["metrics"][key] <= 100.0
    # Every claim of the paper is measured as paired deltas over both seeds.
    claims = {c["claim"]: c for c in results["claims"]}
    assert len(claims) == 10
    two = claims["Stage 2 beats stage 1 on motion (SSv2)"]
    by = {(r["name"], r["seed"]): r["metrics"] for r in results["runs"]}
    assert two["deltas"] == [round(by[("stage2", s)]["motion_top1"] - by[("stage1", s)]["motion_top1"], 4) for s in (3, 4)]
    assert two["paper_delta"] == 8.2 and two["verdict"] == verdict(two["deltas"])
    # Token diagnostics for every probed encoder and seed, from its cached test tokens.
    probed_runs = [(n, s) for s in (3, 4) for n in RUNS if n not in ("stage1-lit", "stage2-lit")]
    assert [(t["name"], t["seed"]) for t in results["token_stats"]] == probed_runs
    assert all(0 < t["within_clip_cos"] <= 1.0 + 1e-6 and 0 <= t["frame_change"] <= 2 for t in results["token_stats"])
    assert results["timing"]["wall_seconds"] > 0 and results["timing"]["peak_rss_mb_per_process"] > 100
    report = (out / "report.md").read_text()
    assert "## What the tokens carry" in report and "| `stage2` |" in report
    assert "## The paper's claims" in report and "Fig. 7: SSv2 55.4 -> 63.6" in report and "+- " in report
    assert (out / "probes.png").stat().st_size > 0 and (out / "loss_curves.png").stat().st_size > 0
    # The LiT run's video encoder is the stage-2 student's, bit for bit.
    import torch

    import open_videoprism as ovp

    lit, s2 = ovp.load(out / "seed-3" / "runs" / "stage2-lit"), ovp.load(out / "seed-3" / "runs" / "stage2")
    assert all(torch.equal(v, s2.encoder.state_dict()[k]) for k, v in lit.encoder.state_dict().items())
    # Every run trains the preset's miniature; stage 2 and the one-stage baseline use its decoder.
    preset = PRESETS["smoke"]
    width = ovp.create_model(preset.model).cfg.vision.width
    from open_videoprism.reproduce.pipeline import checkpoint_of

    for spec in plan(parse_ablations("no-shuffle,no-global,tube")):
        assert ovp.load(checkpoint_of(spec, out / "seed-3" / "runs")).cfg.vision.width == width, spec.name
    import yaml

    for name in ("stage2", "one-stage"):
        dec = yaml.safe_load((out / "seed-3" / "runs" / name / "config.yaml").read_text())["objective"]["decoder"]
        assert {k: dec[k] for k in preset.decoder()} == preset.decoder(), name
        assert (dec["mlp_dim"], dec["num_heads"]) == (4 * dec["width"], 1), name
    # Stage 2 trained with the paper's proportions: 1.5x the stage-1 steps.
    rows = [json.loads(x) for x in (out / "seed-3" / "runs" / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == PRESETS["smoke"].steps2 == round(1.5 * PRESETS["smoke"].steps1)
    # A rerun skips every finished step (checkpoints untouched) and only rewrites results and report.
    ckpt = out / "seed-3" / "runs" / "stage1" / "final" / "model.safetensors"
    before = ckpt.stat().st_mtime_ns
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--seed", "3", "--seeds", "2"]) == 0
    assert ckpt.stat().st_mtime_ns == before
    # One seed of it alone reuses that seed's steps (the seed count is not a setting of a seed's steps).
    assert main(["reproduce", "--preset", "smoke", "--out", str(out), "--seed", "4", "--seeds", "1"]) == 0
    assert ckpt.stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["seeds"] == [4]


def test_claims_are_paired_by_seed_and_judged_against_their_spread():
    runs = [{"name": n, "seed": s, "metrics": {"motion_top1": m, "appearance_top1": None}}
            for n, s, m in [("stage2", 0, 50.0), ("stage1", 0, 40.0), ("stage2", 1, 45.0), ("stage1", 1, 44.0)]]
    c = {x["claim"]: x for x in measure_claims(runs, [0, 1])}["Stage 2 beats stage 1 on motion (SSv2)"]
    assert c["deltas"] == [10.0, 1.0] and c["mean"] == 5.5 and c["std"] == pytest.approx(6.36, abs=0.01)
    assert c["verdict"] == "within the spread"
    assert verdict([4.0, 5.0, 6.0]) == "holds" and verdict([-4.0, -5.0]) == "reversed"
    assert verdict([2.0]).startswith("holds (1 seed")


def test_presets_resolve_clips_splits_and_model(tmp_path):
    from open_videoprism.data.synthetic import split_sizes
    from open_videoprism.models import list_models
    from open_videoprism.reproduce.pipeline import ReproduceConfig

    quick = ReproduceConfig().resolved_preset()
    assert quick.model in list_models() and quick.decoder_width < ovp_width(quick.model)
    # quick: 600 pretraining clips, probes fit on 600 and score 600.
    assert quick.splits() == {"pretrain": 600, "probe_train": 600, "test": 600}
    # --clips keeps the preset's pretraining share; the other settings stay the preset's.
    half = ReproduceConfig(clips=900, steps1=10).resolved_preset()
    assert (half.clips, half.pretrain_clips, half.steps1, half.steps2) == (900, 300, 10, 15)
    assert (half.model, half.probe_epochs, half.seeds) == (quick.model, quick.probe_epochs, quick.seeds)
    # The synth step writes those splits: generate() gets the held-out count and the pretraining count.
    from open_videoprism.reproduce.pipeline import seed_jobs

    synth = seed_jobs(ReproduceConfig(out=str(tmp_path)), quick, 5, plan([]))[0].fn
    assert split_sizes(synth.args[1], synth.keywords["pretrain_clips"]) == {"pretrain": 600, "probe_train": 600, "test": 600}
    smoke = ReproduceConfig(preset="smoke").resolved_preset()
    assert smoke.pretrain_clips is None and smoke.splits() == split_sizes(smoke.clips)
    assert smoke.splits()["pretrain"] == smoke.clips // 2


def ovp_width(name: str) -> int:
    from open_videoprism.models import create_model

    return create_model(name).cfg.vision.width


def test_plan_orders_runs_after_what_they_start_from():
    names = [r.name for r in plan(parse_ablations("all"))]
    for r in plan(parse_ablations("all")):
        assert all(names.index(d) < names.index(r.name) for d in r.depends_on())
    assert "stage2-local-only" in names and "stage2-clean" in names
    assert "stage2-clean" not in [r.name for r in plan([], ("mixed",))]


@pytest.mark.parametrize("args, message", [
    (["--ablations", "no-shuffle,bogus"], "unknown bogus"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--regimes", "clean"], "'mixed' is required"),
    (["--clips", "5"], "--clips must be at least 12"),
])
def test_bad_options_are_one_clear_error(tmp_path, capsys, args, message):
    assert main(["reproduce", "--out", str(tmp_path / "x"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and message in err[0]
    assert not (tmp_path / "x").exists()


def test_a_claim_about_two_gains_measures_their_difference_per_seed():
    # Stage 2's premise: it gains more over a noisy-text stage 1 than over an all-clean one.
    vals = {("stage2", 0): 60.0, ("stage1", 0): 55.0, ("stage2-clean", 0): 60.0, ("stage1-clean", 0): 70.0,
            ("stage2", 1): 50.0, ("stage1", 1): 52.0, ("stage2-clean", 1): 71.0, ("stage1-clean", 1): 70.0}
    runs = [{"name": n, "seed": s, "metrics": {"motion_top1": v}} for (n, s), v in vals.items()]
    claims = {x["claim"]: x for x in measure_claims(runs, [0, 1])}
    c = claims["Stage 2 gains more on motion after noisy text than after all-clean captions"]
    assert (c["a"], c["b"], c["c"], c["d"]) == ("stage2", "stage1", "stage2-clean", "stage1-clean")
    assert c["deltas"] == [15.0, -3.0] and c["mean"] == 6.0
    # A seed without a clean run has no delta for it; without any clean run the claim is left out.
    partial = [r for r in runs if not (r["name"] == "stage1-clean" and r["seed"] == 1)]
    assert {x["claim"]: x for x in measure_claims(partial, [0, 1])}[c["claim"]]["deltas"] == [15.0]
    mixed_only = [r for r in runs if "clean" not in r["name"]]
    assert c["claim"] not in {x["claim"] for x in measure_claims(mixed_only, [0, 1])}
    # The report names all four runs of it.
    from open_videoprism.reproduce.report import claims_table

    row = next(r for r in claims_table({"seeds": [0, 1], "claims": [c]}) if c["claim"] in r)
    assert "(`stage2` - `stage1`) - (`stage2-clean` - `stage1-clean`)" in row
