"""Cached, resumable feature extraction with a frozen VideoPrism.

``extract_features`` runs the encoder over a manifest (one or several clips per
video, :class:`open_videoprism.data.VideoDataConfig` sampling) and writes
shards to a folder::

    OUT/progress.json                what is done: config, shard list, loader position
    OUT/shard-00000.safetensors      index [n], mean_tokens [n,K,D], embedding [n,K,D]*,
                                     tokens [n,K,L,D]*, thumbnail uint8 [n,3,S,S]
    (* embedding only for models with a pooling head; tokens only with store_tokens;
     ``shard_format="npz"`` writes the same arrays as numpy ``shard-00000.npz``)

Each shard is written to a temporary file and renamed, then ``progress.json``
(likewise atomic) records it together with the loader's exact resume position
(``LoaderState``), so an interrupted run continues where it stopped and never
leaves a half-written shard. A folder made with a different configuration
(checkpoint, manifest, frames, clips...) is refused rather than mixed.

Over ranks (``torchrun --nproc-per-node N -m open_videoprism.cli.main features ...``):
rank ``r`` of ``N`` encodes the manifest rows ``r, r + N, ...`` (every video exactly
once, no padding: ranks differ by at most one video), writes its own shards
``shard-rR-00000.*`` and its own resume file ``progress.rank-R-of-N.json``; when all
are done rank 0 writes ``progress.json`` listing every shard, which is what
:func:`load_features` reads. An interrupted run resumes with the same ``N``.

:func:`load_features` reads a finished folder back as one :class:`FeatureSet`
ordered by dataset index; with ``mmap=True`` the tokens stay in the shards, memory-mapped
(:class:`open_videoprism.eval.store.TokenStore`), for sets larger than memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
import torch.nn.functional as F

from open_videoprism.arrays import read_arrays, write_arrays
from open_videoprism.atomic import write_json
from open_videoprism.errors import ConfigError, UserError
from open_videoprism.models import VideoPrism
from open_videoprism.progress import progress_bar
from open_videoprism.ranks import get_rank, get_world_size

if TYPE_CHECKING:
    from open_videoprism.eval.store import TokenStore

PROGRESS_FILE = "progress.json"
FORMAT_VERSION = 1
THUMBNAIL_SIZE = 64


class FeatureCacheError(UserError):
    """A feature folder is inconsistent or was made with another configuration."""


@dataclass
class FeatureConfig:
    """What to extract. ``num_frames``/``image_size`` default to the model's own."""

    num_frames: int | None = None
    image_size: int | None = None
    num_clips: int = 1
    frame_stride: int = 2
    sampling: str = "uniform"  # "uniform" (official, 1 clip) or "multiclip" (set by num_clips > 1)
    store_tokens: bool = True
    token_dtype: Literal["float16", "bfloat16", "float32"] = "float16"  # halves the disk size; probes upcast to float32
    batch_size: int = 8
    shard_size: int = 256  # videos per shard, rounded up to whole batches (= resume granularity)
    label_field: str = "label"
    shard_format: Literal["safetensors", "npz"] = "safetensors"  # npz: numpy .npy arrays in a zip, for numpy-only users

    def __post_init__(self) -> None:
        if self.sampling not in ("uniform", "multiclip"):
            raise ConfigError(f"sampling: must be uniform or multiclip, got {self.sampling!r}")
        for key in ("num_frames", "image_size", "num_clips", "frame_stride", "batch_size", "shard_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{key}: must be >= 1, got {value}")

    def identity(self) -> dict[str, Any]:
        """The settings that determine the features (batching and sharding do not)."""
        return {k: v for k, v in asdict(self).items() if k not in ("batch_size", "shard_size", "label_field")}

    def resolved(self, model: VideoPrism) -> FeatureConfig:
        """A copy with the model defaults filled in and the sampling made consistent."""
        v = model.cfg.vision
        cfg = FeatureConfig(**asdict(self))
        cfg.num_frames = cfg.num_frames or v.num_frames
        cfg.image_size = cfg.image_size or v.image_size
        if cfg.num_clips > 1:
            cfg.sampling = "multiclip"
        if cfg.shard_format not in SHARD_FORMATS:
            raise UserError(f"unknown shard format {cfg.shard_format!r}; choose one of {', '.join(SHARD_FORMATS)}")
        if cfg.image_size % v.patch_size:
            raise UserError(f"--image-size {cfg.image_size} must be divisible by the patch size {v.patch_size}")
        return cfg


@dataclass
class FeatureSet:
    """Features of one manifest, row ``i`` = dataset index ``index[i]``."""

    index: torch.Tensor  # [N]
    mean_tokens: torch.Tensor  # [N, K, D]
    embedding: torch.Tensor | None = None  # [N, K, D]
    tokens: torch.Tensor | TokenStore | None = None  # [N, K, L, D]; a TokenStore from load_features(mmap=True)
    thumbnail: torch.Tensor | None = None  # uint8 [N, 3, S, S]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.index.numel())

    def video_embedding(self) -> torch.Tensor:
        """``[N, D]``: the clip embeddings averaged over clips and re-normalised (zero-shot)."""
        if self.embedding is None:
            raise FeatureCacheError("these features hold no pooled embeddings (an encoder-only model)")
        return F.normalize(self.embedding.float().mean(1), dim=-1)

    def token_tensor(self) -> torch.Tensor | None:
        """The tokens as one float32 ``[N, K, L, D]`` tensor (a memory-mapped store is read whole)."""
        if self.tokens is None or isinstance(self.tokens, torch.Tensor):
            return self.tokens
        return self.tokens.gather(torch.arange(len(self.tokens)))


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of an input file for cache validation (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat() if p.exists() else None
    return {"path": str(p), "size": st.st_size if st else None, "mtime_ns": st.st_mtime_ns if st else None}


def fingerprint_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able object (cache folder names)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


SHARD_FORMATS = ("safetensors", "npz")


def _clips(video: torch.Tensor) -> torch.Tensor:
    """Loader batch ``[B, T, 3, H, W]`` or ``[B, K, T, 3, H, W]`` -> ``[B, K, T, 3, H, W]``."""
    if video.dim() == 5:
        return video[:, None]
    if video.dim() == 6:
        return video
    raise ValueError(f"expected a video batch [B, (K,) T, 3, H, W]; got {tuple(video.shape)}")


@torch.no_grad()
def encode_clips(model: VideoPrism, video: torch.Tensor, store_tokens: bool) -> dict[str, torch.Tensor]:
    """Encode a batch of multi-clip videos; returns per-video ``[B, K, ...]`` tensors (CPU)."""
    clips = _clips(video)
    b, k = clips.shape[:2]
    out = model.encode_video(clips.flatten(0, 1), frame_embeddings=False)
    tokens = out.tokens.float()
    result = {"mean_tokens": tokens.mean(1).view(b, k, -1).cpu()}
    if out.embedding is not None:
        result["embedding"] = out.embedding.float().view(b, k, -1).cpu()
    if store_tokens:
        result["tokens"] = tokens.view(b, k, tokens.shape[1], -1).cpu()
    # Middle frame of the first clip, for retrieval figures.
    mid = clips[:, 0, clips.shape[2] // 2].float()
    thumb = F.interpolate(mid, size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE), mode="bilinear", antialias=True, align_corners=False)
    result["thumbnail"] = (thumb.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return result


def _count_rows(manifest: Path) -> int | None:
    if manifest.suffix in (".jsonl", ".csv") and manifest.is_file():
        with manifest.open() as f:
            n = sum(1 for line in f if line.strip())
        return n - 1 if manifest.suffix == ".csv" else n
    return None


def extract_features(
    model: VideoPrism,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    cfg: FeatureConfig | None = None,
    *,
    checkpoint: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Extract (or finish extracting) features of ``manifest`` into ``out_dir``.

    Inside a process group every rank calls it and takes its share (module docstring).

    Args:
        model: the frozen model (its device is used).
        checkpoint: recorded in the cache identity so that features of another
            checkpoint are never mixed in.
        overwrite: discard an existing folder made with another configuration.

    Returns ``out_dir``. A finished folder is returned at once.
    """
    out = Path(out_dir)
    rank, world = get_rank(), get_world_size()
    cfg = (cfg or FeatureConfig()).resolved(model)
    identity = {
        "version": FORMAT_VERSION,
        "manifest": file_fingerprint(manifest),
        "checkpoint": file_fingerprint(checkpoint) if checkpoint else None,
        "model": model.cfg.to_dict(),
        "config": cfg.identity(),
    }
    if model.dtype != torch.float32:  # bf16 features differ from fp32 ones; fp32 keeps older folders valid
        identity["model_dtype"] = str(model.dtype).removeprefix("torch.")
    final = out / PROGRESS_FILE
    if final.is_file() and world > 1:  # every rank reads the same file, so they all take the same branch
        done = json.loads(final.read_text())
        if done.get("identity") == identity and done.get("complete"):
            return out
        if done.get("identity") != identity and not overwrite:
            raise FeatureCacheError(f"{out}: holds features of another checkpoint/manifest/config; "
                                    "use another --out folder or pass --overwrite")
    if world == 1:
        return _extract_part(model, manifest, out, cfg, identity, final, "shard-", overwrite, progress)
    part = out / f"progress.rank-{rank}-of-{world}.json"
    _extract_part(model, manifest, out, cfg, {**identity, "world_size": world}, part, f"shard-r{rank}-", overwrite, progress)
    parts: list[Any] = [None] * world
    torch.distributed.all_gather_object(parts, json.loads(part.read_text()))
    if rank == 0:
        merged = {"identity": identity, "shards": [n for p in parts for n in p["shards"]],
                  "num_done": sum(p["num_done"] for p in parts), "loader_state": None, "complete": True,
                  "world_size": world, "skips": _sum_counts([p.get("skips", {}) for p in parts])}
        write_json(final, merged, fsync=True, sort_keys=True)
    torch.distributed.barrier()
    return out


def _sum_counts(counts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + int(v)
    return total


def _extract_part(
    model: VideoPrism, manifest: str | os.PathLike, out: Path, cfg: FeatureConfig, identity: dict[str, Any],
    progress_path: Path, shard_prefix: str, overwrite: bool, progress: bool,
) -> Path:
    """This rank's share of :func:`extract_features`, resumable through ``progress_path``."""
    from open_videoprism.data import LoaderState, VideoDataConfig, build_loader

    rank, world = get_rank(), get_world_size()
    state: dict[str, Any] = {"identity": identity, "shards": [], "num_done": 0, "loader_state": None, "complete": False}
    if progress_path.is_file():
        old = json.loads(progress_path.read_text())
        if old.get("identity") != identity:
            if not overwrite:
                raise FeatureCacheError(
                    f"{out}: holds features of another checkpoint/manifest/config; "
                    "use another --out folder or pass --overwrite"
                )
            for name in old.get("shards", []):
                (out / name).unlink(missing_ok=True)
        else:
            state = old
            if state.get("complete"):
                return out
    out.mkdir(parents=True, exist_ok=True)

    assert cfg.num_frames is not None and cfg.image_size is not None  # resolved() filled them in
    data_cfg = VideoDataConfig(
        num_frames=cfg.num_frames,
        image_size=cfg.image_size,
        frame_stride=cfg.frame_stride,
        sampling=cast(Any, cfg.sampling),  # checked against the sampling names by FeatureConfig
        num_clips=cfg.num_clips,
        random_resized_crop=False,
        hflip=False,
        label_field=cfg.label_field,
    )
    resume = LoaderState(**state["loader_state"]) if state["loader_state"] else None
    # The loader position counts batches: a resumed run keeps the batch size it started with.
    state.setdefault("batch_size", cfg.batch_size)
    loader = build_loader(str(manifest), data_cfg, batch_size=state["batch_size"], training=False, state=resume,
                          rank=rank, world_size=world)
    total = _count_rows(Path(manifest))
    if total is not None:
        total = len(range(rank, total, world))
    bar = progress_bar(total=total, initial=state["num_done"], desc=f"features {Path(manifest).name}", unit="video",
                       enabled=progress and rank == 0)
    buffer: dict[str, list[torch.Tensor]] = {}
    buffered = 0

    def flush() -> None:
        nonlocal buffer, buffered
        if not buffered:
            return
        tensors = {k: torch.cat(v) for k, v in buffer.items()}
        if "tokens" in tensors:
            tensors["tokens"] = tensors["tokens"].to(getattr(torch, cfg.token_dtype))
        name = f"{shard_prefix}{len(state['shards']):05d}.{cfg.shard_format}"
        write_arrays(out / name, tensors, fsync=True)
        state["shards"].append(name)
        state["num_done"] += buffered
        state["loader_state"] = asdict(loader.state())
        write_json(progress_path, state, fsync=True, sort_keys=True)
        buffer, buffered = {}, 0

    model.eval()
    for batch in loader:
        enc = encode_clips(model, batch["video"], cfg.store_tokens)
        enc["index"] = torch.as_tensor(batch["index"]).long()
        for key, val in enc.items():
            buffer.setdefault(key, []).append(val)
        buffered += len(enc["index"])
        bar.update(len(enc["index"]))
        if buffered >= cfg.shard_size:
            flush()
    flush()
    bar.close()
    state["complete"] = True
    state["skips"] = dict(getattr(loader, "skips", {}) or {})
    write_json(progress_path, state, fsync=True, sort_keys=True)
    return out


def finished_shards(out_dir: str | os.PathLike) -> tuple[dict[str, Any], list[Path]]:
    """``progress.json`` of a finished feature folder and the paths of its shards (all present)."""
    out = Path(out_dir)
    progress_path = out / PROGRESS_FILE
    if not progress_path.is_file():
        raise FeatureCacheError(f"{out}: no {PROGRESS_FILE}; run `videoprism features` first")
    try:
        state = json.loads(progress_path.read_text())
    except ValueError as exc:
        raise FeatureCacheError(f"{progress_path}: not valid JSON ({exc}); re-extract with --overwrite") from None
    if not state.get("complete"):
        raise FeatureCacheError(f"{out}: extraction is unfinished; rerun `videoprism features` to resume it")
    paths = [out / name for name in state["shards"]]
    for path in paths:
        if not path.is_file():
            raise FeatureCacheError(f"{path}: shard listed in {PROGRESS_FILE} is missing; re-extract with --overwrite")
    if not paths:
        raise FeatureCacheError(f"{out}: no features were extracted (empty manifest?)")
    return state, paths


def read_shard(path: Path, exclude: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The arrays of one shard but ``exclude``; an unreadable file is a :class:`FeatureCacheError`."""
    from safetensors import SafetensorError

    try:
        return read_arrays(path, exclude=exclude)
    except (SafetensorError, zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:  # a damaged file
        raise FeatureCacheError(f"{path}: unreadable shard, damaged or cut short ({_first_line(exc)}); "
                                "re-extract with --overwrite") from None


def _first_line(exc: BaseException) -> str:
    """An exception's message as one line (its first), or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def row_order(index: torch.Tensor) -> torch.Tensor:
    """Rows of the concatenated shards sorted by dataset index: the order of every :class:`FeatureSet`."""
    return torch.argsort(index, stable=True)


def load_features(out_dir: str | os.PathLike, mmap: bool = False) -> FeatureSet:
    """Read a finished feature folder (shards concatenated, rows sorted by index).

    ``mmap=True`` leaves the tokens on disk: ``tokens`` is then a
    :class:`open_videoprism.eval.store.TokenStore` over the shards (memory-mapped, half precision,
    read a minibatch at a time) instead of one float32 tensor twice the size of the shards; the
    small arrays are read into memory either way.
    """
    state, paths = finished_shards(out_dir)
    parts: dict[str, list[torch.Tensor]] = {}
    for path in paths:
        for key, val in read_shard(path, exclude=("tokens",) if mmap else ()).items():
            parts.setdefault(key, []).append(val)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    order = row_order(cat["index"])
    cat = {k: v[order] for k, v in cat.items()}
    tokens: torch.Tensor | TokenStore | None
    if mmap:
        from open_videoprism.eval.store import TokenStore

        tokens = TokenStore.open(paths, order, [len(i) for i in parts["index"]])
    else:
        tokens = cat["tokens"].float() if "tokens" in cat else None
    return FeatureSet(
        index=cat["index"],
        mean_tokens=cat["mean_tokens"],
        embedding=cat.get("embedding"),
        tokens=tokens,
        thumbnail=cat.get("thumbnail"),
        meta=state,
    )
