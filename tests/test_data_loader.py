"""The manifest loader: batch contents, determinism across workers, exact resume, ranks, bad data."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from data_helpers import decoded_indices, write_bad_files, write_index_video, write_manifest
from open_videoprism.data import LoaderState, Manifest, VideoDataConfig, build_loader
from open_videoprism.errors import DataError, UserError

N_GOOD = 12


@pytest.fixture(scope="module")
def data_videos(tmp_path_factory) -> Path:
    """12 index videos; video k has 20 + k frames (so samples are distinguishable by length)."""
    root = tmp_path_factory.mktemp("loader")
    rows = []
    for k in range(N_GOOD):
        write_index_video(root / "videos" / f"v{k:02d}.mp4", n=20 + k, fps=10.0, size=32)
        rows.append({"path": f"videos/v{k:02d}.mp4", "caption": f"video number {k}",
                     "captions": [f"video number {k}", f"clip {k}"], "label": k % 3, "motion_label": k % 4})
    write_manifest(root / "good.jsonl", rows)
    return root


class _Tok:
    """A stand-in tokenizer: ids are the caption's word lengths."""

    def __call__(self, texts, max_length=64):
        ids = torch.zeros(len(texts), max_length, dtype=torch.long)
        pads = torch.ones(len(texts), max_length)
        for i, t in enumerate(texts):
            w = [len(x) for x in t.split()][:max_length]
            ids[i, : len(w)] = torch.tensor(w)
            pads[i, : len(w)] = 0
        return ids, pads


def _cfg(**kw):
    base = dict(num_frames=4, image_size=18, frame_stride=2, random_resized_crop=True)
    base.update(kw)
    return VideoDataConfig(**base)


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _sig(batches):
    return [(b["index"].tolist(), round(b["video"].sum().item(), 3), b.get("caption")) for b in batches]


def test_batch_contract(data_videos):
    loader = build_loader(data_videos / "good.jsonl", _cfg(), batch_size=4, training=True, tokenizer=_Tok())
    b = next(iter(loader))
    assert b["video"].shape == (4, 4, 3, 18, 18) and b["video"].dtype == torch.float32
    assert b["video"].min() >= 0 and b["video"].max() <= 1
    assert b["text_ids"].shape == (4, 64) and b["text_paddings"].shape == (4, 64)
    assert b["label"].dtype == torch.long and b["label"].tolist() == [i % 3 for i in b["index"].tolist()]
    assert len(b["path"]) == 4 and all(p.endswith(".mp4") for p in b["path"])
    # The caption is one of the sample's captions, tokenised.
    for i, cap in zip(b["index"].tolist(), b["caption"]):
        assert cap in (f"video number {i}", f"clip {i}")
    assert len(loader) == N_GOOD // 4


def test_label_field_and_eval_pass(data_videos):
    cfg = _cfg(sampling="uniform", label_field="motion_label", num_frames=5)
    loader = build_loader(data_videos / "good.jsonl", cfg, batch_size=5, training=False, tokenizer=_Tok())
    batches = list(loader)
    assert [len(b["index"]) for b in batches] == [5, 5, 2]          # last partial batch kept
    assert torch.cat([b["index"] for b in batches]).tolist() == list(range(N_GOOD))  # in order
    assert torch.cat([b["label"] for b in batches]).tolist() == [k % 4 for k in range(N_GOOD)]
    assert [c for b in batches for c in b["caption"]] == [f"video number {k}" for k in range(N_GOOD)]
    # Uniform sampling: frame k's content is the official linspace index of that video.
    v = batches[0]["video"][3]  # sample 3: 23 frames
    np.testing.assert_array_equal(decoded_indices(v), np.linspace(0, 23, 5, endpoint=False).astype(int))
    again = list(loader)                  # a finished evaluation loader makes a new, identical pass
    assert [b["index"].tolist() for b in again] == [b["index"].tolist() for b in batches]
    torch.testing.assert_close(again[1]["video"], batches[1]["video"], rtol=0, atol=0)


def test_training_epochs_reshuffle_and_cover(data_videos):
    loader = build_loader(data_videos / "good.jsonl", _cfg(), batch_size=4, training=True, seed=3)
    batches = _take(loader, 6)                      # two epochs of 3 batches
    e0 = sorted(torch.cat([b["index"] for b in batches[:3]]).tolist())
    e1 = sorted(torch.cat([b["index"] for b in batches[3:]]).tolist())
    assert e0 == e1 == list(range(N_GOOD))
    assert [b["index"].tolist() for b in batches[:3]] != [b["index"].tolist() for b in batches[3:]]
    assert loader.state().epoch == 2 and loader.state().batch == 0


def test_same_batches_for_any_worker_count(data_videos):
    a = _sig(_take(build_loader(data_videos / "good.jsonl", _cfg(), batch_size=4, training=True, seed=1,
                                tokenizer=_Tok()), 4))
    b = _sig(_take(build_loader(data_videos / "good.jsonl", _cfg(), batch_size=4, training=True, seed=1,
                                tokenizer=_Tok(), num_workers=2), 4))
    c = _sig(_take(build_loader(data_videos / "good.jsonl", _cfg(), batch_size=4, training=True, seed=2), 4))
    assert a == b
    assert [x[0] for x in a] != [x[0] for x in c]


def test_exact_resume(data_videos):
    src = data_videos / "good.jsonl"
    full = _sig(_take(build_loader(src, _cfg(), batch_size=4, training=True, seed=5), 7))
    first = build_loader(src, _cfg(), batch_size=4, training=True, seed=5)
    head = _sig(_take(first, 4))
    state = LoaderState(**json.loads(json.dumps(asdict(first.state()))))  # through JSON
    assert (state.epoch, state.batch) == (1, 1)
    tail = _sig(_take(build_loader(src, _cfg(), batch_size=4, training=True, seed=5, state=state, num_workers=2), 3))
    assert head + tail == full


def test_ranks_see_disjoint_slices(data_videos):
    src = data_videos / "good.jsonl"
    per_rank = [torch.cat([b["index"] for b in _take(
        build_loader(src, _cfg(), batch_size=3, training=True, seed=0, rank=r, world_size=2), 2)]).tolist()
        for r in range(2)]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(N_GOOD))
    ev = [torch.cat([b["index"] for b in build_loader(src, _cfg(sampling="uniform"), batch_size=4, training=False,
                                                      rank=r, world_size=2)]).tolist() for r in range(2)]
    assert ev == [list(range(0, N_GOOD, 2)), list(range(1, N_GOOD, 2))]


def test_collate_fn_applied(data_videos):
    def add_mask(batch):
        batch["visible_idx"] = torch.zeros(batch["video"].shape[0], 2, dtype=torch.long)
        return batch

    b = next(iter(build_loader(data_videos / "good.jsonl", _cfg(), batch_size=2, training=True, collate_fn=add_mask)))
    assert b["visible_idx"].shape == (2, 2)


def test_multiclip_batches(data_videos):
    cfg = _cfg(sampling="multiclip", num_clips=3, num_frames=4, frame_stride=2)
    b = next(iter(build_loader(data_videos / "good.jsonl", cfg, batch_size=2, training=False)))
    assert b["video"].shape == (2, 3, 4, 3, 18, 18)
    np.testing.assert_array_equal(decoded_indices(b["video"][0, 2]), [13, 15, 17, 19])  # last clip of 20 frames


def test_csv_manifest_and_time_ranges(data_videos, tmp_path):
    csv = tmp_path / "m.csv"
    path = (data_videos / "videos" / "v10.mp4").resolve()            # 30 frames at 10 fps
    csv.write_text(f"path,caption,label,start,end\n{path},a clip,2,1.0,2.0\n{path},another,1|2,,\n")
    m = Manifest.read(csv)
    assert m[0].start == 1.0 and m[0].end == 2.0 and m[1].label() == [1, 2] and m[0].captions == ["a clip"]
    cfg = _cfg(sampling="uniform", num_frames=5, num_classes=4)
    b = next(iter(build_loader(csv, cfg, batch_size=2, training=False)))
    np.testing.assert_array_equal(decoded_indices(b["video"][0]), [10, 12, 14, 16, 18])
    assert b["label"].tolist() == [[0, 0, 1, 0], [0, 1, 1, 0]]      # multi-hot


def test_manifest_errors_are_user_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.mp4"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        Manifest.read(bad)
    with pytest.raises(DataError, match="manifest not found"):
        Manifest.read(tmp_path / "none.jsonl")
    (tmp_path / "nopath.csv").write_text("file,label\nx.mp4,1\n")
    with pytest.raises(UserError, match="'path' column"):
        Manifest.read(tmp_path / "nopath.csv")
    (tmp_path / "small.jsonl").write_text('{"path": "a.mp4"}\n')
    with pytest.raises(DataError, match="cannot fill one batch"):
        build_loader(tmp_path / "small.jsonl", _cfg(), batch_size=4, training=True)


# -- bad data ------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_mixed(data_videos, tmp_path_factory) -> tuple[Path, dict]:
    """A manifest of the 12 good videos interleaved with one of every kind of bad file."""
    bad = write_bad_files(tmp_path_factory.mktemp("bad"), data_videos / "videos" / "v00.mp4")
    rows = [{"path": str((data_videos / "videos" / f"v{k:02d}.mp4").resolve()), "label": k % 3}
            for k in range(N_GOOD)]
    for j, (p, _reason) in enumerate(bad.values()):
        rows.insert(2 * j + 1, {"path": str(p), "label": 0})
    path = write_manifest(tmp_path_factory.mktemp("mixed") / "mixed.jsonl", rows)
    return path, bad


def test_bad_files_skipped_and_counted_eval(data_mixed, caplog):
    path, bad = data_mixed
    expected = {}
    for _, reason in bad.values():
        expected[reason] = expected.get(reason, 0) + 1
    cfg = _cfg(sampling="uniform", max_failure_ratio=0.5)
    loader = build_loader(path, cfg, batch_size=4, training=False, num_workers=2)
    with caplog.at_level(logging.WARNING, logger="open_videoprism.data"):
        batches = list(loader)
    got = [p for b in batches for p in b["path"]]
    assert len(got) == N_GOOD and all("/v" in Path(p).name or Path(p).name.startswith("v") for p in got)
    assert loader.skips == expected
    assert "skipped" in caplog.text and "truncated.mp4" in caplog.text


def test_bad_files_replaced_in_training(data_mixed):
    path, bad = data_mixed
    loader = build_loader(path, _cfg(max_failure_ratio=0.5), batch_size=4, training=True, seed=0)
    batches = _take(loader, 4)                   # one epoch (19 samples // 4)
    names = [Path(p).name for b in batches for p in b["path"]]
    assert len(names) == 16 and all(n.startswith("v") for n in names)
    assert sum(loader.skips.values()) >= 1
    assert set(loader.skips) <= {r for _, r in bad.values()}
    st = loader.state()
    assert st.skips["failures"] == sum(loader.skips.values())


def test_failure_ratio_stop(data_mixed):
    path, bad = data_mixed
    n_bad, total = len(bad), len(bad) + N_GOOD
    assert n_bad == 7 and total == 19
    # 7 of 19 bad (37%): a 10% limit stops the pass as soon as the ratio is
    # judged (16 attempts, 7 failed), with one clear line...
    with pytest.raises(DataError, match=r"7 of 16 samples failed to load \(44% > max_failure_ratio 10%"):
        list(build_loader(path, _cfg(sampling="uniform"), batch_size=4, training=False))
    # ...a 50% limit lets it finish (the running ratio never exceeds 44%).
    assert sum(len(b["index"]) for b in build_loader(path, _cfg(sampling="uniform", max_failure_ratio=0.5),
                                                      batch_size=4, training=False)) == N_GOOD
    # A small pass is judged at its end even below 16 attempts.
    small = path.with_name("small.jsonl")
    small.write_text("".join(path.read_text().splitlines(keepends=True)[:6]))   # 3 good, 3 bad
    with pytest.raises(DataError, match=r"3 of 6 samples"):
        list(build_loader(small, _cfg(sampling="uniform", max_failure_ratio=0.4), batch_size=4, training=False))


def test_all_bad_dataset_stops(tmp_path, data_mixed):
    _, bad = data_mixed
    rows = [{"path": str(p)} for p, _ in bad.values()] * 3
    path = write_manifest(tmp_path / "allbad.jsonl", rows)
    with pytest.raises(DataError, match="failed to load"):
        _take(build_loader(path, _cfg(), batch_size=2, training=True), 3)


def test_check_data_cli(data_mixed, capsys):
    from open_videoprism.cli.main import main

    path, bad = data_mixed
    rc = main(["check-data", str(path), "--json", "--frames", "4", "--size", "18"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["ok"] == N_GOOD and out["bad"] == len(bad)
    assert {e["path"] for e in out["bad_entries"]} == {str(p) for p, _ in bad.values()}
    assert sum(out["reasons"].values()) == len(bad)
    good_only = path.with_name("good_only.jsonl")
    good_only.write_text("".join(line + "\n" for line in path.read_text().splitlines() if "/v" in line))
    assert main(["check-data", str(good_only), "--frames", "4", "--size", "18"]) == 0
    assert f"{N_GOOD} ok, 0 bad" in capsys.readouterr().out
    # A missing manifest is a user error: one line, exit 2.
    r = subprocess.run([sys.executable, "-m", "open_videoprism.cli.main", "check-data", str(path) + ".nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
