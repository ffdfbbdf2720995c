"""Fuzzing the readers of user files: manifests, checkpoints (ours, official, HF, training), configs.

Each case mutates a valid file (truncation, bit flips, inserted delimiters, spliced
chunks) or writes random JSON/YAML, then reads it. Allowed outcomes: the file is
read, or a VideoPrismError (one ``error:`` line from the CLI). Anything else (a
traceback) or a case running past ``CASE_SECONDS`` (a hang) fails with the seed to
replay. The case count is bounded for CI; raise it locally with OVP_FUZZ_CASES=2000.
"""

from __future__ import annotations

import json
import os
import signal
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import open_videoprism as ovp
from open_videoprism.cli.main import main
from open_videoprism.errors import VideoPrismError

CASES = int(os.environ.get("OVP_FUZZ_CASES", "40"))
CASE_SECONDS = 10.0
_SPECIAL = [b'"', b",", b"\n", b"\r", b"{", b"}", b"[", b"]", b"\\", b"\x00", b"\xff", b"\t", b"|", b"'", b"e9"]


class Hang(Exception):
    pass


@contextmanager
def time_bound(seconds: float, what: str) -> Iterator[None]:
    """Fail a case that runs longer than ``seconds`` (SIGALRM; the tests run in the main thread)."""
    def on_alarm(signum, frame):
        raise Hang(f"{what}: still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random damage of ``data``, and a description of it."""
    n = len(data)
    kind = int(rng.integers(5))
    if kind == 0 or n == 0:
        cut = int(rng.integers(n + 1))
        return data[:cut], f"truncated to {cut} bytes"
    buf = bytearray(data)
    if kind == 1:
        flips = int(rng.integers(1, 9))
        for _ in range(flips):
            i = int(rng.integers(n))
            buf[i] ^= 1 << int(rng.integers(8))
        return bytes(buf), f"{flips} bit flips"
    if kind == 2:
        for _ in range(int(rng.integers(1, 6))):
            i = int(rng.integers(n + 1))
            buf[i:i] = _SPECIAL[int(rng.integers(len(_SPECIAL)))]
        return bytes(buf), "inserted delimiters"
    if kind == 3:
        i, j = sorted(int(x) for x in rng.integers(0, n + 1, 2))
        return bytes(buf[:i] + buf[j:]), f"deleted bytes {i}:{j}"
    i, j = sorted(int(x) for x in rng.integers(0, n + 1, 2))
    k = int(rng.integers(n + 1))
    return bytes(buf[:k] + buf[i:j] + buf[k:]), f"copied bytes {i}:{j} to {k}"


def random_json(rng: np.random.Generator, depth: int = 0, keys: tuple[str, ...] = ()) -> Any:
    """A random JSON value; objects draw their keys from ``keys`` and random text."""
    kind = int(rng.integers(9 if depth < 3 else 6))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(2))
    if kind == 2:
        return int(rng.choice([0, 1, -1, 7, 2**31, -(2**63), 10**30]))
    if kind == 3:
        return float(rng.choice([0.5, -3.0, 1e308, float("nan"), float("inf"), -0.0]))
    if kind in (4, 5):
        alphabet = string.printable + "é漢\u202e"
        return "".join(rng.choice(list(alphabet), int(rng.integers(0, 12))))
    if kind == 6:
        return [random_json(rng, depth + 1, keys) for _ in range(int(rng.integers(0, 4)))]
    pool = list(keys) + ["x", ""]
    return {str(rng.choice(pool)): random_json(rng, depth + 1, keys) for _ in range(int(rng.integers(0, 6)))}


def check_case(fn: Callable[[], Any], what: str) -> None:
    """Run one case: it returns or raises a VideoPrismError; a traceback or a hang fails the test."""
    try:
        with time_bound(CASE_SECONDS, what):
            fn()
    except VideoPrismError:
        pass
    except Hang as exc:
        pytest.fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer hunts
        pytest.fail(f"{what}: {type(exc).__name__}: {exc}")


def check_cli(argv: list[str], capsys, what: str) -> None:
    """The CLI on a fuzzed input: exit 0/1, or exit 2 with one ``error:`` line; never a traceback."""
    with time_bound(CASE_SECONDS, what):
        try:
            rc = main(argv)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{what}: traceback {type(exc).__name__}: {exc}")
    err = capsys.readouterr().err
    assert "Traceback" not in err, what
    if rc == 2:
        assert sum(line.startswith("error:") for line in err.splitlines()) == 1, f"{what}: {err}"
    else:
        assert rc in (0, 1), f"{what}: exit {rc}"


# --- manifests ----------------------------------------------------------------------------------

_MANIFEST_KEYS = ("path", "caption", "captions", "label", "motion_label", "start", "end")


def _valid_manifests(folder: Path) -> dict[str, bytes]:
    rows = [{"path": f"v{i}.mp4", "caption": f"a red square, {i}", "captions": ["x", "y"], "label": i,
             "start": 0.5, "end": 2.0} for i in range(4)]
    jsonl = "".join(json.dumps(r) + "\n" for r in rows).encode()
    csv = ("path,caption,label,start,end\n" + "".join(f'v{i}.mp4,"a, quoted ""caption""",{i},0,1\n' for i in range(4))).encode()
    return {"m.jsonl": jsonl, "m.csv": csv}


def test_fuzz_manifest_readers(tmp_path, capsys):
    from open_videoprism.data.manifest import Manifest

    valid = _valid_manifests(tmp_path)
    rng = np.random.default_rng(1234)
    for case in range(CASES):
        name = list(valid)[case % 2]
        if case % 5 == 4:  # random JSON lines
            data = "".join(json.dumps(random_json(rng, keys=_MANIFEST_KEYS)) + "\n" for _ in range(3)).encode()
            how = "random JSON lines"
            name = "m.jsonl"
        else:
            data, how = mutate(valid[name], rng)
        path = tmp_path / f"c{case}" / name
        path.parent.mkdir()
        path.write_bytes(data)
        what = f"manifest case {case} ({name}, {how})"
        check_case(lambda p=path: Manifest.read(p), what)
        if case % 4 == 0:  # the command users run on it (entries are missing files: a clean skip)
            check_cli(["check-data", str(path), "--frames", "2", "--size", "18"], capsys, what)


# --- checkpoints --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint_files(tmp_path_factory, official_dir) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("ck")
    torch.manual_seed(0)
    model = ovp.create_model("videoprism_test_tiny")
    ours = ovp.save_checkpoint(d / "ours.safetensors", model.state_dict(), model.cfg)
    return {"ours.safetensors": ours.read_bytes(), "official.npz": (official_dir / "public_encoder.npz").read_bytes()}


def test_fuzz_checkpoint_loaders(tmp_path, capsys, checkpoint_files):
    rng = np.random.default_rng(99)
    for case in range(CASES):
        name = list(checkpoint_files)[case % 2]
        data, how = mutate(checkpoint_files[name], rng)
        path = tmp_path / f"c{case}" / name
        path.parent.mkdir()
        path.write_bytes(data)
        what = f"checkpoint case {case} ({name}, {how})"
        check_case(lambda p=path: ovp.load(p), what)
        if case % 4 == 0:
            check_cli(["convert", str(path), str(tmp_path / f"c{case}" / "out.safetensors")], capsys, what)


def test_fuzz_safetensors_config_metadata(tmp_path, checkpoint_files):
    from safetensors.torch import load_file, save_file

    src = tmp_path / "src.safetensors"
    src.write_bytes(checkpoint_files["ours.safetensors"])
    state = load_file(str(src))
    good = ovp.get_config("videoprism_test_tiny").to_dict()
    keys = tuple(good) + tuple(good["vision"]) + ("text", "vocab_size", "norm_policy")
    rng = np.random.default_rng(7)
    for case in range(CASES):
        cfg = json.loads(json.dumps(good))
        if case % 2:
            cfg = random_json(rng, keys=keys)
        else:  # one field replaced by a random value
            section = cfg["vision"] if rng.integers(2) else cfg
            section[str(rng.choice(list(section)))] = random_json(rng, depth=2)
        path = tmp_path / f"c{case}.safetensors"
        save_file(state, str(path), metadata={"format": "open_videoprism", "config": json.dumps(cfg)})
        check_case(lambda p=path: ovp.load(p), f"config metadata case {case}: {json.dumps(cfg)[:200]}")


def test_fuzz_hf_folder_config(tmp_path, checkpoint_files):
    base = {"model_type": "videoprism_vision_model", "architectures": ["VideoPrismVisionModel"],
            "vision_config": {"hidden_size": 64, "num_attention_heads": 4}}
    keys = ("model_type", "architectures", "vision_config", "text_config", "tubelet_size", "image_size", "num_frames",
            "hidden_size", "num_spatial_layers", "num_attention_heads", "intermediate_size", "hidden_act")
    rng = np.random.default_rng(5)
    for case in range(CASES):
        folder = tmp_path / f"c{case}"
        folder.mkdir()
        cfg = random_json(rng, keys=keys)
        if case % 2 and isinstance(cfg, dict):
            cfg = {**base, **cfg, "model_type": "videoprism"}
        (folder / "config.json").write_text(json.dumps(cfg))
        (folder / "model.safetensors").write_bytes(mutate(checkpoint_files["ours.safetensors"], rng)[0])
        check_case(lambda p=folder: ovp.load(p), f"HF folder case {case}: {json.dumps(cfg)[:200]}")


def test_fuzz_training_checkpoint_meta(tmp_path):
    from open_videoprism.train import checkpoint_manager as ckpt

    good = ckpt.save(tmp_path / "run", 1, {"model.w": torch.ones(3)}, {"rng": [], "data": {}})
    meta = json.loads((good / ckpt.META_FILE).read_text())
    rng = np.random.default_rng(3)
    for case in range(CASES):
        folder = tmp_path / "fz" / ckpt.step_dir_name(case + 1)
        folder.mkdir(parents=True)
        (folder / ckpt.STATE_FILE).write_bytes((good / ckpt.STATE_FILE).read_bytes())
        m = json.loads(json.dumps(meta))
        if case % 2:
            m = random_json(rng, keys=tuple(meta) + ("size", "sha256"))
        else:
            m[str(rng.choice(list(m)))] = random_json(rng, depth=1, keys=("state.safetensors", "size", "sha256"))
        (folder / ckpt.META_FILE).write_text(json.dumps(m))
        what = f"training checkpoint case {case}: {json.dumps(m)[:200]}"
        check_case(lambda p=folder: ckpt.load(p), what)
        check_case(lambda p=folder: ckpt.find_last_good(p.parent), what)


def test_fuzz_yaml_configs(tmp_path):
    import yaml

    from open_videoprism.train.config import load_config

    keys = ("steps", "batch_size", "optim", "lr", "data", "model", "objective", "schedule", "seed", "name")
    rng = np.random.default_rng(11)
    for case in range(CASES):
        doc = random_json(rng, keys=keys)
        path = tmp_path / f"c{case}.yaml"
        if case % 3 == 2:
            text, _ = mutate(yaml.safe_dump({"steps": 3, "optim": {"lr": 1e-3}, "batch_size": 2}).encode(), rng)
            path.write_bytes(text)
        else:
            path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        check_case(lambda p=path: load_config(p), f"YAML case {case}: {path.read_bytes()[:200]!r}")


def test_fuzz_webdataset_shards(tmp_path, capsys):
    """Damaged shards (tar structure, member JSON, video bytes): check-data and the loader skip or stop in one line."""
    from data_helpers import write_index_video, write_manifest
    from open_videoprism.data import VideoDataConfig, build_loader
    from open_videoprism.data.webdataset_io import write_shards

    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(3):
        write_index_video(src / f"v{i}.mp4", n=4, size=18)
        rows.append({"path": f"v{i}.mp4", "caption": f"clip {i}", "label": i})
    write_shards(write_manifest(src / "m.jsonl", rows), tmp_path / "good", samples_per_shard=8, progress=False)
    good = (tmp_path / "good" / "shard-000000.tar").read_bytes()
    cfg = VideoDataConfig(num_frames=2, image_size=18, frame_stride=1, sampling="uniform", max_failure_ratio=1.0)
    rng = np.random.default_rng(21)
    for case in range(max(8, CASES // 4)):
        data, how = mutate(good, rng)
        path = tmp_path / f"c{case}.tar"
        path.write_bytes(data)
        what = f"shard case {case} ({how})"
        check_cli(["check-data", str(path), "--frames", "2", "--size", "18", "--stride", "1"], capsys, what)
        check_case(lambda p=path: list(build_loader(str(p), cfg, batch_size=2, training=False)), what)


def test_fuzz_video_files(tmp_path):
    """Damaged video bytes decode or fail as a DecodeError (a skip with a reason), never a traceback or a hang."""
    from data_helpers import write_index_video
    from open_videoprism.data import VideoDataConfig
    from open_videoprism.data.dataset import ClipSampler, sample_rng
    from open_videoprism.data.manifest import ManifestEntry

    good = write_index_video(tmp_path / "good.mp4", n=12, size=18).read_bytes()
    sampler = ClipSampler(VideoDataConfig(num_frames=3, image_size=18, frame_stride=2), training=True)
    rng = np.random.default_rng(8)
    for case in range(CASES):
        data, how = mutate(good, rng)
        entry = ManifestEntry(path=f"case{case}.mp4")
        check_case(lambda e=entry, d=data, i=case: sampler.load(e, sample_rng(0, 0, i), data=d, check_tail=True),
                   f"video case {case} ({how})")
