"""Zero-shot evaluation with video-text models: retrieval and classification.

* Retrieval: cosine similarity between the L2-normalised video embeddings
  (``encode_video(...).embedding``) and caption embeddings
  (``encode_text``), scored with :func:`metrics.retrieval_metrics` (several
  captions per video supported).
* Classification: each class name is put into prompt templates (CLIP's
  recipe, which the paper follows), the template embeddings are averaged and
  re-normalised into one class embedding, and a video is assigned to the most
  similar class.

Both need a video-text model (``model.text`` and ``model.pooler``); an
encoder-only checkpoint raises :class:`NotVideoTextModelError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from open_videoprism.errors import UserError
from open_videoprism.models import VideoPrism
from open_videoprism.models.layers import l2_normalize
from open_videoprism.tokenizer import Tokenizer

# A short, generic subset of CLIP's Kinetics templates (the official colab uses the first).
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a video of {}.",
    "a video of a {}.",
    "a clip of {}.",
    "a video showing {}.",
    "footage of {}.",
)


class NotVideoTextModelError(UserError):
    """Zero-shot evaluation was asked of a checkpoint without a text encoder."""


class TokenizerMismatchError(UserError):
    """The tokenizer produces ids the model's text embedding table does not have."""


def require_video_text(model: VideoPrism, source: str = "the checkpoint") -> None:
    """Raise a one-line :class:`NotVideoTextModelError` unless ``model`` is video-text."""
    if model.text is None or model.pooler is None:
        raise NotVideoTextModelError(
            f"{source}: zero-shot retrieval/classification needs a video-text (LvT) model with a text "
            "encoder and a pooling head, but this is a video-only encoder; use `videoprism eval probe` "
            "for encoder-only checkpoints"
        )


def check_tokenizer(model: VideoPrism, tokenizer: Tokenizer) -> None:
    """Fail early, with a clear line, when the tokenizer's ids exceed the text vocabulary."""
    require_video_text(model)
    assert model.text is not None
    vocab = model.text.cfg.vocab_size
    if tokenizer.vocab_size > vocab:
        raise TokenizerMismatchError(
            f"{tokenizer.path}: tokenizer has {tokenizer.vocab_size} pieces but the model's text encoder "
            f"has a {vocab}-id vocabulary; pass the tokenizer the model was trained with (--tokenizer)"
        )


@torch.no_grad()
def encode_texts(model: VideoPrism, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings ``[len(texts), D]`` (float32, on CPU)."""
    check_tokenizer(model, tokenizer)
    assert model.text is not None
    out = []
    for i in range(0, len(texts), batch_size):
        ids, pads = tokenizer(list(texts[i : i + batch_size]), max_length=model.text.cfg.max_length)
        if int(ids.max()) >= model.text.cfg.vocab_size:  # defensive: ids beyond the declared size
            raise TokenizerMismatchError(
                f"{tokenizer.path}: token id {int(ids.max())} is outside the model's "
                f"{model.text.cfg.vocab_size}-id vocabulary; pass the matching --tokenizer"
            )
        out.append(model.encode_text(ids, pads).float().cpu())
    dim = model.text.cfg.width
    return torch.cat(out) if out else torch.zeros(0, dim)


def class_embeddings(
    model: VideoPrism,
    tokenizer: Tokenizer,
    class_names: Sequence[str],
    templates: Sequence[str] = PROMPT_TEMPLATES,
) -> torch.Tensor:
    """``[C, D]``: per class, the mean of its normalised prompt embeddings, re-normalised."""
    if not class_names:
        raise UserError("zero-shot classification needs at least one class name")
    prompts = [t.format(name) for name in class_names for t in templates]
    emb = encode_texts(model, tokenizer, prompts).view(len(class_names), len(templates), -1)
    return l2_normalize(emb.mean(1))


def similarity(video_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[num_texts, num_videos]`` (inputs are re-normalised)."""
    return l2_normalize(text_embeddings.float()) @ l2_normalize(video_embeddings.float()).t()


def classify(video_embeddings: torch.Tensor, class_embeddings_: torch.Tensor) -> torch.Tensor:
    """Zero-shot class scores ``[N, C]`` (cosine similarities)."""
    return similarity(class_embeddings_, video_embeddings)
