"""Evaluation figures as PNG, drawn on ``matplotlib.figure.Figure`` objects: no pyplot
state and no backend switch, so importing this never changes the caller's matplotlib.

* :func:`plot_confusion_matrix`: row-normalised confusion matrix of a probe.
* :func:`plot_retrieval_examples`: for a few captions, the query text and the
  thumbnails of the top-k retrieved videos (the correct one framed in green).
* :func:`plot_training_curves`: loss / accuracy / learning rate per epoch.

Every figure is written atomically (temporary file in the same folder, then
``os.replace``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from open_videoprism.atomic import atomic_path


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return out


def plot_confusion_matrix(
    matrix: torch.Tensor | np.ndarray, class_names: Sequence[str] | None, path: str | os.PathLike, title: str = ""
) -> Path:
    """Rows = true class, columns = predicted, normalised per row."""
    m = np.asarray(matrix, dtype=np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    c = m.shape[0]
    size = min(12.0, 2.5 + 0.35 * c)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    names = list(class_names) if class_names and len(class_names) == c else [str(i) for i in range(c)]
    if c <= 40:
        ax.set_xticks(range(c), names, rotation=90, fontsize=7)
        ax.set_yticks(range(c), names, fontsize=7)
    if c <= 15:
        for i in range(c):
            for j in range(c):
                if m[i, j]:
                    ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    return _save(fig, path)


def plot_retrieval_examples(
    queries: Sequence[str],
    ranked_videos: Sequence[Sequence[int]],
    correct: Sequence[int],
    thumbnails: torch.Tensor | None,
    path: str | os.PathLike,
) -> Path:
    """One row per query: its text, then the top-k videos' thumbnails (uint8 [N, 3, S, S])."""
    rows, k = len(queries), max(len(r) for r in ranked_videos)
    fig = Figure(figsize=(1.6 * k, 1.9 * rows))
    axes = fig.subplots(rows, k, squeeze=False)
    for r, (q, ranked, gt) in enumerate(zip(queries, ranked_videos, correct)):
        for c in range(k):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(ranked):
                ax.axis("off")
                continue
            v = ranked[c]
            if thumbnails is not None:
                ax.imshow(thumbnails[v].permute(1, 2, 0).numpy())
            else:
                ax.text(0.5, 0.5, f"#{v}", ha="center", va="center")
            color = "green" if v == gt else "red"
            for spine in ax.spines.values():
                spine.set_edgecolor(color)
                spine.set_linewidth(3)
            ax.set_xlabel(f"{c + 1}: video {v}", fontsize=7)
        axes[r][0].set_title(q if len(q) < 70 else q[:67] + "...", fontsize=8, loc="left")
    fig.suptitle("text -> video retrieval (green = the caption's video)", fontsize=9)
    return _save(fig, path)


def plot_training_curves(curves: Mapping[str, Sequence[float]], path: str | os.PathLike, title: str = "",
                         epochs: Mapping[str, Sequence[int]] | None = None) -> Path:
    """One panel per curve (e.g. ``{"loss": [...], "train_accuracy": [...], "lr": [...]}``); empty curves
    skipped. A curve not recorded every epoch takes its epochs from ``epochs[name]``."""
    epochs = epochs or {}
    items = [(k, v) for k, v in curves.items() if len(v) and k != "epoch"]
    fig = Figure(figsize=(3.6 * max(1, len(items)), 3.0))
    axes = fig.subplots(1, max(1, len(items)), squeeze=False)
    for ax, (name, values) in zip(axes[0], items):
        ax.plot(epochs.get(name, np.arange(1, len(values) + 1)), values)
        ax.set_xlabel("epoch")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
