"""The minibatch loop every evaluation head trains with.

Probes, the temporal localization head and the caption/QA decoder all train a
small module on frozen features the same way: AdamW over the parameter groups
of :func:`open_videoprism.optim.param_groups` (each module declares what takes
no weight decay), linear warmup then cosine decay to zero
(:func:`open_videoprism.optim.lr_factor`, the pretraining schedule), a seeded
permutation per epoch. :func:`fit` is that loop; each caller supplies the loss
of a batch of sample indices.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from open_videoprism.optim import lr_factor, param_groups
from open_videoprism.progress import progress_bar


def fit(
    model: nn.Module,
    num_samples: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    warmup_fraction: float = 0.1,
    drop_last: bool = False,
    order: Callable[[torch.Generator], torch.Tensor] | None = None,
    on_epoch: Callable[[int, float, float], None] | None = None,
    desc: str = "head",
    progress: bool = True,
) -> list[float]:
    """Train ``model`` for ``epochs`` over ``num_samples`` samples; returns the mean loss of each epoch.

    ``batch_loss(idx)`` gets a LongTensor of sample indices and returns the scalar loss of that batch.
    ``drop_last`` drops the last partial batch (BatchNorm heads need more than one sample).
    ``order(generator)`` gives an epoch's sample order, a permutation of ``range(num_samples)``
    (default: a uniform random one; probes stream over shards with :class:`~open_videoprism.eval.store.ShardWindows`).
    ``on_epoch(epoch, mean_loss, lr)`` runs after each epoch (histories, validation).
    The caller seeds the model's initialisation; the sample order uses its own generator from ``seed``.
    """
    bs = min(batch_size, num_samples)
    steps = max(1, num_samples // bs if drop_last else -(-num_samples // bs))
    total = epochs * steps
    warmup = int(warmup_fraction * total)
    # foreach: one multi-tensor update instead of a Python loop over parameters; on the CPU too it
    # halves a small probe's step (36 -> 19 ms, 64-wide MAP probe, 1 thread, docs/benchmarks.md).
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, warmup, "cosine"))
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    bar = progress_bar(range(epochs), desc=desc, enabled=progress, leave=False)
    for epoch in bar:
        model.train()
        perm = order(gen) if order is not None else torch.randperm(num_samples, generator=gen)
        step_losses, sizes = [], []
        for i in range(steps):
            idx = perm[i * bs : (i + 1) * bs]
            loss = batch_loss(idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_losses.append(loss.detach())
            sizes.append(len(idx))
        # Read once per epoch: a float() per step would wait for a GPU at every step. Summed in
        # float64 in step order, as the per-step float() was, so the curve is the same.
        loss_sum = sum(v * n for v, n in zip(torch.stack(step_losses).tolist(), sizes))
        losses.append(loss_sum / sum(sizes))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1], opt.param_groups[0]["lr"])
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
