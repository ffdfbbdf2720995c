"""Evaluation at scale: memory-mapped token stores, probes over them, streaming over shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from open_videoprism.arrays import write_arrays
from open_videoprism.atomic import write_json
from open_videoprism.errors import ConfigError
from open_videoprism.eval.config import load_eval_config
from open_videoprism.eval.features import PROGRESS_FILE, FeatureCacheError, load_features
from open_videoprism.eval.probes import ProbeConfig, predict, train_probe
from open_videoprism.eval.store import ShardWindows, TokenStore, shard_tokens

# Dataset indices per shard: unsorted within and across shards (as several ranks write them).
SHARDS = [[5, 0, 9], [2, 7], [1, 4, 3, 8, 6, 11], [10]]
K, L, D = 2, 6, 16


def write_folder(root: Path, shards: list[list[int]] = SHARDS, fmt: str = "safetensors", seed: int = 0,
                 dtype: torch.dtype = torch.float16) -> Path:
    """A finished feature folder written by hand: a class lives in one token of each clip."""
    g = torch.Generator().manual_seed(seed)
    names = []
    for s, index in enumerate(shards):
        n = len(index)
        tokens = 0.5 * torch.randn(n, K, L, D, generator=g)
        tokens[:, :, 0, :4] += 3.0 * torch.nn.functional.one_hot(torch.tensor(index) % 4, 4)[:, None].float()
        arrays = {"index": torch.tensor(index), "mean_tokens": tokens.mean(2), "embedding": tokens[:, :, 0],
                  "tokens": tokens.to(dtype), "thumbnail": torch.zeros(n, 3, 4, 4, dtype=torch.uint8)}
        names.append(f"shard-{s:05d}.{fmt}")
        write_arrays(root / names[-1], arrays)
    write_json(root / PROGRESS_FILE, {"complete": True, "shards": names})
    return root


def labels_of(fs) -> torch.Tensor:
    return fs.index % 4


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_store_rows_equal_load_features(tmp_path, fmt):
    folder = write_folder(tmp_path, fmt=fmt)
    eager, lazy = load_features(folder), load_features(folder, mmap=True)
    assert isinstance(lazy.tokens, TokenStore) and isinstance(eager.tokens, torch.Tensor)
    assert lazy.index.tolist() == list(range(12))
    for key in ("index", "mean_tokens", "embedding", "thumbnail"):
        assert torch.equal(getattr(lazy, key), getattr(eager, key)), key
    store = lazy.tokens
    assert store.shape == tuple(eager.tokens.shape) and len(store) == 12 and store.num_shards == 4
    assert torch.equal(store.gather(torch.arange(12)), eager.tokens)
    rows = torch.tensor([11, 0, 5, 5, 3, 9])  # any order, repeats, across shards
    assert torch.equal(store.gather(rows), eager.tokens[rows])
    clips = torch.tensor([1, 0, 1, 0, 0, 1])
    assert torch.equal(store.gather(rows, clips), eager.tokens[rows, clips])
    assert torch.equal(lazy.token_tensor(), eager.tokens)
    with pytest.raises(IndexError, match="rows must lie"):
        store.gather([12])


def test_bfloat16_tokens_are_mapped_too(tmp_path):
    folder = write_folder(tmp_path, dtype=torch.bfloat16)
    store = load_features(folder, mmap=True).tokens
    assert store.dtype == torch.bfloat16
    assert torch.equal(store.gather(torch.arange(12)), load_features(folder).tokens)


def test_a_compressed_npz_shard_is_read_into_memory(tmp_path):
    """Other tools' np.savez_compressed members cannot be mapped: loaded instead, still float16."""
    folder = write_folder(tmp_path, fmt="npz")
    shard = folder / "shard-00001.npz"
    with np.load(shard) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(shard, **arrays)
    store = load_features(folder, mmap=True).tokens
    assert not isinstance(store.mapped(1), np.memmap) and store.mapped(1).dtype == np.float16
    assert isinstance(store.mapped(0), np.memmap)
    assert torch.equal(store.gather(torch.arange(12)), load_features(folder).tokens)


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_store_maps_the_shards_and_reads_only_the_rows_asked_for(tmp_path, fmt, monkeypatch):
    store = load_features(write_folder(tmp_path, fmt=fmt), mmap=True).tokens
    for shard in range(store.num_shards):
        arr = store.mapped(shard)
        assert isinstance(arr, np.memmap) and arr.dtype == np.float16 and not arr.flags.writeable
    # Every read goes through the shard's map and takes only the requested rows.
    reads: list[int] = []
    original = np.memmap.__getitem__

    def spy(self, item):
        out = original(self, item)
        if isinstance(item, np.ndarray):
            reads.append(len(item))
        return out

    monkeypatch.setattr(np.memmap, "__getitem__", spy)
    out = store.gather([7, 8])  # two rows, two shards
    assert out.shape == (2, K, L, D) and out.dtype == torch.float32
    assert sorted(reads) == [1, 1]


def test_store_keeps_at_most_max_open_shards_mapped(tmp_path):
    fs = load_features(write_folder(tmp_path), mmap=True)
    small = TokenStore(fs.tokens._shards, fs.tokens.row_shards(), fs.tokens._local, max_open=2)
    assert torch.equal(small.gather(torch.arange(12)), load_features(tmp_path).tokens)
    assert len(small._open) == 2


def test_probe_from_the_store_is_bit_identical_to_the_tensor(tmp_path):
    train = write_folder(tmp_path / "train", seed=0)
    test = write_folder(tmp_path / "test", shards=[[3, 1], [0, 2, 5, 4]], seed=1)
    eager, lazy = load_features(train), load_features(train, mmap=True)
    eager_test, lazy_test = load_features(test), load_features(test, mmap=True)
    y, yt = labels_of(eager), labels_of(eager_test)
    for kind in ("attentive", "linear"):
        cfg = ProbeConfig(kind=kind, epochs=4, batch_size=5, seed=3)
        a, ha = train_probe(eager.tokens, y, 4, cfg, val_features=eager_test.tokens, val_labels=yt, progress=False)
        b, hb = train_probe(lazy.tokens, y, 4, cfg, val_features=lazy_test.tokens, val_labels=yt, progress=False,
                            device="cpu")
        assert ha.to_dict() == hb.to_dict(), kind
        assert torch.equal(predict(a, eager_test.tokens), predict(b, lazy_test.tokens)), kind
        assert torch.equal(predict(a, eager_test.tokens), predict(b, eager_test.tokens)), kind


def max_open_shards(order: torch.Tensor, sample_shards: torch.Tensor) -> int:
    """The most shards begun but not finished at once while reading samples in ``order``."""
    left = torch.bincount(sample_shards).tolist()
    started: set[int] = set()
    most = 0
    for s in sample_shards[order].tolist():
        started.add(s)
        most = max(most, len(started))
        left[s] -= 1
        if not left[s]:
            started.discard(s)
    return most


def test_shard_windows_visit_every_sample_once_with_few_shards_at_a_time():
    sample_shards = torch.tensor([s for s, n in enumerate([5, 3, 8, 1, 6, 4, 7, 2, 5, 3]) for _ in range(n)])
    sample_shards = sample_shards[torch.randperm(len(sample_shards), generator=torch.Generator().manual_seed(0))]
    windows = ShardWindows(sample_shards, window=3)
    gen = torch.Generator().manual_seed(1)
    epochs = [windows(gen) for _ in range(3)]
    for order in epochs:
        assert sorted(order.tolist()) == list(range(len(sample_shards)))
        assert max_open_shards(order, sample_shards) <= 3
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch
    # Samples of a window are mixed across its shards, not read shard after shard.
    assert max_open_shards(epochs[0], sample_shards) > 1
    again = torch.Generator().manual_seed(1)
    assert all(torch.equal(windows(again), order) for order in epochs)  # deterministic for a seed
    assert max_open_shards(ShardWindows(sample_shards, 1)(gen), sample_shards) == 1


def test_shards_order_trains_over_the_store_window_by_window(tmp_path, monkeypatch):
    store = load_features(write_folder(tmp_path), mmap=True).tokens
    labels = labels_of(load_features(tmp_path))
    batches: list[torch.Tensor] = []
    gather = TokenStore.gather

    def record(self, rows, clips=None):
        batches.append(torch.as_tensor(rows) * K + torch.as_tensor(clips))  # clip samples
        return gather(self, rows, clips)

    monkeypatch.setattr(TokenStore, "gather", record)
    cfg = ProbeConfig(epochs=3, batch_size=4, order="shards", shard_window=2, seed=5)
    probe, _ = train_probe(store, labels, 4, cfg, progress=False)
    per_epoch = len(store) * K // cfg.batch_size
    sample_shards = torch.from_numpy(store.row_shards()).repeat_interleave(K)
    for e in range(cfg.epochs):
        order = torch.cat(batches[e * per_epoch : (e + 1) * per_epoch])
        assert sorted(order.tolist()) == list(range(len(store) * K))  # 24 samples, 6 batches: none dropped
        assert max_open_shards(order, sample_shards) <= 2
    monkeypatch.undo()
    again, _ = train_probe(store, labels, 4, cfg, progress=False)
    assert torch.equal(predict(probe, store), predict(again, store))
    assert load_eval_config(overrides=["probe.order=shards", "probe.shard_window=8"]).probe.shard_window == 8
    with pytest.raises(ConfigError, match="order"):
        load_eval_config(overrides=["probe.order=random"])


def one_error_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and "re-extract" in message
    return message


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
@pytest.mark.parametrize("mmap", [False, True])
def test_damaged_folders_are_one_clear_error(tmp_path, fmt, mmap):
    folder = write_folder(tmp_path, fmt=fmt)
    shard = folder / f"shard-00002.{fmt}"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])  # cut short, as by an interrupted copy
    with pytest.raises(FeatureCacheError) as err:
        load_features(folder, mmap=mmap)
    assert str(shard) in one_error_line(err)
    shard.write_bytes(data[:6])  # not even a header
    with pytest.raises(FeatureCacheError) as err:
        load_features(folder, mmap=mmap)
    assert str(shard) in one_error_line(err)
    shard.unlink()
    with pytest.raises(FeatureCacheError, match="missing") as err:
        load_features(folder, mmap=mmap)
    assert str(shard) in one_error_line(err)


@pytest.mark.parametrize("fmt", ["safetensors", "npz"])
def test_the_store_checks_that_the_tokens_lie_within_the_file(tmp_path, fmt):
    """Found from the header alone, before any row is mapped (the shard's other arrays are not read)."""
    shard = write_folder(tmp_path, fmt=fmt) / f"shard-00000.{fmt}"
    loc = shard_tokens(shard)
    assert loc is not None and loc.shape == (3, K, L, D) and loc.dtype == np.float16
    assert np.array_equal(loc.open(), load_features(tmp_path).tokens[SHARDS[0]].half().numpy())
    with shard.open("r+b") as f:
        f.truncate(loc.offset + 10)
    with pytest.raises(FeatureCacheError, match="truncated|not a readable npz") as err:
        shard_tokens(shard)
    assert str(shard) in one_error_line(err)


def test_run_probe_trains_the_attentive_probe_from_the_store_on_the_model_device(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from open_videoprism.eval import tasks
    from open_videoprism.eval.config import EvalConfig

    write_folder(tmp_path / "train", seed=0)
    write_folder(tmp_path / "test", shards=[[3, 1], [0, 2, 5, 4]], seed=1)
    loaded, trained = [], []
    real_train = tasks.train_probe

    def features_for(model, settings, manifest, cfg=None, mmap=False):
        loaded.append(mmap)
        return load_features(tmp_path / manifest, mmap=mmap)

    def train_probe(x, *args, **kwargs):
        trained.append((type(x), kwargs["device"]))
        return real_train(x, *args, **kwargs)

    monkeypatch.setattr(tasks, "features_for", features_for)
    monkeypatch.setattr(tasks, "_split", lambda settings, which: which)
    monkeypatch.setattr(tasks, "_labels", lambda manifest, fs, field, num_classes=None: labels_of(fs))
    monkeypatch.setattr(tasks, "train_probe", train_probe)
    settings = tasks.EvalSettings(checkpoint="ck", out_dir=tmp_path / "out", progress=False,
                                  cfg=EvalConfig(plots=False, probe=ProbeConfig(epochs=2, batch_size=4)))
    model = SimpleNamespace(device=torch.device("cpu"))
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(tasks, "IN_MEMORY_BYTES", 0)  # a set too large to hold in memory stays mapped
    result = tasks.run_probe(model, settings, "attentive")
    assert loaded == [True, True] and trained == [(TokenStore, torch.device("cpu"))]
    assert result["metrics"]["num_train"] == 12 and result["config"]["order"] == "global"
    tasks.run_probe(model, settings, "linear")  # the linear probe keeps its in-memory mean tokens
    assert loaded[2:] == [False, False] and trained[1][0] is torch.Tensor
    monkeypatch.setattr(tasks, "IN_MEMORY_BYTES", 1 << 30)  # a small set is read into memory: faster steps
    again = tasks.run_probe(model, settings, "attentive")
    assert trained[2][0] is torch.Tensor and again["metrics"] == result["metrics"]
