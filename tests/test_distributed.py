"""Data parallelism on PyTorch's stack, with 2 gloo ranks spawned by the tests.

- For each stage, one engine step under DDP and under FSDP2 gives the parameters
  of one process holding the whole batch; the ranks see disjoint samples.
- Stage-1 accumulation with the feature cache equals one micro-batch ``accum_steps`` x larger.
- A stage-2 FSDP run on 2 ranks (torchrun, the CLI), killed after its step-5 checkpoint
  and resumed on 1 rank with 2 micro-batches, continues the uninterrupted 2-rank run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import open_videoprism as ovp
from open_videoprism.models.decoders import DecoderConfig
from open_videoprism.objectives.contrastive import ContrastiveObjective, ContrastiveOptions
from open_videoprism.objectives.distillation import DistillationObjective, DistillationOptions
from open_videoprism.train import checkpoint_manager as ckpt
from open_videoprism.train.config import load_config
from open_videoprism.train.data import RandomPairStream, micro_slice
from open_videoprism.train.distributed import DistInfo, free_port, full_state_dict
from open_videoprism.train.engine import KILL_AFTER_ENV, Trainer

GLOBAL_BATCH = 8
# eps 1e-3: Adam's first step is g / (|g| + eps), which float noise would flip near g = 0 with the default 1e-8.
COMMON = ["steps=1", "log_every=1", "ckpt_every=100", "optim.lr=1e-3", "optim.eps=1e-3", "schedule.warmup_steps=0",
          "schedule.decay=constant", "data.num_frames=4", "data.image_size=72"]
STAGE_OVERRIDES = {
    "contrastive": ["objective.token_drop_ratio=0.0"],
    # Global-batch masks are precomputed below; the shuffle draws per micro-batch, so it is off for parity.
    "distillation": ["objective.name=distillation", "objective.shuffle=false", "objective.decoder.width=40",
                     "objective.decoder.depth=1", "objective.decoder.num_heads=4", "objective.decoder.mlp_dim=160"],
}


def _objective(stage: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_lvt_test_tiny")
    if stage == "contrastive":
        return ContrastiveObjective(model, ContrastiveOptions(token_drop_ratio=0.0))
    decoder = DecoderConfig(width=40, depth=1, num_heads=4, mlp_dim=160)
    return DistillationObjective(model, DistillationOptions(shuffle=False, decoder=decoder), grid=(4, 4, 4))


class _GlobalMaskStream(RandomPairStream):
    """RandomPairStream whose stage-2 masks are drawn for the whole global batch, then sliced: the same
    masks whatever the split, so parity isolates the distributed machinery."""

    def __init__(self, *args: Any, mask: Any = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.mask = mask
        self.seen: list[int] = []

    def batch(self, k: int) -> dict[str, Any]:
        b = super().batch(k)
        self.seen.extend(b["index"].tolist())
        if self.mask is not None:
            _, start = micro_slice(k, self.batch_size, self.rank, self.world_size, self.accum_steps)
            g = torch.Generator().manual_seed(1234 + k // self.accum_steps)
            full = self.mask(GLOBAL_BATCH, _grid(), g)
            local = start % GLOBAL_BATCH
            b["visible_idx"] = full.visible[local : local + self.batch_size]
        return b


def _grid() -> Any:
    from open_videoprism.masks import TokenGrid

    return TokenGrid(4, 4, 4)


def _run(stage: str, strategy: str, rank: int, world: int, accum: int = 1, extra: tuple[str, ...] = ()
         ) -> tuple[dict[str, torch.Tensor], list[int], dict[int, float]]:
    per_rank = GLOBAL_BATCH // world // accum
    cfg = load_config(None, COMMON + STAGE_OVERRIDES[stage] + [f"batch_size={per_rank}", f"accum_steps={accum}",
                                                              f"distributed.strategy={strategy}", *extra])
    objective = _objective(stage)
    if cfg.model.grad_checkpointing:
        for m in objective.modules():
            if isinstance(m, ovp.VideoPrism):
                m.set_grad_checkpointing(True)
    mask = None
    if stage == "distillation":
        from open_videoprism.masks import build_mask_generator

        mask = build_mask_generator(objective.options.mask)  # type: ignore[union-attr]
    streams: list[_GlobalMaskStream] = []

    def make(state: Any) -> _GlobalMaskStream:
        s = _GlobalMaskStream(per_rank, num_samples=16, seed=5, rank=rank, world_size=world, state=state,
                              accum_steps=accum, mask=mask)
        streams.append(s)
        return s

    info = DistInfo(rank=rank, world_size=world, device=torch.device("cpu"))
    trainer = Trainer(cfg, objective, make, None, info=info, progress=False)
    res = trainer.fit()
    state = full_state_dict(trainer.objective)
    return state, streams[0].seen, res.losses


# (stage, strategy, micro-batches per rank, overrides); BF16 cases are compared loosely (bf16 rounding).
AC = ("model.grad_checkpointing=true",)
BF16 = ("precision=bf16",)
CASES = [("contrastive", "ddp", 1, ()), ("contrastive", "fsdp", 1, ()), ("contrastive", "fsdp", 2, ()),
         ("contrastive", "fsdp", 1, AC), ("contrastive", "fsdp", 1, BF16),
         ("distillation", "ddp", 1, ()), ("distillation", "fsdp", 1, ()),
         ("distillation", "fsdp", 1, ("distributed.frozen=shard", *AC))]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for case in CASES:
            state, seen, losses = _run(*case[:2], rank, world, *case[2:])  # type: ignore[misc]
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, seen)
            if rank == 0:
                results[case] = {"state": state, "seen": gathered, "losses": losses}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_ddp_and_fsdp_steps_equal_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    out = tmp_path / "dist.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    refs = {}
    for stage in ("contrastive", "distillation"):
        refs[stage] = _run(stage, "ddp", 0, 1)
    assert set(got) == set(CASES)
    for case, r in got.items():
        stage = case[0]
        ref_state, ref_seen, ref_losses = refs[stage]
        # Disjoint samples on the two ranks, together the single process's global batch.
        a, b = r["seen"]
        assert not set(a) & set(b), (case, a, b)
        assert sorted(a + b) == sorted(ref_seen)
        if case[3] == BF16:  # bf16 compute under FSDP's policy vs fp32: the same loss to bf16 precision
            assert abs(r["losses"][1] - ref_losses[1]) <= 2e-2 * abs(ref_losses[1]), (case, r["losses"], ref_losses)
            assert all(torch.isfinite(v).all() and v.dtype == ref_state[k].dtype for k, v in r["state"].items())
            continue
        assert abs(r["losses"][1] - ref_losses[1]) <= 1e-5 * abs(ref_losses[1]), (case, r["losses"], ref_losses)
        assert set(r["state"]) == set(ref_state)
        init = _objective(stage).state_dict()
        for k, v in ref_state.items():
            torch.testing.assert_close(r["state"][k], v, rtol=1e-4, atol=1e-6, msg=lambda m, k=k, c=case: f"{c}: {k}: {m}")
        trained = [k for k in ref_state if not k.startswith("teacher.")]
        moved = sum(not torch.equal(ref_state[k], init[k]) for k in trained)
        assert moved > len(trained) // 2  # the step did change the weights being compared


def test_contrastive_feature_cache_accumulation_equals_one_larger_micro_batch() -> None:
    big_state, _, big = _run("contrastive", "ddp", 0, 1, accum=1)      # one micro-batch of 8
    acc_state, _, acc = _run("contrastive", "ddp", 0, 1, accum=4)      # 4 micro-batches of 2, cached features
    assert abs(acc[1] - big[1]) <= 1e-5 * big[1], (acc, big)
    for k, v in big_state.items():
        torch.testing.assert_close(acc_state[k], v, rtol=1e-4, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")
    # Without the cache the negatives shrink to one micro-batch: a different (lower) loss.
    cfg = load_config(None, COMMON + STAGE_OVERRIDES["contrastive"] + ["batch_size=2", "accum_steps=4", "accum_features=false"])
    plain = Trainer(cfg, _objective("contrastive"), lambda s: RandomPairStream(2, num_samples=16, seed=5, state=s, accum_steps=4),
                    None, progress=False).fit()
    assert plain.losses[1] < big[1] - 0.1


def test_global_batch_order_does_not_depend_on_the_split() -> None:
    def step_samples(world: int, accum: int, step: int) -> list[int]:
        per = GLOBAL_BATCH // world // accum
        out = []
        for r in range(world):
            s = RandomPairStream(per, num_samples=32, seed=2, rank=r, world_size=world, accum_steps=accum)
            for m in range(accum):
                out.extend(s.batch(step * accum + m)["index"].tolist())
        return out

    for step in (0, 3):
        ref = step_samples(1, 1, step)
        assert len(set(ref)) == GLOBAL_BATCH
        for world, accum in ((2, 1), (1, 2), (2, 2), (4, 2)):
            assert step_samples(world, accum, step) == ref, (world, accum)


def _teacher(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    teacher = ovp.create_model("videoprism_lvt_test_tiny")
    return ovp.save_checkpoint(tmp_path / "teacher" / "model.safetensors", teacher.state_dict(), teacher.cfg)


def _pretrain(nproc: int, args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-port", str(free_port())]
    cmd = [*launcher, "-m", "open_videoprism.cli.main", "pretrain", "--no-progress", *args] if nproc > 1 else \
        [sys.executable, "-m", "open_videoprism.cli.main", "pretrain", "--no-progress", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r}


@pytest.mark.slow
def test_fsdp_stage2_killed_on_2_ranks_resumes_on_1_rank_with_accumulation(tmp_path: Path) -> None:
    teacher = _teacher(tmp_path)
    config = Path(__file__).resolve().parents[1] / "configs" / "stage2-tiny.yaml"
    common = ["--config", str(config), "--teacher", str(teacher), "--data", "random",
              "steps=10", "batch_size=2", "log_every=1", "ckpt_every=5", "schedule.warmup_steps=2",
              "distributed.strategy=fsdp", "distributed.frozen=shard"]
    full = tmp_path / "full"
    r = _pretrain(2, [*common, "--out", str(full)])
    assert r.returncode == 0, r.stderr[-3000:]

    split = tmp_path / "split"
    r = _pretrain(2, [*common, "--out", str(split)], env={KILL_AFTER_ENV: "5"})
    assert r.returncode != 0  # SIGKILLed right after the step-5 checkpoint
    assert [s for s, _ in ckpt.list_checkpoints(split / "checkpoints")] == [5]
    # The teacher is rebuilt from --teacher, never stored: only trainable state in the shards.
    keys = ckpt.read_tensors(split / "checkpoints" / "step_0000005", "model.")
    assert keys and not any(k.startswith("teacher.") for k in keys)
    assert any(k.startswith("student.") for k in keys)

    r = _pretrain(1, ["--out", str(split), "--resume", "accum_steps=2"])
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _losses(full), _losses(split)
    assert sorted(b) == list(range(1, 11)) and sorted(a) == list(range(1, 11))
    for step in range(6, 11):
        assert abs(b[step] - a[step]) <= 1e-4 * abs(a[step]), (step, b[step], a[step])
    # The exported student is the same encoder-only model either way.
    sa, sb = ovp.load(full).state_dict(), ovp.load(split).state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        torch.testing.assert_close(sb[k], sa[k], rtol=1e-3, atol=1e-5)


def test_features_split_over_two_ranks_match_one_process(tmp_path: Path) -> None:
    from open_videoprism.data import synthetic
    from open_videoprism.eval.features import FeatureConfig, extract_features, load_features

    synthetic.generate(tmp_path / "synth", clips=8, long_videos=0, cfg=synthetic.SynthConfig(num_frames=8), progress=False)
    manifest = tmp_path / "synth" / "test.jsonl"
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_lvt_test_tiny")
    ckpt_path = ovp.save_checkpoint(tmp_path / "m" / "model.safetensors", model.state_dict(), model.cfg)
    args = [str(manifest), "--checkpoint", str(ckpt_path), "--out", str(tmp_path / "two"), "--batch-size", "2",
            "--shard-size", "2", "--no-tokens", "--device", "cpu", "--dtype", "fp32"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*launcher, "-m", "open_videoprism.cli.main", "features", *args], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    two = load_features(tmp_path / "two")
    one = load_features(extract_features(ovp.load(ckpt_path), manifest, tmp_path / "one",
                                         FeatureConfig(batch_size=2, shard_size=2, store_tokens=False), progress=False))
    n = len(manifest.read_text().splitlines())
    assert two.index.tolist() == list(range(n))  # every video once: no padding, no duplicates
    torch.testing.assert_close(two.mean_tokens, one.mean_tokens, rtol=1e-4, atol=1e-5)
    meta = json.loads((tmp_path / "two" / "progress.json").read_text())
    assert meta["world_size"] == 2 and any(s.startswith("shard-r1-") for s in meta["shards"])
    # Rerunning the finished job is a no-op.
    r = subprocess.run([*launcher, "-m", "open_videoprism.cli.main", "features", *args], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


def test_gpu_check_script_dry_run_on_cpu(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_distributed_check.py"
    out = tmp_path / "check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
    r = subprocess.run([sys.executable, str(script), "--dry-run", "--json", str(out)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["dry_run"] and all(got[k]["ok"] for k in ("gloo", "sdpa", "stage2_fsdp", "stage1_fsdp_accum"))
    assert got["stage2_fsdp"]["resumed_from"] == 2


def test_fsdp_refuses_adafactor_at_config_time() -> None:
    from open_videoprism.errors import ConfigError

    with pytest.raises(ConfigError, match="adafactor"):
        load_config("b16-stage2", ["distributed.strategy=fsdp"])
    assert load_config("b16-stage2", ["distributed.strategy=fsdp", "optim.name=adamw"]).distributed.strategy == "fsdp"
