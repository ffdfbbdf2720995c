"""Checkpoint formats: the official JAX ``.npz``, ours (safetensors + config), and loading.

* Official ``.npz`` (``flax_*_repeated.npz``): flattened ``params/...`` keys,
  transformer layers stacked on a leading axis, LayerNorm ``scale`` = gamma - 1,
  attention weights ``[D, heads, head_dim]``. Released files carry no config, so
  :func:`infer_config` rebuilds it from the parameter shapes.
* Ours: a ``.safetensors`` file whose metadata holds ``format`` and the model
  ``config`` (JSON); :func:`save_checkpoint` writes it atomically.
* Hugging Face transformers VideoPrism folders are read by
  :mod:`open_videoprism.hf`.

Nothing here unpickles: ``np.load(allow_pickle=False)`` and safetensors only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from open_videoprism.atomic import atomic_path
from open_videoprism.errors import CheckpointError, ConfigError
from open_videoprism.integrity import (
    check_config,
    check_state,
    expected_shapes,
    read_npz,
)
from open_videoprism.models.config import TextConfig, VideoPrismConfig, VisionConfig
from open_videoprism.models.registry import create_model
from open_videoprism.models.videoprism import VideoPrism
from open_videoprism.precision import resolve_dtype

FORMAT = "open_videoprism"
FORMAT_VERSION = "1"

# Released checkpoints: official registry name -> (Hugging Face repo, file). Loaded by name
# through :mod:`open_videoprism.hub` (which also knows our registry names and ``name@revision``).
PUBLIC_CHECKPOINTS: dict[str, tuple[str, str]] = {
    "videoprism_public_v1_base": ("google/videoprism-base-f16r288", "flax_base_f16r288_repeated.npz"),
    "videoprism_public_v1_large": ("google/videoprism-large-f8r288", "flax_large_f8r288_repeated.npz"),
    "videoprism_lvt_public_v1_base": ("google/videoprism-lvt-base-f16r288", "flax_lvt_base_f16r288_repeated.npz"),
    "videoprism_lvt_public_v1_large": ("google/videoprism-lvt-large-f8r288", "flax_lvt_large_f8r288_repeated.npz"),
}

_STACKS = {
    "spatial_encoder/transformers_stack/x_layers": "encoder.spatial.blocks",
    "temporal_encoder/transformers_stack/x_layers": "encoder.temporal.blocks",
    "auxiliary_encoder/transformers_stack/x_layers": "auxiliary.blocks",
    "text_encoder/unimodal_transformer/x_layers": "text.transformer.blocks",
}
# Within a transformer layer (official sub-path -> our sub-module).
_BLOCK_PARTS = {
    "layer_norm": "norm1",
    "pre_layer_norm": "norm1",
    "post_layer_norm": "post_norm1",
    "ff_layer/layer_norm": "norm2",
    "ff_layer/pre_layer_norm": "norm2",
    "ff_layer/post_layer_norm": "post_norm2",
    "self_attention/query": "attn.q",
    "self_attention/key": "attn.k",
    "self_attention/value": "attn.v",
    "self_attention/post": "attn.out",
    "ff_layer/ffn_layer1/linear": "mlp.fc1",
    "ff_layer/ffn_layer2/linear": "mlp.fc2",
}
_SINGLES = {
    "spatial_pos_emb/emb_var": "encoder.spatial_pos",
    "temporal_pos_emb/emb_var": "encoder.temporal_pos",
    "spatial_ln": "encoder.spatial_norm",
    "temporal_ln": "encoder.temporal_norm",
    "contrastive_vision_pooler/pooling_attention_query": "pooler.query",
    "contrastive_vision_pooler/pooling_attention/query": "pooler.attn.q",
    "contrastive_vision_pooler/pooling_attention/key": "pooler.attn.k",
    "contrastive_vision_pooler/pooling_attention/value": "pooler.attn.v",
    "contrastive_vision_pooler/pooling_attention/post": "pooler.attn.out",
    "contrastive_vision_pooler/pooling_attention/per_dim_scale/per_dim_scale": "pooler.attn.per_dim_scale",
    "contrastive_vision_pooler/pooling_attention_layer_norm": "pooler.norm",
    "text_encoder/token_emb/emb_var": "text.token_embed.weight",
    "text_encoder/cls_emb": "text.cls",
    "text_encoder/unimodal_ln": "text.norm",
}


def _strip(key: str) -> str:
    """``params/vision_encoder/x`` -> ``x``; ``params/x`` -> ``x``."""
    key = key[len("params/"):] if key.startswith("params/") else key
    return key[len("vision_encoder/"):] if key.startswith("vision_encoder/") else key


def _convert_leaf(module: str, leaf: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One official leaf -> our tensors. ``module`` is our sub-module path."""
    if leaf == "scale":  # LayerNorm stores gamma - 1
        return {f"{module}.weight": value + 1.0}
    if leaf in ("bias", "b"):  # q/k/v biases are [heads, head_dim]
        return {f"{module}.bias": value.reshape(-1)}
    if leaf == "kernel":  # Dense [in, out]
        return {f"{module}.weight": value.t()}
    if leaf == "w":  # attention [D, heads, head_dim]
        flat = value.reshape(value.shape[0], -1)
        return {f"{module}.weight": flat if module.endswith(".out") else flat.t()}
    raise CheckpointError(f"unexpected official parameter leaf {leaf!r} under {module!r}")


def official_to_state_dict(arrays: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, torch.Tensor]:
    """Map official ``params/...`` arrays to our state dict (layers unstacked).

    Works on any torch tensors, including ``meta`` ones (shape-only checks).
    """
    out: dict[str, torch.Tensor] = {}
    for raw_key, value in arrays.items():
        key = _strip(raw_key)
        value = torch.as_tensor(value)
        value = value.float() if value.device.type != "meta" else value
        if key.startswith("patch_projection/linear/"):
            if key.endswith("kernel"):  # [(p q c), D] -> Conv2d [D, c, p, q]
                d = value.shape[1]
                p = int(round((value.shape[0] / 3) ** 0.5))
                out["encoder.patch_embed.weight"] = value.reshape(p, p, 3, d).permute(3, 2, 0, 1)
            else:
                out["encoder.patch_embed.bias"] = value
            continue
        for src, dst in _STACKS.items():
            if key.startswith(src + "/"):
                part, leaf = key[len(src) + 1:].rsplit("/", 1)
                if part not in _BLOCK_PARTS:
                    raise CheckpointError(f"unknown official parameter {raw_key!r}")
                for i in range(value.shape[0]):
                    out.update(_convert_leaf(f"{dst}.{i}.{_BLOCK_PARTS[part]}", leaf, value[i]))
                break
        else:
            if key in _SINGLES:
                out[_SINGLES[key]] = value.reshape(-1, value.shape[-1]) if key.endswith("query") else value
                continue
            part, _, leaf = key.rpartition("/")
            if part not in _SINGLES:
                raise CheckpointError(f"unknown official parameter {raw_key!r}")
            out.update(_convert_leaf(_SINGLES[part], leaf, value))
    return {k: v.contiguous() for k, v in out.items()}


def infer_config(shapes: Mapping[str, Iterable[int]], logit_cap: float = 50.0) -> VideoPrismConfig:
    """Rebuild the model config from official parameter shapes alone.

    ``shapes`` maps official keys (``params/...``) to shapes. The logit cap is
    not visible in the shapes; every released model uses 50.
    """
    s = {_strip(k): tuple(int(x) for x in v) for k, v in shapes.items()}

    def get(key: str) -> tuple[int, ...]:
        if key not in s:
            raise CheckpointError(f"not an official VideoPrism parameter tree: missing {key!r}")
        return s[key]

    k_in, width = get("patch_projection/linear/kernel")
    patch = int(round((k_in / 3) ** 0.5))
    n_spatial = get("spatial_pos_emb/emb_var")[0]
    grid = int(round(n_spatial**0.5))
    if patch * patch * 3 != k_in or grid * grid != n_spatial:
        raise CheckpointError(f"patch kernel {k_in} or spatial table {n_spatial} is not square")

    def stack(prefix: str) -> tuple[int, int, int]:
        layers, _, heads, _ = get(f"{prefix}/self_attention/query/w")
        mlp = get(f"{prefix}/ff_layer/ffn_layer1/linear/kernel")[-1]
        return layers, heads, mlp

    sp_layers, heads, mlp = stack("spatial_encoder/transformers_stack/x_layers")
    tp_layers, _, _ = stack("temporal_encoder/transformers_stack/x_layers")
    vision = VisionConfig(
        patch_size=patch,
        grid=grid,
        num_frames=get("temporal_pos_emb/emb_var")[0],
        width=width,
        spatial_layers=sp_layers,
        temporal_layers=tp_layers,
        num_heads=heads,
        mlp_dim=mlp,
        logit_cap=logit_cap,
    )
    aux_key = "auxiliary_encoder/transformers_stack/x_layers/self_attention/query/w"
    aux_layers = s[aux_key][0] if aux_key in s else 0
    pool_key = "contrastive_vision_pooler/pooling_attention/query/w"
    pooler_dim = s[pool_key][1] * s[pool_key][2] if pool_key in s else 0
    text = None
    if "text_encoder/token_emb/emb_var" in s:
        vocab, t_width = s["text_encoder/token_emb/emb_var"]
        t_layers, t_heads, t_mlp = stack("text_encoder/unimodal_transformer/x_layers")
        hybrid = "text_encoder/unimodal_transformer/x_layers/pre_layer_norm/scale" in s
        text = TextConfig(
            vocab_size=vocab,
            width=t_width,
            num_layers=t_layers,
            num_heads=t_heads,
            mlp_dim=t_mlp,
            logit_cap=logit_cap,
            norm_policy="primer_hybrid" if hybrid else "pre",
        )
    return VideoPrismConfig(vision=vision, auxiliary_layers=aux_layers, pooler_dim=pooler_dim, text=text)


def load_official(path: str | os.PathLike) -> tuple[VideoPrismConfig, dict[str, torch.Tensor]]:
    """Read an official ``.npz`` checkpoint: ``(inferred config, our state dict)``.

    Headers are checked before any array is read (:func:`open_videoprism.integrity.read_npz`).
    """
    arrays = read_npz(Path(path))
    if not any(k.startswith("params/") for k in arrays):
        raise CheckpointError(f"{path}: no 'params/...' keys; not an official VideoPrism .npz checkpoint")
    try:
        cfg = infer_config({k: v.shape for k, v in arrays.items()})
        # Shapes first, on the meta device: a wrong-shaped array fails here, naming itself.
        official_to_state_dict({k: torch.empty(v.shape, device="meta") for k, v in arrays.items()})
        state = official_to_state_dict(arrays)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (ValueError, TypeError, IndexError, RuntimeError) as exc:
        raise CheckpointError(
            f"{path}: parameter shapes do not form a VideoPrism model ({exc}); the file is damaged or not an "
            "official VideoPrism checkpoint"
        ) from None
    return cfg, state


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    config: VideoPrismConfig,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``state_dict`` and ``config`` as one safetensors file, atomically.

    The file is written next to ``path`` and renamed into place, so a crash
    never leaves a half-written checkpoint under the final name.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": config.to_json()}
    meta.update(metadata or {})
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """``(metadata, tensors)`` of a safetensors file, with a clear error if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return meta, load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def load_checkpoint(path: str | os.PathLike) -> tuple[VideoPrismConfig, dict[str, torch.Tensor]]:
    """Read one of our safetensors checkpoints: ``(config, state dict)``."""
    meta, tensors = read_safetensors(path)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path}: safetensors file without open_videoprism metadata; convert it with "
            "`videoprism convert` (official .npz) or pass the Hugging Face model folder"
        )
    try:
        cfg = VideoPrismConfig.from_json(meta["config"])
    except (ValueError, TypeError, AttributeError, RecursionError, ConfigError) as exc:
        raise CheckpointError(
            f"{path}: corrupt 'config' metadata ({type(exc).__name__}: {str(exc)[:120]}); re-export the checkpoint"
        ) from None
    return cfg, tensors


def read_any(
    path: str | os.PathLike, strict: bool = False, revision: str | None = None
) -> tuple[VideoPrismConfig, dict[str, torch.Tensor]]:
    """Config and state dict from any supported source (see :func:`load`), validated.

    The config's values, every tensor's shape against it, dtypes and finiteness
    are checked before anything is allocated for a model
    (:mod:`open_videoprism.integrity`); ``strict`` also requires exactly the
    config's parameter names. Hub names resolve through :mod:`open_videoprism.hub`.
    """
    from open_videoprism import hub

    if hub.is_hub_name(path):
        path = hub.resolve(str(path), revision).checkpoint
    cfg, state = _read_source(path)
    held = sum(v.numel() for v in state.values())
    check_config(cfg, path, max_params=held if strict else 4 * held + 1_000_000)
    check_state(cfg, state, path, strict=strict)
    return cfg, state


def _read_source(path: str | os.PathLike) -> tuple[VideoPrismConfig, dict[str, torch.Tensor]]:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or folder")
    if p.is_dir():
        from open_videoprism import hf

        if (p / "config.json").exists():
            return hf.load_hf_folder(p)
        final = p / "final" / "model.safetensors"  # a training run folder
        if final.exists():
            return load_checkpoint(final)
        raise CheckpointError(f"{p}: a folder without config.json (HF format) or final/model.safetensors (a run)")
    with open(p, "rb") as f:
        head = f.read(8)
    if head[:4] == b"PK\x03\x04":
        return load_official(p)
    if p.suffix == ".safetensors":
        return load_checkpoint(p)
    raise CheckpointError(
        f"{p}: unknown checkpoint format; expected an official .npz, an open_videoprism "
        ".safetensors, or a Hugging Face VideoPrism model folder"
    )


def load(
    path: str | os.PathLike,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str | None = None,
    strict: bool = True,
    revision: str | None = None,
    attn_impl: str = "fast",
) -> VideoPrism:
    """Load a model in eval mode from an official ``.npz``, one of our
    ``.safetensors`` files, a Hugging Face VideoPrism folder, a run folder, or a
    released checkpoint by name (``google/videoprism-lvt-base-f16r288[@rev]``,
    ``videoprism_lvt_v1_base``; see :mod:`open_videoprism.hub`). Models loaded by
    name keep their repo's tokenizer as ``model.tokenizer``.

    ``dtype``: a torch dtype, ``"fp32"``, ``"bf16"`` or ``"auto"`` (bf16 only where
    ``device`` runs it natively; :mod:`open_videoprism.precision`). ``attn_impl``:
    ``"fast"``, ``"reference"`` (the official op order, for parity checks) or ``"flex"``.

    >>> model = load("flax_lvt_base_f16r288_repeated.npz", dtype="auto")
    >>> model = load("google/videoprism-lvt-base-f16r288")
    """

    from open_videoprism import hub

    tokenizer = None
    if hub.is_hub_name(path):
        files = hub.resolve(str(path), revision)
        path, tokenizer = files.checkpoint, files.tokenizer
    cfg, state = read_any(path, strict=strict)
    model = create_model(cfg, attn_impl=attn_impl)
    model.load_state_dict(state, strict=False)  # names and shapes already checked by read_any
    model = model.to(dtype=resolve_dtype(dtype, device).dtype, device=device).eval()
    if tokenizer is not None and model.text is not None:
        from open_videoprism.tokenizer import Tokenizer

        model.tokenizer = Tokenizer(tokenizer)
    return model


def _source_name(src: str | os.PathLike) -> str:
    from open_videoprism import hub

    return str(src) if hub.is_hub_name(src) else Path(src).name


def convert(src: str | os.PathLike, dst: str | os.PathLike) -> tuple[Path, VideoPrismConfig]:
    """Convert any supported checkpoint to our safetensors format."""
    cfg, state = read_any(src, strict=True)  # validates before writing
    return save_checkpoint(dst, state, cfg, {"source": _source_name(src)}), cfg


def state_shapes(config: VideoPrismConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a config without allocating it (meta device)."""
    return expected_shapes(config, "model config")


def describe(config: VideoPrismConfig) -> dict[str, Any]:
    """A short summary for CLIs and logs."""
    v = config.vision
    return {
        "width": v.width,
        "layers": f"{v.spatial_layers}+{v.temporal_layers}",
        "heads": v.num_heads,
        "frames": v.num_frames,
        "image": v.image_size,
        "video_text": config.text is not None,
    }


__all__ = [
    "PUBLIC_CHECKPOINTS",
    "convert",
    "describe",
    "infer_config",
    "load",
    "load_checkpoint",
    "load_official",
    "official_to_state_dict",
    "read_any",
    "save_checkpoint",
    "state_shapes",
]
