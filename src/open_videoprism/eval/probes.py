"""Classification probes on frozen tokens: the attentive (MAP) probe of
VideoGLUE and a linear probe on mean-pooled tokens.

The attentive probe follows VideoGLUE's ``AttentionPoolerClassificationHead``:
LayerNorm on the tokens -> one learned query cross-attending to all tokens
(:class:`open_videoprism.models.layers.AttentionPool`, 12 heads by default) ->
dropout -> linear classifier. Training: AdamW, label smoothing, linear warmup
then cosine decay. Features are precomputed (the backbone is frozen), so a
probe trains in seconds on CPU.

Multi-clip: features come as ``[N, K, L, D]`` (K clips per video). Training
treats every clip as a sample; evaluation averages the class probabilities of
a video's K clips (VideoGLUE's multi-view testing).

At scale: features may be a tensor or a :class:`~open_videoprism.eval.store.TokenStore`
(memory-mapped shards); either way each minibatch is gathered, upcast to float32 and moved
to the probe's ``device``, so a store trains the very same probe as the tensor it holds.
``ProbeConfig.order = "shards"`` streams over the shards (:class:`~open_videoprism.eval.store.ShardWindows`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from open_videoprism.errors import ConfigError
from open_videoprism.eval.fit import fit
from open_videoprism.eval.store import ShardWindows, TokenSource
from open_videoprism.models.layers import AttentionPool, init_dense, init_norm, layer_norm

ProbeKind = Literal["attentive", "linear"]
SampleOrder = Literal["global", "shards"]
Features = torch.Tensor | TokenSource  # [N, K, L, D] / [N, L, D] / [N, D] tensor, or a store
VAL_POINTS = 50  # held-out points on a probe's training curve


def default_num_heads(width: int, preferred: int = 12) -> int:
    """The largest head count <= ``preferred`` dividing ``width`` (12 for 768, 8 for 64)."""
    for h in range(min(preferred, width), 0, -1):
        if width % h == 0:
            return h
    return 1


class AttentiveProbe(nn.Module):
    """VideoGLUE MAP probe: ``LN(tokens) -> AttentionPool -> dropout -> Linear``."""

    def __init__(self, dim: int, num_classes: int, num_heads: int | None = None, dropout: float = 0.5) -> None:
        super().__init__()
        self.norm = layer_norm(dim)
        self.pool = AttentionPool(dim, num_heads or default_num_heads(dim))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        init_norm(self.norm)
        init_dense(self.head)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B, L, D] -> logits [B, C]."""
        pooled = self.pool(self.norm(tokens)).squeeze(1)
        return self.head(self.dropout(pooled))


class LinearProbe(nn.Module):
    """Mean-pool the tokens, standardise (BatchNorm without affine, as MAE's
    linear probe), then one linear layer. Accepts ``[B, L, D]`` or ``[B, D]``."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        init_dense(self.head)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.mean(1) if tokens.dim() == 3 else tokens
        return self.head(self.dropout(self.bn(x)))


@dataclass
class ProbeConfig:
    """Probe hyper-parameters. VideoGLUE uses lr 1e-4 for ~150 epochs of K400
    (~138k steps); the defaults here are for small sets (a few hundred clips):
    a 10x larger lr, and 100 epochs because 40 left the training loss far from
    converged on 100 clips (train accuracy 12%). ``order``/``shard_window``: how an
    epoch visits the samples (``"shards"`` streams a memory-mapped store shard by shard)."""

    kind: ProbeKind = "attentive"
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    dropout: float = 0.5
    num_heads: int | None = None  # None: default_num_heads(width)
    seed: int = 0
    # "global": a permutation of all clips per epoch. "shards": shards in a random order, shuffled
    # within windows of shard_window shards, so only those are read at a time (sets beyond the page cache).
    order: SampleOrder = "global"
    shard_window: int = 4

    def __post_init__(self) -> None:
        if self.order not in ("global", "shards"):
            raise ConfigError(f"order: must be global or shards, got {self.order!r}")
        if self.shard_window < 1:
            raise ConfigError(f"shard_window: must be >= 1, got {self.shard_window}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ProbeHistory:
    """Per-epoch training curves (what plots.plot_training_curves draws)."""

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    val_epoch: list[int] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def build_probe(cfg: ProbeConfig, dim: int, num_classes: int) -> nn.Module:
    if cfg.kind == "attentive":
        return AttentiveProbe(dim, num_classes, cfg.num_heads, cfg.dropout)
    if cfg.kind == "linear":
        return LinearProbe(dim, num_classes)
    raise ValueError(f"unknown probe kind {cfg.kind!r}; expected 'attentive' or 'linear'")


def as_clip_tokens(features: torch.Tensor) -> torch.Tensor:
    """Normalise feature layouts to ``[N, K, L, D]``: pooled ``[N, D]`` becomes one
    clip of one token, ``[N, L, D]`` one clip; ``[N, K, L, D]`` stays."""
    if features.dim() == 2:
        return features[:, None, None, :]
    if features.dim() == 3:
        return features[:, None]
    if features.dim() == 4:
        return features
    raise ValueError(f"features must be [N, D], [N, L, D] or [N, K, L, D]; got {tuple(features.shape)}")


def _loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    if labels.dim() == 2:  # multi-hot: per-class sigmoid with smoothed targets
        target = labels.float() * (1 - smoothing) + 0.5 * smoothing
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, labels, label_smoothing=smoothing)


def clip_samples(features: Features) -> tuple[Callable[[torch.Tensor], torch.Tensor], int, int]:
    """``(take, n, k)`` for features of ``n`` videos of ``k`` clips: ``take(idx)`` is the float32
    tokens ``[B, L, D]`` of clip samples ``idx`` (sample ``i`` = clip ``i % k`` of video ``i // k``),
    indexed from a tensor or read from a store; only that batch is ever upcast."""
    if isinstance(features, torch.Tensor):
        feats = as_clip_tokens(features)
        n, k = feats.shape[:2]
        flat = feats.reshape(n * k, *feats.shape[2:])
        return (lambda idx: flat[idx].float()), n, k
    n, k = features.shape[:2]
    return (lambda idx: features.gather(idx // k, idx % k)), n, k


def sample_shards(features: Features) -> torch.Tensor:
    """``[N * K]``: the shard of each clip sample (an in-memory tensor is one shard)."""
    if isinstance(features, torch.Tensor):
        n, k = as_clip_tokens(features).shape[:2]
        return torch.zeros(n * k, dtype=torch.long)
    return torch.from_numpy(features.row_shards()).repeat_interleave(features.shape[1])


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _forked_rng(device: torch.device) -> AbstractContextManager:
    """Fork the CPU RNG and ``device``'s own (a GPU's dropout draws from it): the caller's stay untouched."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    return torch.random.fork_rng(devices=[device], device_type=device.type)


@torch.no_grad()
def predict(probe: nn.Module, features: Features, batch_size: int = 256, multilabel: bool = False) -> torch.Tensor:
    """Scores ``[N, C]`` (on the CPU) for features ``[N, K, L, D]`` / ``[N, L, D]`` / ``[N, D]`` or a
    store: softmax (sigmoid for multi-label) probabilities averaged over the K clips. Batches run
    on the probe's device."""
    probe.eval()
    device = _device_of(probe)
    take, n, k = clip_samples(features)
    batches = (torch.arange(i, min(i + batch_size, n * k)) for i in range(0, n * k, batch_size))
    out = torch.cat([probe(take(idx).to(device, non_blocking=True)) for idx in batches])
    probs = out.sigmoid() if multilabel else out.softmax(-1)
    return probs.view(n, k, -1).mean(1).cpu()


def train_probe(
    train_features: Features,
    train_labels: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    val_features: Features | None = None,
    val_labels: torch.Tensor | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, ProbeHistory]:
    """Train a probe on frozen features; deterministic for a given ``cfg.seed``.

    Args:
        train_features: ``[N, K, L, D]`` tokens (K clips), ``[N, L, D]`` or pooled ``[N, D]``, or a
            :class:`~open_videoprism.eval.store.TokenStore` (read a minibatch at a time: the same
            probe as from its tokens in memory, bit for bit).
        train_labels: ``[N]`` class ids, or ``[N, C]`` multi-hot (then a sigmoid/BCE probe).
        val_features, val_labels: optional held-out set scored at about ``VAL_POINTS`` epochs.
        device: where the probe trains (each minibatch is moved there); the probe is returned on it.
    """
    take, n, k = clip_samples(train_features)
    num_samples = n * k
    # Every clip is a training sample carrying its video's label.
    y = train_labels.repeat_interleave(k, dim=0)
    multilabel = y.dim() == 2
    if not multilabel:
        y = y.long()
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}); got [{int(y.min())}, {int(y.max())}]")
    dev = torch.device(device)
    order = ShardWindows(sample_shards(train_features), cfg.shard_window) if cfg.order == "shards" else None

    # Seed init, dropout and shuffling locally: the caller's global RNG stays untouched.
    with _forked_rng(dev):
        torch.manual_seed(cfg.seed)
        probe = build_probe(cfg, train_features.shape[-1], num_classes).to(dev)
        y_dev = y.to(dev)
        history = ProbeHistory()
        correct = torch.zeros((), dtype=torch.long, device=dev)  # summed on the device: no host sync per step

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            logits = probe(take(idx).to(dev, non_blocking=True))
            labels = y_dev[idx.to(dev)]
            if not multilabel:
                correct.add_((logits.argmax(-1) == labels).sum())
            return _loss(logits, labels, cfg.label_smoothing)

        def on_epoch(epoch: int, loss: float, lr: float) -> None:
            seen = (num_samples // min(cfg.batch_size, num_samples)) * min(cfg.batch_size, num_samples)
            history.epoch.append(epoch + 1)
            history.loss.append(loss)
            history.train_accuracy.append(100.0 * float(correct) / seen if not multilabel else float("nan"))
            history.lr.append(lr)
            correct.zero_()
            # Scored at about VAL_POINTS epochs and the last one, not after every epoch (a full prediction
            # pass each time). It only draws the curve, so the probe is the same either way.
            scored = epoch + 1 == cfg.epochs or (epoch + 1) % max(1, cfg.epochs // VAL_POINTS) == 0
            if val_features is not None and val_labels is not None and not multilabel and scored:
                scores = predict(probe, val_features)
                history.val_epoch.append(epoch + 1)
                history.val_accuracy.append(100.0 * float((scores.argmax(-1) == val_labels.long()).float().mean()))

        fit(
            probe, num_samples, batch_loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay, seed=cfg.seed, warmup_fraction=cfg.warmup_fraction,
            drop_last=True,  # BatchNorm (linear probe) needs more than one sample
            order=order, on_epoch=on_epoch, desc=f"{cfg.kind} probe", progress=progress,
        )
    probe.eval()
    return probe, history
