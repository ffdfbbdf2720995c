"""Captioning and question answering on frozen video features.

The paper (§3.3) feeds frozen VideoPrism tokens through a one-layer Perceiver
resampler into a frozen PaLM-2 and trains only the resampler. No LLM fits
here, so the language side is a small causal Transformer trained from scratch
together with the resampler, on the synthetic captions and QA pairs:

    frozen tokens [L, D] --PerceiverResampler--> Q latents [Q, d]
    [latents ; prompt words ; target words] --causal Transformer--> next word

* The resampler is one cross-attention layer with separate LayerNorms for the
  latents (queries) and the video tokens (keys/values) and no latent/token
  concatenation in the keys (the paper's variant), followed by an MLP.
* Text is word-level (:class:`WordVocab`, canonicalised as the official
  tokenizer does): the synthetic vocabulary is tiny and a word vocabulary keeps
  BLEU/CIDEr tokens and model tokens identical.
* Captioning has an empty prompt; QA prompts with the question. The loss is on
  the target words (and the end token) only. Decoding is greedy, at most 32
  steps, as in the paper.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from open_videoprism.eval.fit import fit
from open_videoprism.eval.metrics import caption_tokens
from open_videoprism.eval.probes import default_num_heads
from open_videoprism.models.layers import Attention, Mlp, Transformer, init_dense, init_norm, layer_norm, trunc_normal_
from open_videoprism.progress import progress_bar

PAD, BOS, EOS, SEP, UNK = 0, 1, 2, 3, 4
SPECIALS = ("<pad>", "<bos>", "<eos>", "<sep>", "<unk>")


class WordVocab:
    """Word-level vocabulary over canonicalised text (ids 0-4 are specials)."""

    def __init__(self, words: Sequence[str]) -> None:
        self.itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, texts: Sequence[str], min_count: int = 1) -> WordVocab:
        counts = Counter(w for t in texts for w in caption_tokens(t))
        return cls(sorted(w for w, c in counts.items() if c >= min_count))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(w, UNK) for w in caption_tokens(text)]

    def decode(self, ids: Sequence[int]) -> str:
        words = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                words.append(self.itos[i])
        return " ".join(words)


class PerceiverResampler(nn.Module):
    """One Perceiver layer: ``num_latents`` learned queries cross-attend to the tokens."""

    def __init__(self, in_dim: int, dim: int, num_latents: int = 8, num_heads: int = 4) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.latents = nn.Parameter(torch.zeros(num_latents, dim))
        self.norm_q = layer_norm(dim)
        self.norm_kv = layer_norm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm_mlp = layer_norm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        self.init_weights()

    def init_weights(self) -> None:
        init_dense(self.proj)
        trunc_normal_(self.latents, std=self.latents.shape[-1] ** -0.5)  # unit-norm queries
        for norm in (self.norm_q, self.norm_kv, self.norm_mlp):
            init_norm(norm)

    def no_weight_decay(self) -> set[str]:
        return {"latents"}

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L, in_dim]`` -> ``[B, num_latents, dim]``."""
        kv = self.norm_kv(self.proj(tokens))
        lat = self.latents.expand(tokens.shape[0], -1, -1)
        lat = lat + self.attn(self.norm_q(lat), context=kv)
        return lat + self.mlp(self.norm_mlp(lat))


class VideoTextDecoder(nn.Module):
    """Resampler + a small causal Transformer over ``[latents ; words]``."""

    def __init__(
        self,
        in_dim: int,
        vocab_size: int,
        dim: int = 128,
        num_latents: int = 8,
        num_layers: int = 2,
        num_heads: int | None = None,
        max_text: int = 64,
    ) -> None:
        super().__init__()
        heads = num_heads or default_num_heads(dim, 8)
        self.resampler = PerceiverResampler(in_dim, dim, num_latents, heads)
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(num_latents + max_text, dim))
        self.transformer = Transformer(num_layers, dim, heads, 4 * dim, "gelu", causal=True)
        self.norm = layer_norm(dim)
        self.lm_head = nn.Linear(dim, vocab_size)
        self.num_latents = num_latents
        self.max_text = max_text
        self.init_weights()

    def init_weights(self) -> None:
        init_dense(self.embed)
        trunc_normal_(self.pos)
        init_norm(self.norm)
        init_dense(self.lm_head)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def forward(self, tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Next-word logits ``[B, S, V]`` for every text position (``text`` [B, S])."""
        lat = self.resampler(tokens)
        x = torch.cat([lat, self.embed(text)], dim=1)
        x = x + self.pos[: x.shape[1]]
        h = self.norm(self.transformer(x))
        return self.lm_head(h[:, self.num_latents :])

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, prompts: Sequence[Sequence[int]], max_new: int = 32) -> list[list[int]]:
        """Greedy decoding after ``<bos> prompt``; returns the generated ids (without the prompt)."""
        self.eval()
        out: list[list[int]] = []
        for b in range(tokens.shape[0]):  # per sample: prompts differ in length
            seq = [BOS, *prompts[b]]
            gen: list[int] = []
            for _ in range(min(max_new, self.max_text - len(seq))):
                logits = self(tokens[b : b + 1], torch.tensor([seq]))[0, -1]
                logits[[PAD, BOS, SEP]] = float("-inf")
                nxt = int(logits.argmax())
                if nxt == EOS:
                    break
                gen.append(nxt)
                seq.append(nxt)
            out.append(gen)
        return out


@dataclass
class CaptionConfig:
    dim: int = 128
    num_latents: int = 8
    num_layers: int = 2
    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-4  # the paper's peak LR
    weight_decay: float = 1e-4
    max_new_tokens: int = 32
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextSample:
    """One training/eval example: the video row, a prompt (empty for captions) and the target."""

    video: int
    prompt: str
    target: str


def _encode_sample(vocab: WordVocab, s: TextSample, max_text: int) -> tuple[list[int], int]:
    """``[<bos> prompt <sep> target <eos>]`` and the position where the target starts."""
    prompt = vocab.encode(s.prompt) + [SEP] if s.prompt else []
    seq = [BOS, *prompt, *vocab.encode(s.target), EOS][:max_text]
    return seq, 1 + len(prompt)


def prompt_ids(vocab: WordVocab, prompt: str) -> list[int]:
    return vocab.encode(prompt) + [SEP] if prompt else []


def train_decoder(
    video_tokens: torch.Tensor,
    samples: Sequence[TextSample],
    vocab: WordVocab,
    cfg: CaptionConfig,
    progress: bool = True,
) -> tuple[VideoTextDecoder, list[float]]:
    """Train resampler + decoder on frozen ``video_tokens`` [N, L, D]; returns the model and per-epoch losses."""
    max_text = 64
    encoded = [_encode_sample(vocab, s, max_text) for s in samples]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = VideoTextDecoder(video_tokens.shape[-1], len(vocab), cfg.dim, cfg.num_latents, cfg.num_layers, max_text=max_text)

        def batch_loss(idx: torch.Tensor) -> torch.Tensor:
            rows = idx.tolist()
            length = max(len(encoded[j][0]) for j in rows)
            text = torch.full((len(rows), length), PAD, dtype=torch.long)
            # Loss on target words and EOS only: positions >= target start (shifted by one).
            weight = torch.zeros(len(rows), length - 1)
            for r, j in enumerate(rows):
                seq, start = encoded[j]
                text[r, : len(seq)] = torch.tensor(seq)
                weight[r, start - 1 : len(seq) - 1] = 1.0
            feats = video_tokens[[samples[j].video for j in rows]].float()
            logits = model(feats, text[:, :-1])
            ce = F.cross_entropy(logits.flatten(0, 1), text[:, 1:].flatten(), reduction="none")
            return (ce * weight.flatten()).sum() / weight.sum().clamp_min(1)

        losses = fit(model, len(samples), batch_loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                     weight_decay=cfg.weight_decay, seed=cfg.seed, desc="resampler+decoder", progress=progress)
    model.eval()
    return model, losses


def generate_texts(
    model: VideoTextDecoder,
    video_tokens: torch.Tensor,
    samples: Sequence[TextSample],
    vocab: WordVocab,
    max_new_tokens: int = 32,
    progress: bool = True,
) -> list[str]:
    """Greedy outputs for each sample (caption or answer)."""
    out = []
    for s in progress_bar(samples, desc="decoding", enabled=progress, leave=False):
        ids = model.generate(video_tokens[s.video : s.video + 1].float(), [prompt_ids(vocab, s.prompt)], max_new_tokens)[0]
        out.append(vocab.decode(ids))
    return out
