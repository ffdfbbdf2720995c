"""Video data: decoding, frame sampling, transforms, manifests, WebDataset shards,
robust loading and the synthetic appearance/motion benchmark.

>>> from open_videoprism.data import VideoDataConfig, build_loader
>>> cfg = VideoDataConfig(num_frames=16, image_size=72)
>>> loader = build_loader("synth/pretrain.jsonl", cfg, batch_size=8, training=True, tokenizer=tok)
>>> batch = next(iter(loader))            # video [8, 16, 3, 72, 72], text_ids, label, index, path
"""

from open_videoprism.data import synthetic
from open_videoprism.data.config import VideoDataConfig
from open_videoprism.data.dataset import ClipSampler, collate, sample_rng
from open_videoprism.data.decode import DecodeError, VideoReader, read_video, to_tensor
from open_videoprism.data.encode import write_video
from open_videoprism.data.loader import LoaderState, VideoLoader, build_loader
from open_videoprism.data.manifest import Manifest, ManifestEntry
from open_videoprism.data.robust import Skip, SkipTracker
from open_videoprism.data.sampling import (
    center_clip_indices,
    multiclip_indices,
    random_clip_indices,
    sample_indices,
    time_range,
    uniform_indices,
)
from open_videoprism.data.transforms import (
    VideoTransform,
    center_crop,
    hflip,
    random_resized_crop_params,
    resize_short_side,
)
from open_videoprism.data.webdataset_io import ShardLoader, expand_shards, write_shards

__all__ = [
    "ClipSampler", "DecodeError", "LoaderState", "Manifest", "ManifestEntry", "ShardLoader", "Skip",
    "SkipTracker", "VideoDataConfig", "VideoLoader", "VideoReader", "VideoTransform", "build_loader",
    "center_clip_indices", "center_crop", "collate", "expand_shards", "hflip", "multiclip_indices",
    "random_clip_indices", "random_resized_crop_params", "read_video", "resize_short_side", "sample_indices",
    "sample_rng", "synthetic", "time_range", "to_tensor", "uniform_indices", "write_shards", "write_video",
]
