"""Issue 11: one test per numbered failure (no lost run, no silent wrong result, no traceback).

Each test fails on the code before the fix; the CLI-wide "one error line" sweep is in
tests/test_cli_errors.py and the fuzzing in tests/test_fuzz.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import open_videoprism as ovp
from data_helpers import write_index_video, write_manifest
from open_videoprism.cli.main import main
from open_videoprism.errors import (
    CheckpointError,
    DataError,
    InputError,
    RunLockedError,
)
from open_videoprism.runlock import run_lock
from open_videoprism.train.config import load_config
from open_videoprism.train.engine import Trainer
from open_videoprism.train.logging import read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SRC = Path(ovp.__file__).resolve().parents[1]


# --- helpers ------------------------------------------------------------------------


class _Toy(nn.Module):
    """Fits three numbers; ``crash_at`` raises inside step ``crash_at`` (a crash mid-run)."""

    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.crash_at = crash_at
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        if self.crash_at is not None and self.calls >= self.crash_at:
            raise RuntimeError("simulated crash")
        return {"loss": ((self.w - batch["target"]) ** 2).mean()}

    def export_model(self):
        return ovp.create_model("videoprism_test_tiny")


class _Stream:
    def __init__(self, state=None) -> None:
        self.k = int(state["k"]) if state else 0

    def __iter__(self):
        while True:
            self.k += 1
            yield {"target": torch.ones(3)}

    def state(self):
        return {"k": self.k}


def _cfg(*extra: str):
    return load_config(CONFIGS / "stage1-tiny.yaml", ["log_every=1", "ckpt_every=100", *extra])


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture()
def lock_holder(tmp_path):
    """A live process holding the run lock on tmp_path/run (killed with SIGKILL afterwards)."""
    run = tmp_path / "run"
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(SRC)!r})
        from open_videoprism.runlock import acquire
        acquire({str(run)!r})
        print("held", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# --- 1. two runs into one --out ---------------------------------------------------------


def test_1_second_run_into_the_same_out_fails_at_once_naming_the_holder(lock_holder):
    run, proc = lock_holder
    cfg = _cfg("steps=2")
    with pytest.raises(RunLockedError, match=f"pid {proc.pid} on host "):
        Trainer(cfg, _Toy(), _Stream, run, progress=False).fit()
    assert not (run / "metrics.jsonl").exists() and not (run / "checkpoints").exists()
    # SIGKILL releases the lock (the kernel does): the next run goes through.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    res = Trainer(cfg, _Toy(), _Stream, run, progress=False).fit()
    assert res.step == 2


def test_1_pretrain_cli_refuses_a_locked_out_with_one_line(lock_holder, capsys):
    run, proc = lock_holder
    rc = main(["pretrain", "--config", "stage1-tiny", "--data", "random", "--out", str(run), "--no-progress", "steps=1"])
    assert rc == 2
    assert f"pid {proc.pid}" in _one_error_line(capsys.readouterr().err)
    assert not (run / "data_source.json").exists()


def test_1_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with run_lock(tmp_path / "r"):
        with run_lock(tmp_path / "r"):
            pass
        cfg = _cfg("steps=1")
        Trainer(cfg, _Toy(), _Stream, tmp_path / "r", progress=False).fit()  # the engine nests too
    code = f"import sys; sys.path.insert(0, {str(SRC)!r}); from open_videoprism.runlock import acquire; acquire({str(tmp_path / 'r')!r})"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0  # free again


# --- 2. CSV with an unbalanced quote --------------------------------------------------------


def test_2_unbalanced_quote_is_refused_with_file_and_line(tmp_path, capsys):
    from open_videoprism.data.manifest import Manifest

    clip = write_index_video(tmp_path / "a.mp4", n=8)
    path = tmp_path / "m.csv"
    path.write_text(f'path,caption\n{clip.name},ok\n{clip.name},"an open quote\n{clip.name},swallowed\n{clip.name},too\n')
    with pytest.raises(DataError, match=r"m\.csv:3: .*(quote|CSV)"):
        Manifest.read(path)
    assert main(["check-data", str(path), "--frames", "2", "--size", "18"]) == 2
    assert "m.csv:3" in _one_error_line(capsys.readouterr().err)


def test_2_csv_row_with_the_wrong_field_count_is_refused(tmp_path):
    from open_videoprism.data.manifest import Manifest

    path = tmp_path / "m.csv"
    path.write_text("path,caption\na.mp4,one,two\n")
    with pytest.raises(DataError, match=r"m\.csv:2: 3 fields but the header has 2"):
        Manifest.read(path)


# --- 3. a pretraining entry without a caption ---------------------------------------------------


class _Tok:
    def __call__(self, texts, max_length=8):
        ids = torch.tensor([[len(w) for w in t.split()][:max_length] + [0] * (max_length - len(t.split()[:max_length])) for t in texts])
        return ids, (ids == 0).float()


def _caption_manifest(tmp_path: Path) -> Path:
    rows = []
    for i in range(6):
        clip = write_index_video(tmp_path / f"v{i}.mp4", n=8, size=18)
        rows.append({"path": clip.name, **({"caption": f"clip number {i}"} if i != 3 else {})})
    return write_manifest(tmp_path / "pretrain.jsonl", rows)


def test_3_entry_without_caption_is_skipped_and_counted_in_stage1_data(tmp_path):
    from open_videoprism.data import VideoDataConfig, build_loader

    manifest = _caption_manifest(tmp_path)
    cfg = VideoDataConfig(num_frames=2, image_size=18, frame_stride=1, max_failure_ratio=0.5)
    loader = build_loader(manifest, cfg, batch_size=2, training=True, tokenizer=_Tok())
    it = iter(loader)
    batches = [next(it) for _ in range(6)]  # two epochs: the entry is met, nothing crashes
    assert all("text_ids" in b and len(b["caption"]) == 2 for b in batches)
    assert loader.skips == {"no_caption": 2}
    # Resuming from the saved state meets the same entry again, skips it again, never crashes.
    again = build_loader(manifest, cfg, batch_size=2, training=True, tokenizer=_Tok(), state=loader.state())
    assert "text_ids" in next(iter(again))


def test_3_check_data_reports_the_missing_caption(tmp_path, capsys):
    manifest = _caption_manifest(tmp_path)
    assert main(["check-data", str(manifest), "--frames", "2", "--size", "18", "--stride", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 5 and report["reasons"] == {"no_caption": 1}
    assert main(["check-data", str(manifest), "--frames", "2", "--size", "18", "--stride", "1", "--captions", "ignore"]) == 0


# --- 4. a crash before the first checkpoint -----------------------------------------------------


@pytest.mark.parametrize("resume", [False, True])
def test_4_rerun_after_a_crash_before_any_checkpoint_logs_each_step_once(tmp_path, resume):
    cfg = _cfg("steps=5")
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg, _Toy(crash_at=4), _Stream, tmp_path, progress=False).fit()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    Trainer(cfg, _Toy(), _Stream, tmp_path, progress=False).fit(resume=resume)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]


# --- 5. encode_video input contract ------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ovp.create_model("videoprism_test_tiny").eval()


def test_5_uint8_frames_are_scaled_and_0_255_floats_refused(tiny):
    frames = torch.randint(0, 256, (1, 2, 3, 36, 36), dtype=torch.uint8)
    with torch.no_grad():
        from_uint8 = tiny.encode_video(frames).tokens
        from_float = tiny.encode_video(frames.float() / 255).tokens
    torch.testing.assert_close(from_uint8, from_float)
    with pytest.raises(InputError, match=r"span \[0, 255\].*\[B, T, 3, H, W\]"):
        tiny.encode_video(frames.float())
    with pytest.raises(InputError, match="expected floats in"):
        tiny.encode_video((frames.float() / 255 - 0.45) / 0.225)  # mean/std normalised
    tiny.encode_video(torch.full((1, 1, 3, 18, 18), 1.005))  # resampling overshoot is tolerated


@pytest.mark.parametrize("shape", [(0, 2, 3, 36, 36), (1, 0, 3, 36, 36), (2, 3, 36, 36)])
def test_5_empty_or_misshaped_video_names_the_layout(tiny, shape):
    with pytest.raises(InputError, match=r"\[B, T, 3, H, W\]"):
        tiny.encode_video(torch.rand(shape))


# --- 6. non-finite weights ----------------------------------------------------------------------


def test_6_nan_weights_are_refused_naming_the_tensor(tmp_path, capsys):
    model = ovp.create_model("videoprism_test_tiny")
    state = model.state_dict()
    state["encoder.temporal.blocks.1.mlp.fc2.weight"][0, 0] = float("nan")
    path = ovp.save_checkpoint(tmp_path / "nan.safetensors", state, model.cfg)
    with pytest.raises(CheckpointError, match=r"'encoder\.temporal\.blocks\.1\.mlp\.fc2\.weight' holds 1 NaN/Inf"):
        ovp.load(path)
    assert main(["convert", str(path), str(tmp_path / "out.safetensors")]) == 2
    assert "fc2.weight" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.safetensors").exists()


def test_6_inf_in_an_official_npz_is_refused(official_dir, tmp_path):
    with np.load(official_dir / "public_encoder.npz") as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if k.endswith("spatial_pos_emb/emb_var"))
    arrays[key] = arrays[key].copy()
    arrays[key][0, 0] = np.inf
    np.savez(tmp_path / "inf.npz", **arrays)
    with pytest.raises(CheckpointError, match="encoder.spatial_pos"):
        ovp.load(tmp_path / "inf.npz")


# --- 7. library-level checks behind the one-line errors (the CLI sweep is test_cli_errors.py) ------


def forged_npz(path: Path, shape: tuple[int, ...], payload: bytes = b"\0" * 16) -> Path:
    """An .npz whose one member declares ``shape`` but holds only ``payload``."""
    import io
    import zipfile

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("params/x.npy", buf.getvalue() + payload)
    return path


def test_7_npz_header_declaring_a_huge_shape_is_refused_before_allocating(tmp_path):
    path = forged_npz(tmp_path / "huge.npz", (10**12,))
    with pytest.raises(CheckpointError, match=r"'params/x' declares shape \(1000000000000,\)"):
        ovp.load(path)


def test_7_shapes_are_checked_against_the_config_on_the_meta_device(tmp_path):
    model = ovp.create_model("videoprism_test_tiny")
    state = model.state_dict()
    state["encoder.spatial_pos"] = torch.zeros(3, 64)
    path = ovp.save_checkpoint(tmp_path / "bad.safetensors", state, model.cfg)
    with pytest.raises(CheckpointError, match=r"'encoder\.spatial_pos' has shape \(3, 64\), the model config needs \(16, 64\)"):
        ovp.load(path)


# --- 9. shards outside the folder, duplicates, start > end -------------------------------------


def test_9_shards_skip_and_count_entries_outside_the_manifest_folder(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    inside = write_index_video(data / "in.mp4", n=4, size=18)
    outside = write_index_video(tmp_path / "secret.mp4", n=4, size=18)
    manifest = write_manifest(data / "m.jsonl", [{"path": inside.name}, {"path": "../secret.mp4"}, {"path": str(outside)}])
    assert main(["shards", str(manifest), str(tmp_path / "s1"), "--samples-per-shard", "8"]) == 0
    captured = capsys.readouterr()
    assert "1 samples in 1 shards" in captured.out and "2 entries lie outside" in captured.err
    assert main(["shards", str(manifest), str(tmp_path / "s2"), "--allow-outside"]) == 0
    assert "3 samples in 1 shards" in capsys.readouterr().out


def test_9_check_data_reports_duplicates_and_reversed_times(tmp_path, capsys):
    clip = write_index_video(tmp_path / "a.mp4", n=20, size=18)
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"path": clip.name, "caption": "x"},
        {"path": f"./{clip.name}", "caption": "x"},
        {"path": clip.name, "caption": "y", "start": 1.5, "end": 0.5},
    ])
    assert main(["check-data", str(manifest), "--frames", "2", "--size", "18", "--stride", "1", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 1 and report["reasons"] == {"duplicate": 1, "bad_time_range": 1}


# --- 10. file modes and CUDA RNG order ----------------------------------------------------------


def test_10_atomic_writes_respect_the_umask(tmp_path):
    from open_videoprism.atomic import write_text

    old = os.umask(0o022)
    try:
        assert (write_text(tmp_path / "a.txt", "x").stat().st_mode & 0o777) == 0o644
        os.umask(0o077)
        assert (write_text(tmp_path / "b.txt", "x").stat().st_mode & 0o777) == 0o600
    finally:
        os.umask(old)


def test_10_cuda_rng_states_restore_in_device_order():
    from open_videoprism.train.checkpoint_manager import cuda_states

    tensors = {f"cuda{i}": torch.tensor([i]) for i in (10, 2, 0, 1, 11, 3)} | {"torch": torch.tensor([-1])}
    assert [int(t) for t in cuda_states(tensors)] == [0, 1, 2, 3, 10, 11]
