"""WebDataset shards: manifest -> shards -> the same samples; workers and ranks get disjoint shards."""

from __future__ import annotations

import json
import tarfile
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from data_helpers import write_index_video, write_manifest
from open_videoprism.data import LoaderState, VideoDataConfig, build_loader, expand_shards, write_shards

N = 16


@pytest.fixture(scope="module")
def data_shards(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("wds")
    rows = []
    for k in range(N):
        write_index_video(root / "videos" / f"v{k:02d}.mp4", n=10 + k, fps=10.0, size=32)
        rows.append({"path": f"videos/v{k:02d}.mp4", "caption": f"clip {k}", "label": k % 5, "motion_label": k % 2})
    rows.append({"path": "videos/missing.mp4", "caption": "gone", "label": 0})
    manifest = write_manifest(root / "m.jsonl", rows)
    res = write_shards(manifest, root / "shards", samples_per_shard=2, progress=False)
    assert res["shards"] == 9 and res["samples"] == N and [s["reason"] for s in res["skipped"]] == ["missing"]
    return manifest, root / "shards"


def _cfg(**kw):
    base = dict(num_frames=4, image_size=16, sampling="uniform", shuffle_buffer=4)
    base.update(kw)
    return VideoDataConfig(**base)


def test_shard_layout_is_webdataset(data_shards):
    _, shards = data_shards
    files = expand_shards(str(shards))
    assert len(files) == 9 and files == expand_shards(str(shards / "shard-{000000..000008}.tar"))
    with tarfile.open(files[0]) as tar:
        names = tar.getnames()
    assert names == ["000000000.mp4", "000000000.json", "000000001.mp4", "000000001.json"]
    # Rewriting keeps complete shards (resumable).
    res = write_shards(data_shards[0], shards, samples_per_shard=2, progress=False)
    assert res["written"] == 0


def test_round_trip_same_samples(data_shards):
    manifest, shards = data_shards
    from_manifest = {int(i): (v, lab) for b in build_loader(manifest, _cfg(), batch_size=4, training=False)
                     for i, v, lab in zip(b["index"], b["video"], b["label"])}
    assert len(from_manifest) == N
    seen = {}
    for b in build_loader(str(shards), _cfg(), batch_size=3, training=False):
        for i, v, lab, c in zip(b["index"].tolist(), b["video"], b["label"].tolist(), b["caption"]):
            seen[i] = True
            torch.testing.assert_close(v, from_manifest[i][0], rtol=0, atol=0)   # bit-identical decode
            assert lab == from_manifest[i][1] == i % 5 and c == f"clip {i}"
    assert sorted(seen) == list(range(N))


def test_two_workers_two_ranks_disjoint(data_shards):
    _, shards = data_shards
    per_rank = []
    for rank in range(2):
        loader = build_loader(str(shards), _cfg(), batch_size=2, training=False, num_workers=2, rank=rank,
                              world_size=2)
        idx = [i for b in loader for i in b["index"].tolist()]
        assert len(idx) == len(set(idx))
        per_rank.append(set(idx))
    assert per_rank[0].isdisjoint(per_rank[1])
    assert per_rank[0] | per_rank[1] == set(range(N))
    # Shard granularity: a shard's two samples always land on the same rank.
    for s in range(8):
        assert (2 * s in per_rank[0]) == (2 * s + 1 in per_rank[0])


def test_training_stream_shuffles_and_resumes(data_shards):
    _, shards = data_shards
    cfg = _cfg(sampling="random", frame_stride=1, label_field="motion_label")

    def take(loader, n):
        return [b for _, b in zip(range(n), loader)]

    full = take(build_loader(str(shards), cfg, batch_size=2, training=True, seed=4, num_workers=2), 8)
    assert all(b["label"].tolist() == [i % 2 for i in b["index"].tolist()] for b in full)
    order = [i for b in full for i in b["index"].tolist()]
    assert order != sorted(order)                          # shuffled
    first = build_loader(str(shards), cfg, batch_size=2, training=True, seed=4, num_workers=2)
    head = take(first, 3)
    state = LoaderState(**json.loads(json.dumps(asdict(first.state()))))
    assert state.worker_positions is not None and len(state.worker_positions) == 2
    tail = take(build_loader(str(shards), cfg, batch_size=2, training=True, seed=4, num_workers=2, state=state), 5)
    # Every worker continues exactly where it stopped, in the same interleaving: same batches, same clips.
    def sig(bs):
        return [(tuple(b["index"].tolist()), round(b["video"].sum().item(), 3)) for b in bs]

    assert sig(head + tail) == sig(full)


def test_bad_member_in_shard_is_skipped(tmp_path, data_shards):
    manifest, _ = data_shards
    out = tmp_path / "s"
    write_shards(manifest, out, samples_per_shard=100, progress=False)
    # Corrupt one video member's bytes in place (same size, so the tar stays valid).
    shard = out / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        m = tar.getmember("000000003.mp4")
        off, size = m.offset_data, m.size
    raw = bytearray(shard.read_bytes())
    raw[off : off + size] = b"\0" * size
    shard.write_bytes(bytes(raw))
    loader = build_loader(str(shard), _cfg(max_failure_ratio=0.2), batch_size=4, training=False)
    idx = [i for b in loader for i in b["index"].tolist()]
    assert idx == [i for i in range(N) if i != 3]
    assert sum(loader.skips.values()) == 1


def test_shards_cli(data_shards, tmp_path, capsys):
    from open_videoprism.cli.main import main

    manifest, _ = data_shards
    assert main(["shards", str(manifest), str(tmp_path / "o"), "--samples-per-shard", "8"]) == 0
    out = capsys.readouterr().out
    assert "16 samples in 3 shards" in out and "skipped" in out and "missing.mp4" in out
    assert main(["check-data", str(tmp_path / "o"), "--frames", "4", "--size", "16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == N
