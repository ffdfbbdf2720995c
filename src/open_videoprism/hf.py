"""Hugging Face transformers VideoPrism weights -> our model.

Reads a folder saved by ``save_pretrained`` (``config.json`` +
``model.safetensors``, possibly sharded) of ``VideoPrismVisionModel``,
``VideoPrismVideoModel``, ``VideoPrismClipModel`` or the backbone of
``VideoPrismForVideoClassification``. transformers itself is not needed.

Known differences of HF's arithmetic from the official code (we always compute
the official one, so HF weights loaded here give the official outputs):

* text positions: HF's sinusoid uses the denominator ``D/2`` where the official
  code uses ``D/2 - 1`` (max abs difference 0.06 at D = 768), so HF's text
  embeddings differ from the official ones; ours follow the official formula;
* HF's L2 normalisation puts eps = 1e-6 inside the rsqrt (official 1e-12);
* HF's attention-pooling head has head_dim = intermediate_size / heads, so an
  HF video-text model always has ``pooler_dim == intermediate_size``;
* ``VideoPrismForVideoClassification``'s head has no official counterpart; only
  its backbone is loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from open_videoprism.errors import CheckpointError
from open_videoprism.models.config import TextConfig, VideoPrismConfig, VisionConfig

_LAYER_PARTS = {
    "attention.q_proj": "attn.q",
    "attention.k_proj": "attn.k",
    "attention.v_proj": "attn.v",
    "attention.o_proj": "attn.out",
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_VISION = {
    "layernorm1": "encoder.spatial_norm",
    "layernorm2": "encoder.temporal_norm",
    "spatial_embeddings.position_embeddings": "encoder.spatial_pos",
    "temporal_embeddings.position_embeddings": "encoder.temporal_pos",
    "spatial_embeddings.patch_embeddings.projection": "encoder.patch_embed",
}
_HEAD = {
    "head.per_dim_scale": "pooler.attn.per_dim_scale",
    "head.pooling_attention_query": "pooler.query",
    "head.q_proj": "pooler.attn.q",
    "head.k_proj": "pooler.attn.k",
    "head.v_proj": "pooler.attn.v",
    "head.o_proj": "pooler.attn.out",
    "head_layernorm": "pooler.norm",
}
_TEXT = {
    "embeddings.cls_emb": "text.cls",
    "embeddings.token_embedding": "text.token_embed",
    "layernorm": "text.norm",
}
# Buffers HF saves that we recompute (the official sinusoid) or do not need.
_IGNORED = re.compile(r"(embeddings\.position_embedding$|embeddings\.position_ids$|^classifier\.)")
_LAYERNORMS = re.compile(r"(layernorm\w*)\.weight$")


# Transformer layers: (regex on the HF key without "video_model.", our block prefix template).
_LAYER_RULES = [
    (re.compile(r"text_model\.layers\.(\d+)\.(.+)\.(weight|bias)$"), "text.transformer.blocks.{0}"),
    (re.compile(r"(?:vision_model\.)?spatial_layers\.(\d+)\.(.+)\.(weight|bias)$"), "encoder.spatial.blocks.{0}"),
    (re.compile(r"(?:vision_model\.)?temporal_layers\.(\d+)\.(.+)\.(weight|bias)$"), "encoder.temporal.blocks.{0}"),
    (re.compile(r"auxiliary_layers\.(\d+)\.(.+)\.(weight|bias)$"), "auxiliary.blocks.{0}"),
]


def _map_key(key: str) -> str | None:
    """HF key -> our key (None for keys we do not know)."""
    k = key.removeprefix("video_model.")
    for pattern, block in _LAYER_RULES:
        m = pattern.match(k)
        if m:
            part = _LAYER_PARTS.get(m[2])
            return None if part is None else f"{block.format(m[1])}.{part}.{m[3]}"
    if k.startswith("text_model."):
        return _lookup(_TEXT, k.removeprefix("text_model."))
    if k.startswith("head"):
        return _lookup(_HEAD, k)
    return _lookup(_VISION, k.removeprefix("vision_model."))


def _lookup(table: dict[str, str], k: str) -> str | None:
    if k in table:
        return table[k]
    base, _, leaf = k.rpartition(".")
    if base in table and leaf in ("weight", "bias"):
        return f"{table[base]}.{leaf}"
    return None


def hf_to_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map an HF VideoPrism state dict to ours (LayerNorm gamma - 1 -> gamma, Conv3d -> Conv2d)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in hf_state.items():
        if _IGNORED.search(key):
            continue
        ours = _map_key(key)
        if ours is None:
            raise CheckpointError(f"unexpected Hugging Face VideoPrism parameter {key!r}")
        if _LAYERNORMS.search(key):  # HF stores gamma - 1, like the official code
            value = value + 1.0
        if ours == "encoder.patch_embed.weight":
            value = value.squeeze(2)  # Conv3d (1, p, p) -> Conv2d
        elif ours in ("encoder.spatial_pos", "encoder.temporal_pos"):
            value = value.squeeze(0)
        elif ours == "pooler.query":
            value = value.reshape(-1, value.shape[-1])
        out[ours] = value.float()
    return out


def config_from_hf(cfg: dict) -> VideoPrismConfig:
    """Our config from an HF ``config.json`` dict (any VideoPrism architecture)."""
    archs = cfg.get("architectures") or []
    vcfg = cfg.get("vision_config", cfg)
    if vcfg.get("model_type", cfg.get("model_type", "")).startswith("videoprism") is False:
        raise CheckpointError("config.json is not a VideoPrism config")
    tubelet = vcfg.get("tubelet_size", [1, 18, 18])
    image = vcfg.get("image_size", 288)
    image = image[0] if isinstance(image, (list, tuple)) else image
    patch = int(tubelet[-1])
    if vcfg.get("hidden_act", "gelu_python") not in ("gelu_python", "gelu"):
        raise CheckpointError(f"unsupported vision activation {vcfg.get('hidden_act')!r}")
    vision = VisionConfig(
        patch_size=patch,
        grid=image // patch,
        num_frames=vcfg.get("num_frames", 16),
        width=vcfg.get("hidden_size", 768),
        spatial_layers=vcfg.get("num_spatial_layers", 12),
        temporal_layers=vcfg.get("num_temporal_layers", 4),
        num_heads=vcfg.get("num_attention_heads", 12),
        mlp_dim=vcfg.get("intermediate_size", 3072),
        logit_cap=vcfg.get("attn_logit_softcapping", 50.0) or 0.0,
    )
    with_head = any(a in ("VideoPrismClipModel", "VideoPrismVideoModel") for a in archs)
    text = None
    tcfg = cfg.get("text_config")
    if tcfg is not None and "VideoPrismClipModel" in archs:
        text = TextConfig(
            vocab_size=tcfg.get("vocab_size", 32000),
            width=tcfg.get("hidden_size", 768),
            num_layers=tcfg.get("num_hidden_layers", 12),
            num_heads=tcfg.get("num_attention_heads", 12),
            mlp_dim=tcfg.get("intermediate_size", 3072),
            logit_cap=tcfg.get("attn_logit_softcapping", 50.0) or 0.0,
            max_length=tcfg.get("max_position_embeddings", 64),
        )
    return VideoPrismConfig(
        vision=vision,
        auxiliary_layers=vcfg.get("num_auxiliary_layers", 2) if with_head else 0,
        pooler_dim=vision.mlp_dim if with_head else 0,
        text=text,
    )


def _shard_names(index: Path) -> list[str]:
    """The weight files an HF ``model.safetensors.index.json`` lists (plain names inside the folder)."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointError(f"{index}: unreadable shard index ({type(exc).__name__}: {exc}); re-save the model") from None
    if not names or not all(isinstance(n, str) and n and Path(n).name == n for n in names):
        raise CheckpointError(f"{index}: 'weight_map' must map names to file names inside the folder")
    return names


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from open_videoprism.checkpoints import read_safetensors

    index = folder / "model.safetensors.index.json"
    files = _shard_names(index) if index.exists() else ["model.safetensors"]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        path = folder / name
        if not path.exists():
            raise CheckpointError(
                f"{path}: missing; an HF folder needs model.safetensors (pytorch_model.bin is not read: "
                "this library never unpickles)"
            )
        state.update(read_safetensors(path)[1])
    return state


def load_hf_folder(folder: str | Path) -> tuple[VideoPrismConfig, dict[str, torch.Tensor]]:
    """``(config, our state dict)`` from an HF VideoPrism model folder."""
    folder = Path(folder)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"{folder / 'config.json'}: unreadable ({exc})") from None
    if not isinstance(cfg, dict) or not str(cfg.get("model_type", "")).startswith("videoprism"):
        got = cfg.get("model_type") if isinstance(cfg, dict) else type(cfg).__name__
        raise CheckpointError(f"{folder}: config.json has model_type {got!r}, not a VideoPrism model")
    try:
        config = config_from_hf(cfg)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, ZeroDivisionError) as exc:
        raise CheckpointError(
            f"{folder / 'config.json'}: malformed VideoPrism config ({type(exc).__name__}: {exc}); re-save the model"
        ) from None
    try:
        state = hf_to_state_dict(_read_weights(folder))
    except (RuntimeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{folder}: weights do not form a VideoPrism model ({exc})") from None
    if "VideoPrismForVideoClassification" in (cfg.get("architectures") or []):
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    return config, state
