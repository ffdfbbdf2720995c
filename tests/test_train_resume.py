"""Checkpoints and resume: bit-exact continuation, SIGKILL mid-write, damaged files, retention."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from open_videoprism.errors import CheckpointError, UserError
from open_videoprism.train import checkpoint_manager as ckpt
from open_videoprism.train.config import load_config
from open_videoprism.train.data import RandomPairStream
from open_videoprism.train.engine import Trainer, build_objective
from open_videoprism.train.logging import read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Token dropping on: the resumed run must also replay the RNG exactly.
OVERRIDES = ["steps=4", "batch_size=4", "log_every=1", "ckpt_every=2", "keep_last=5", "schedule.warmup_steps=2",
             "objective.token_drop_ratio=0.5", "optim.lr=3e-3"]


def _stream(state):
    return RandomPairStream(4, num_samples=12, seed=1, state=state)


def _trainer(run: Path | None, seed_shift: int = 0, overrides: list[str] | None = None) -> Trainer:
    cfg = load_config(CONFIGS / "stage1-tiny.yaml", OVERRIDES + (overrides or []))
    obj = build_objective(load_config(CONFIGS / "stage1-tiny.yaml", OVERRIDES + [f"seed={seed_shift}"]) if seed_shift else cfg)
    return Trainer(cfg, obj, _stream, run, progress=False)


def test_resume_after_stop_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path: Path) -> None:
    full = _trainer(tmp_path / "full").fit()
    assert sorted(full.losses) == [1, 2, 3, 4]

    run = tmp_path / "split"
    part = _trainer(run).fit(stop_after=3)  # checkpoints at 2 and 3 (the stop)
    assert part.final_path is None and part.step == 3
    # Simulate a crash after step 3 was logged but before its checkpoint existed.
    shutil.rmtree(run / "checkpoints" / "step_0000003")
    torch.manual_seed(1234)  # disturb every RNG the resumed process would otherwise inherit
    # Weights from another seed: only the checkpoint can make the curves agree.
    rest = _trainer(run, seed_shift=99).fit(resume=True)
    assert rest.resumed_from == 2 and sorted(rest.losses) == [3, 4]
    for step in (3, 4):
        assert rest.losses[step] == full.losses[step], (step, rest.losses[step], full.losses[step])
    a = ckpt.read_tensors(tmp_path / "full" / "checkpoints" / "step_0000004", "model.")
    b = ckpt.read_tensors(run / "checkpoints" / "step_0000004", "model.")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # metrics.jsonl reads as one run: every step once, with the uninterrupted losses.
    logged = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert [r["loss"] for r in logged] == [full.losses[s] for s in range(1, 5)]
    # The final encoder checkpoint is what ovp.load reads from a run folder.
    import open_videoprism as ovp

    model = ovp.load(run)
    assert torch.equal(model.state_dict()["encoder.spatial_pos"], a["model.encoder.spatial_pos"])
    assert "optim.state.model.encoder.spatial_pos.exp_avg" in ckpt.read_tensors(run / "checkpoints" / "step_0000004")


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    _trainer(tmp_path).fit(stop_after=2)
    with pytest.raises(UserError, match="--resume"):
        _trainer(tmp_path).fit()


def _wait_for(pred, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_sigkill_while_writing_a_checkpoint_leaves_the_last_good_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "open_videoprism.cli.main", "pretrain", "--config", str(CONFIGS / "stage1-tiny.yaml"),
           "--data", "random", "--out", str(run), "--no-progress", *OVERRIDES]
    env = {**os.environ, ckpt.WRITE_DELAY_ENV: "3"}  # every checkpoint sleeps 3 s between tensors and commit
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    cdir = run / "checkpoints"
    try:
        # Kill once the second checkpoint's tensors are on disk but not yet committed.
        in_second = lambda: any((p / ckpt.DCP_METADATA).exists() for p in cdir.glob(".tmp-step_0000004*"))  # noqa: E731
        assert _wait_for(in_second, 180), "the second checkpoint never started"
        assert (cdir / "step_0000002").is_dir()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (cdir / "step_0000004").exists()
    assert ckpt.find_last_good(cdir) == cdir / "step_0000002"
    # Resuming sweeps the torn folder and continues from step 2.
    rest = _trainer(run).fit(resume=True)
    assert rest.resumed_from == 2 and rest.step == 4 and rest.final_path is not None
    assert not any(p.name.startswith(".tmp-") for p in cdir.iterdir())


def _save(d: Path, step: int) -> Path:
    return ckpt.save(d, step, {"w": torch.full((3,), float(step))}, {"data": {"batches": step}})


def test_damaged_checkpoint_is_skipped_and_load_refuses_it(tmp_path: Path) -> None:
    for s in (1, 2, 3):
        _save(tmp_path, s)
    newest = tmp_path / "step_0000003" / ckpt.STATE_FILE
    newest.write_bytes(newest.read_bytes()[:-7])  # truncated
    assert ckpt.find_last_good(tmp_path) == tmp_path / "step_0000002"
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        ckpt.load(tmp_path / "step_0000003")
    (tmp_path / "step_0000002" / ckpt.STATE_FILE).write_bytes(b"\0" * 10)  # same name, other content
    assert ckpt.find_last_good(tmp_path) == tmp_path / "step_0000001"
    (tmp_path / "step_0000001" / ckpt.META_FILE).write_text("{not json")
    assert ckpt.find_last_good(tmp_path) is None
    c = ckpt.load(_save(tmp_path, 4))
    assert c.step == 4 and torch.equal(c.tensors["w"], torch.full((3,), 4.0)) and c.meta["data"] == {"batches": 4}


def test_retention_keeps_the_last_k_intact(tmp_path: Path) -> None:
    for s in range(1, 6):
        _save(tmp_path, s)
    removed = ckpt.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in removed) == ["step_0000001", "step_0000002", "step_0000003"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5, 4]
    # A damaged newest checkpoint does not count towards K and is kept for inspection.
    (tmp_path / "step_0000005" / ckpt.META_FILE).unlink()
    _save(tmp_path, 3)
    ckpt.prune(tmp_path, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [5, 4, 3]


def test_rng_and_optimizer_state_roundtrip() -> None:
    import random

    import numpy as np

    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    tensors, rest = ckpt.capture_rng()
    rest = json.loads(json.dumps(rest))
    expect = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    ckpt.restore_rng(tensors, rest)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expect[0], got[0]) and np.array_equal(expect[1], got[1]) and expect[2] == got[2]

    p = torch.nn.Parameter(torch.randn(4, 3))
    for name in ("AdamW", "Adafactor"):
        opt = getattr(torch.optim, name)([p], lr=0.1)
        p.grad = torch.randn(4, 3)
        opt.step()
        flat, plain = ckpt.flatten_optimizer(opt.state_dict())
        back = ckpt.unflatten_optimizer(flat, json.loads(json.dumps(plain)))
        opt2 = getattr(torch.optim, name)([p], lr=0.1)
        opt2.load_state_dict(back)
        for k, v in opt.state_dict()["state"][0].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(opt2.state_dict()["state"][0][k])), (name, k)


def test_a_format_1_checkpoint_of_earlier_versions_still_resumes(tmp_path: Path) -> None:
    full = _trainer(tmp_path / "full").fit()
    run = tmp_path / "old"
    trainer = _trainer(run)
    trainer.fit(stop_after=2)
    # Rewrite step 2 the way earlier versions did: one state.safetensors, positional optimiser state, RNG.
    cdir = run / "checkpoints"
    data = ckpt.read_meta(cdir / "step_0000002")["data"]
    shutil.rmtree(cdir / "step_0000002")
    tensors = {f"model.{k}": v for k, v in trainer.objective.state_dict().items()}
    opt_tensors, opt_rest = ckpt.flatten_optimizer(trainer.optimizer.state_dict())
    tensors.update({f"optim.{k}": v for k, v in opt_tensors.items()})
    rng_t, rng_rest = ckpt.capture_rng()
    tensors.update({f"rng.0.{k}": v for k, v in rng_t.items()})
    old = ckpt.save(cdir, 2, tensors, {"optimizer": opt_rest, "rng": [rng_rest], "data": data, "world_size": 1})
    assert ckpt.read_meta(old)["format_version"] == 1
    rest = _trainer(run, seed_shift=99).fit(resume=True)
    assert rest.resumed_from == 2
    assert [rest.losses[s] for s in (3, 4)] == [full.losses[s] for s in (3, 4)]
    assert ckpt.read_meta(cdir / "step_0000004")["format_version"] == ckpt.FORMAT_VERSION


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_forged_dcp_index_cannot_run_code(tmp_path: Path) -> None:
    import hashlib
    import pickle

    _trainer(tmp_path).fit(stop_after=2)
    step = tmp_path / "checkpoints" / "step_0000002"
    index = step / ckpt.DCP_METADATA
    index.write_bytes(pickle.dumps(_Evil()))
    meta = json.loads((step / ckpt.META_FILE).read_text())  # make the forgery pass the size and hash checks
    meta["files"][ckpt.DCP_METADATA] = {"size": index.stat().st_size, "sha256": hashlib.sha256(index.read_bytes()).hexdigest()}
    (step / ckpt.META_FILE).write_text(json.dumps(meta))
    with pytest.raises(Exception, match="refusing to load posix.system"):
        ckpt.read_tensors(step)


def test_resume_on_another_layout_needs_the_same_global_batch(tmp_path: Path) -> None:
    from open_videoprism.train.data import rescale_state

    _trainer(tmp_path).fit(stop_after=2)  # 1 rank x 1 micro-batch of 4
    with pytest.raises(CheckpointError, match="global batch of 4"):
        _trainer(tmp_path, overrides=["batch_size=2"]).fit(resume=True)
    # 2 micro-batches of 2 make the same global batch: the position is converted and the run continues.
    cfg = load_config(CONFIGS / "stage1-tiny.yaml", [*OVERRIDES, "batch_size=2", "accum_steps=2"])
    stream = lambda s: RandomPairStream(2, num_samples=12, seed=1, state=s, accum_steps=2)  # noqa: E731
    rest = Trainer(cfg, build_objective(cfg), stream, tmp_path, progress=False).fit(resume=True)
    assert rest.resumed_from == 2 and sorted(rest.losses) == [3, 4]
    assert ckpt.read_meta(tmp_path / "checkpoints" / "step_0000004")["data"] == {"batches": 8}  # 4 steps x 2
    state = {"batches": 6, "streams": [{"epoch": 1, "batch": 4, "skips": {}, "worker_positions": None}]}
    assert rescale_state(state, 2, 4) == {"batches": 12, "streams": [{"epoch": 1, "batch": 8, "skips": {}, "worker_positions": None}]}
    with pytest.raises(ValueError, match="WebDataset"):
        rescale_state({"batch": 2, "worker_positions": [[0, 3]]}, 1, 2)
