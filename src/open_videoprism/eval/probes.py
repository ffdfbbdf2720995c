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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from open_videoprism.eval.fit import fit
from open_videoprism.models.layers import AttentionPool, init_dense, init_norm, layer_norm

ProbeKind = Literal["attentive", "linear"]
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
    converged on 100 clips (train accuracy 12%)."""

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


@torch.no_grad()
def predict(probe: nn.Module, features: torch.Tensor, batch_size: int = 256, multilabel: bool = False) -> torch.Tensor:
    """Scores ``[N, C]`` for features ``[N, K, L, D]`` / ``[N, L, D]`` / ``[N, D]``:
    softmax (sigmoid for multi-label) probabilities averaged over the K clips."""
    probe.eval()
    feats = as_clip_tokens(features)
    n, k = feats.shape[:2]
    flat = feats.reshape(n * k, *feats.shape[2:]).float()
    out = torch.cat([probe(flat[i : i + batch_size]) for i in range(0, n * k, batch_size)])
    probs = out.sigmoid() if multilabel else out.softmax(-1)
    return probs.view(n, k, -1).mean(1)


def train_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    val_features: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    progress: bool = True,
) -> tuple[nn.Module, ProbeHistory]:
    """Train a probe on frozen features; deterministic for a given ``cfg.seed``.

    Args:
        train_features: ``[N, K, L, D]`` tokens (K clips), ``[N, L, D]`` or pooled ``[N, D]``.
        train_labels: ``[N]`` class ids, or ``[N, C]`` multi-hot (then a sigmoid/BCE probe).
        val_features, val_labels: optional held-out set scored after each epoch.
    """
    feats = as_clip_tokens(train_features.float())
    n, k = feats.shape[:2]
    # Every clip is a training sample carrying its video's label.
    x = feats.reshape(n * k, *feats.shape[2:])
    y = train_labels.repeat_interleave(k, dim=0)
    multilabel = y.dim() == 2
    if not multilabel:
        y = y.long()
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}); got [{int(y.min())}, {int(y.max())}]")

    # Seed init and shuffling locally: the caller's global RNG stays untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        probe = build_probe(cfg, x.shape[-1], num_classes)
        history = ProbeHistory()
        correct = [0.0]

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            logits = probe(x[idx])
            if not multilabel:
                correct[0] += float((logits.argmax(-1) == y[idx]).sum())
            return _loss(logits, y[idx], cfg.label_smoothing)

        def on_epoch(epoch: int, loss: float, lr: float) -> None:
            seen = (len(x) // min(cfg.batch_size, len(x))) * min(cfg.batch_size, len(x))
            history.epoch.append(epoch + 1)
            history.loss.append(loss)
            history.train_accuracy.append(100.0 * correct[0] / seen if not multilabel else float("nan"))
            history.lr.append(lr)
            correct[0] = 0.0
            # Scored at about VAL_POINTS epochs and the last one: every epoch of an 800-epoch probe spent a
            # quarter of its time on this curve. It only draws the curve, so the probe is the same either way.
            scored = epoch + 1 == cfg.epochs or (epoch + 1) % max(1, cfg.epochs // VAL_POINTS) == 0
            if val_features is not None and val_labels is not None and not multilabel and scored:
                scores = predict(probe, val_features)
                history.val_epoch.append(epoch + 1)
                history.val_accuracy.append(100.0 * float((scores.argmax(-1) == val_labels.long()).float().mean()))

        fit(
            probe, len(x), batch_loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            weight_decay=cfg.weight_decay, seed=cfg.seed, warmup_fraction=cfg.warmup_fraction,
            drop_last=True,  # BatchNorm (linear probe) needs more than one sample
            on_epoch=on_epoch, desc=f"{cfg.kind} probe", progress=progress,
        )
    probe.eval()
    return probe, history
