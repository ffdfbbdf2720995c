"""SentencePiece tokenisation as the official pipeline does it.

Canonicalise (punctuation -> space, lower case, single spaces, trailing
period), encode, prepend BOS only if the model defines one, no EOS, truncate
or pad with id 0 to ``max_length`` (64); paddings are 1.0 at padded positions.

The released models use the ``c4_en`` 32k vocabulary (``cc_en.32000``), which
this library cannot download: fetch ``sentencepiece.model`` from
``gs://t5-data/vocabs/cc_en.32000/`` (or the tokenizer files in the
``google/videoprism-lvt-*`` Hugging Face repos) and pass its path.
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from pathlib import Path

import torch

from open_videoprism.errors import UserError

MAX_LENGTH = 64
_PUNCT_TABLE = str.maketrans(string.punctuation, " " * len(string.punctuation))


TOKENIZER_FILE = "tokenizer.model"


def find_tokenizer(data: str | os.PathLike | None) -> Path | None:
    """The tokenizer that belongs to a dataset: ``tokenizer.model`` in the data folder
    (or next to a manifest), where ``videoprism synth`` writes it. None if there is none."""
    if data is None or str(data) == "random":
        return None
    p = Path(data)
    candidate = (p if p.is_dir() else p.parent) / TOKENIZER_FILE
    return candidate if candidate.is_file() else None


def canonicalize_text(text: str) -> str:
    """``"Hello, World!"`` -> ``"hello world."`` (the official canonicalisation)."""
    return " ".join(text.translate(_PUNCT_TABLE).lower().split()) + "."


class Tokenizer:
    """Callable tokenizer: ``ids, paddings = tok(["a video of drumming."])``."""

    def __init__(self, model_path: str | os.PathLike, canonicalize: bool = True) -> None:
        import sentencepiece as spm

        path = Path(model_path)
        if not path.is_file():
            raise UserError(
                f"{path}: SentencePiece model not found. The VideoPrism text models use the c4_en "
                "vocabulary (cc_en.32000/sentencepiece.model); it cannot be downloaded by this "
                "library: fetch it yourself and pass its path"
            )
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(path.read_bytes())
        except RuntimeError as exc:
            raise UserError(f"{path}: not a SentencePiece model ({exc})") from None
        self.canonicalize = canonicalize
        self.path = path

    @property
    def vocab_size(self) -> int:
        return self.sp.GetPieceSize()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    def encode(self, text: str) -> list[int]:
        """Token ids of one text (BOS included when the model has one), unpadded."""
        if self.canonicalize:
            text = canonicalize_text(text)
        ids = self.sp.EncodeAsIds(text)
        return ([self.bos_id] if self.bos_id >= 0 else []) + list(ids)

    def __call__(self, texts: Sequence[str] | str, max_length: int = MAX_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, max_length] int64, paddings [B, max_length] float32)``."""
        if isinstance(texts, str):
            texts = [texts]
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        paddings = torch.ones(len(texts), max_length, dtype=torch.float32)
        for i, text in enumerate(texts):
            toks = self.encode(text)[:max_length]
            ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
            paddings[i, : len(toks)] = 0.0
        return ids, paddings
