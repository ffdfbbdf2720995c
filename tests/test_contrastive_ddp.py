"""Two gloo processes on CPU: the gathered loss and gradients equal one process holding the whole batch."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import open_videoprism as ovp
from open_videoprism.objectives.contrastive import ContrastiveObjective, ContrastiveOptions
from open_videoprism.train.config import load_config
from open_videoprism.train.data import RandomPairStream
from open_videoprism.train.distributed import DistInfo, all_reduce_mean, free_port, wrap_ddp
from open_videoprism.train.engine import Trainer

GLOBAL_BATCH = 8
OVERRIDES = ["steps=3", f"batch_size={GLOBAL_BATCH}", "log_every=1", "ckpt_every=100", "objective.token_drop_ratio=0.0"]


def _objective() -> ContrastiveObjective:
    torch.manual_seed(0)
    return ContrastiveObjective(ovp.create_model("videoprism_lvt_test_tiny"), ContrastiveOptions(token_drop_ratio=0.0)).train()


def _batch() -> dict[str, torch.Tensor]:
    return RandomPairStream(GLOBAL_BATCH, num_samples=GLOBAL_BATCH, seed=3).batch(0)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        info = DistInfo(rank=rank, world_size=world, device=torch.device("cpu"))
        # 1) One forward/backward under DDP on this rank's half of the batch.
        obj = _objective()
        model = wrap_ddp(obj, info)
        n = GLOBAL_BATCH // world
        batch = {k: v[rank * n : (rank + 1) * n] for k, v in _batch().items()}
        loss = model(batch)["loss"]
        loss.backward()
        mean_loss = all_reduce_mean(loss)
        grads = {k: p.grad.clone() for k, p in obj.named_parameters() if p.grad is not None}
        # 2) Three engine steps, each rank holding half of every global batch.
        cfg = load_config(None, OVERRIDES + [f"batch_size={n}"])
        stream = lambda s: RandomPairStream(n, num_samples=16, seed=5, rank=rank, world_size=world, state=s)  # noqa: E731
        res = Trainer(cfg, _objective(), stream, None, info=info, progress=False).fit()
        if rank == 0:
            torch.save({"loss": mean_loss, "grads": grads, "engine_losses": res.losses}, out)
    finally:
        dist.destroy_process_group()


def test_ddp_gather_matches_single_process(tmp_path: Path) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)

    obj = _objective()
    loss = obj(_batch())["loss"]
    loss.backward()
    torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    ref = {k: p.grad for k, p in obj.named_parameters() if p.grad is not None}
    assert set(got["grads"]) == set(ref)
    for k in ref:
        torch.testing.assert_close(got["grads"][k], ref[k], rtol=1e-4, atol=1e-6, msg=lambda m, k=k: f"{k}: {m}")

    cfg = load_config(None, OVERRIDES)
    single = Trainer(cfg, _objective(), lambda s: RandomPairStream(GLOBAL_BATCH, num_samples=16, seed=5, state=s), None, progress=False).fit()
    assert sorted(got["engine_losses"]) == [1, 2, 3]
    for step, value in single.losses.items():
        assert abs(got["engine_losses"][step] - value) < 1e-4, (step, got["engine_losses"][step], value)
