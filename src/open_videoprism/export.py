"""Export a model for other runtimes: Hugging Face transformers folders and ONNX.

* :func:`export_hf` writes ``config.json`` + ``model.safetensors`` that
  transformers' ``VideoPrismClipModel`` (video-text), ``VideoPrismVideoModel``
  (encoder + pooling head) or ``VideoPrismVisionModel`` (encoder) load. The key
  table is :mod:`open_videoprism.hf`'s, run backwards and checked key by key.
  The text position table is saved as the *official* sinusoid (denominator
  ``D/2 - 1``) in HF's ``position_embedding`` buffer, so HF computes the
  official text embeddings from the exported folder (HF's own init uses ``D/2``).
* :func:`export_onnx` writes the video encoder (video -> tokens, embedding) as
  ONNX with a dynamic batch axis, for onnxruntime and friends.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import torch

from open_videoprism import hf
from open_videoprism.atomic import atomic_path, write_text
from open_videoprism.errors import CheckpointError
from open_videoprism.models.pos_embed import sinusoidal_table
from open_videoprism.models.videoprism import VideoPrism

_BLOCKS = {
    "encoder.spatial.blocks": "vision_model.spatial_layers",
    "encoder.temporal.blocks": "vision_model.temporal_layers",
    "auxiliary.blocks": "auxiliary_layers",
    "text.transformer.blocks": "text_model.layers",
}
_PARTS = {ours: theirs for theirs, ours in hf._LAYER_PARTS.items()}
_SINGLES = {ours: theirs for theirs, ours in {**hf._VISION, **{f"vision_model.{k}": v for k, v in hf._VISION.items()},
                                               **hf._HEAD, **{f"text_model.{k}": v for k, v in hf._TEXT.items()}}.items()}


def _architecture(model: VideoPrism) -> str:
    if model.text is not None:
        return "VideoPrismClipModel"
    return "VideoPrismVideoModel" if model.pooler is not None else "VideoPrismVisionModel"


def _hf_key(ours: str, arch: str) -> str:
    """Our key -> the HF key of ``arch`` (checked against the forward table in :mod:`hf`)."""
    for prefix, theirs in _BLOCKS.items():
        if ours.startswith(prefix + "."):
            idx, rest = ours[len(prefix) + 1:].split(".", 1)
            part, leaf = rest.rsplit(".", 1)
            if part not in _PARTS:
                raise CheckpointError(f"{ours}: no Hugging Face counterpart (HF has no sandwich/primer_hybrid norms)")
            key = f"{theirs}.{idx}.{_PARTS[part]}.{leaf}"
            break
    else:
        module, _, leaf = ours.rpartition(".")
        if ours in _SINGLES:
            key = _SINGLES[ours]
        elif module in _SINGLES:
            key = f"{_SINGLES[module]}.{leaf}"
        else:
            raise CheckpointError(f"{ours}: no Hugging Face counterpart")
    if arch == "VideoPrismVisionModel":
        key = key.removeprefix("vision_model.")
    elif arch == "VideoPrismClipModel" and not key.startswith("text_model."):
        key = "video_model." + key
    if hf._map_key(key) != ours:  # the two tables must agree
        raise CheckpointError(f"export key table out of step with hf.py: {ours} -> {key} -> {hf._map_key(key)}")
    return key


def to_hf_state_dict(model: VideoPrism) -> dict[str, torch.Tensor]:
    """Our weights under HF names, with HF's storage conventions (LayerNorm gamma - 1, Conv3d patches)."""
    arch = _architecture(model)
    out: dict[str, torch.Tensor] = {}
    for ours, value in model.state_dict().items():
        key = _hf_key(ours, arch)
        value = value.detach().float().cpu()
        if hf._LAYERNORMS.search(key):
            value = value - 1.0
        if ours == "encoder.patch_embed.weight":
            value = value.unsqueeze(2)
        elif ours in ("encoder.spatial_pos", "encoder.temporal_pos"):
            value = value.unsqueeze(0)
        elif ours == "pooler.query":
            value = value.reshape(1, 1, -1)
        out[key] = value.contiguous()
    if model.text is not None:
        t = model.text.cfg
        out["text_model.embeddings.position_embedding"] = sinusoidal_table(t.max_length, t.width).contiguous()
        out["text_model.embeddings.position_ids"] = torch.arange(t.max_length)[None]
    return out


def hf_config(model: VideoPrism) -> dict:
    """``config.json`` for the exported folder."""
    cfg, v = model.cfg, model.cfg.vision
    arch = _architecture(model)
    if model.pooler is not None and cfg.pooler_dim != v.mlp_dim:
        raise CheckpointError(
            f"pooler_dim {cfg.pooler_dim} != mlp_dim {v.mlp_dim}: HF's pooling head has head_dim = "
            "intermediate_size / heads, so this model has no HF equivalent (every released model does)")
    vision = {
        "model_type": "videoprism_vision_model", "image_size": v.image_size, "num_frames": v.num_frames,
        "tubelet_size": [1, v.patch_size, v.patch_size], "num_channels": 3, "hidden_size": v.width,
        "num_attention_heads": v.num_heads, "intermediate_size": v.mlp_dim, "hidden_act": "gelu_python",
        "layer_norm_eps": 1e-6, "qkv_bias": True, "num_spatial_layers": v.spatial_layers,
        "num_temporal_layers": v.temporal_layers, "attn_logit_softcapping": v.logit_cap or None,
        "num_auxiliary_layers": cfg.auxiliary_layers, "apply_l2norm": True,
    }
    if arch != "VideoPrismClipModel":
        return {**vision, "architectures": [arch]}
    t = cfg.text
    if t is None:
        raise CheckpointError("this model has no text tower; export it as VideoPrismVisionModel or VideoPrismVideoModel")
    if t.norm_policy != "pre":
        raise CheckpointError(f"text norm_policy {t.norm_policy!r}: HF's VideoPrism text tower has pre-norm only")
    text = {
        "model_type": "videoprism_text_model", "vocab_size": t.vocab_size, "hidden_size": t.width,
        "intermediate_size": t.mlp_dim, "num_hidden_layers": t.num_layers, "num_attention_heads": t.num_heads,
        "max_position_embeddings": t.max_length, "hidden_act": "relu", "layer_norm_eps": 1e-6, "pad_token_id": 0,
        "qkv_bias": True, "apply_l2norm": True, "attn_logit_softcapping": t.logit_cap or None,
    }
    return {"model_type": "videoprism", "architectures": [arch], "vision_config": vision, "text_config": text}


def export_hf(model: VideoPrism, out: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Path:
    """Write a transformers folder (``config.json``, ``model.safetensors``; ``spiece.model`` if given)."""
    from safetensors.torch import save_file

    out = Path(out)
    config = hf_config(model)
    state = to_hf_state_dict(model)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    if tokenizer is not None:
        with atomic_path(out / "spiece.model") as tmp:
            tmp.write_bytes(Path(tokenizer).read_bytes())
    write_text(out / "config.json", json.dumps(config, indent=2) + "\n")  # last: its presence marks a complete folder
    return out


class _VideoEncoder(torch.nn.Module):
    """``video [B, T, 3, H, W] -> (tokens [B, T*N, D], embedding [B, D])`` (embedding only with a pooler)."""

    def __init__(self, model: VideoPrism) -> None:
        super().__init__()
        self.model = model

    def forward(self, video: torch.Tensor):
        out = self.model.encode_video(video, frame_embeddings=False)
        return (out.tokens, out.embedding) if out.embedding is not None else (out.tokens,)


def export_onnx(model: VideoPrism, out: str | os.PathLike, frames: int | None = None, size: int | None = None,
                opset: int = 18) -> Path:
    """Write the video encoder as ONNX (batch axis dynamic; frames and size fixed at export)."""
    v = model.cfg.vision
    frames, size = frames or v.num_frames, size or v.image_size
    wrapper = _VideoEncoder(model.float().eval()).eval()
    # Their notes (graph passes, optional torchvision ops, pytree deprecations) are not for users.
    for name in ("onnx_ir", "onnxscript"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    example = torch.rand(2, frames, 3, size, size)
    names = ["tokens", "embedding"] if model.pooler is not None else ["tokens"]
    out = Path(out)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(out) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # torch.export-based exporter (the maintained one; needs onnxscript). Only the batch axis is dynamic.
        torch.onnx.export(wrapper, (example,), str(tmp), input_names=["video"], output_names=names,
                          dynamic_shapes={"video": {0: batch}}, opset_version=opset, dynamo=True,
                          external_data=False, verbose=False)
    return out


__all__ = ["export_hf", "export_onnx", "hf_config", "to_hf_state_dict"]
