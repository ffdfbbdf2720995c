"""Every command with every bad input of issue 11 item 7: exit 2, one ``error:`` line, no traceback.

Each case builds its bad input in a temporary folder and runs the CLI in-process
(an exception other than a VideoPrismError would escape ``main`` and fail the test).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import open_videoprism as ovp
from data_helpers import write_index_video, write_manifest
from open_videoprism.cli.main import main


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


# --- inputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory, official_dir) -> dict[str, Path]:
    """Good inputs every case starts from: checkpoints, videos, a tiny synth-like data folder."""
    d = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    enc = ovp.create_model("videoprism_test_tiny")
    ovp.save_checkpoint(d / "enc.safetensors", enc.state_dict(), enc.cfg)
    small = ovp.get_config("videoprism_lvt_test_tiny")
    small.text.vocab_size = 100  # the test tokenizer has 1000 pieces
    lvt = ovp.create_model(small)
    ovp.save_checkpoint(d / "lvt_small_vocab.safetensors", lvt.state_dict(), lvt.cfg)
    data = d / "data"
    data.mkdir()
    rows = []
    for i in range(4):
        write_index_video(data / f"v{i}.mp4", n=6, size=18)
        rows.append({"path": f"v{i}.mp4", "caption": f"clip {i}", "label": i % 2})
    write_manifest(data / "probe_train.jsonl", rows)
    write_manifest(data / "test.jsonl", rows[:2] + [{**rows[2], "label": 7}])  # 7: outside the 2 classes
    (data / "classes.json").write_text(json.dumps({"label": ["a", "b"]}))
    (d / "a_file").write_text("a file where a folder is needed\n")
    return {"dir": d, "enc": d / "enc.safetensors", "lvt_small_vocab": d / "lvt_small_vocab.safetensors",
            "data": data, "video": data / "v0.mp4", "official": official_dir / "public_encoder.npz",
            "spm": official_dir / "test_spm.model", "blocked": d / "a_file" / "out"}


def _official(world) -> dict[str, np.ndarray]:
    with np.load(world["official"]) as z:
        return {k: z[k] for k in z.files}


def _npz(tmp: Path, arrays: dict) -> Path:
    np.savez(tmp / "bad.npz", **arrays)
    return tmp / "bad.npz"


def wrong_shape(world, tmp):
    a = _official(world)
    k = next(k for k in a if k.endswith("ffn_layer2/linear/kernel"))
    a[k] = np.zeros(a[k].shape[:-1] + (a[k].shape[-1] + 1,), np.float32)
    return _npz(tmp, a)


def missing_key(world, tmp):
    a = _official(world)
    del a[next(k for k in a if k.endswith("temporal_ln/scale"))]
    return _npz(tmp, a)


def string_dtype(world, tmp):
    a = _official(world)
    a[next(iter(a))] = np.array(["abc", "def"])
    return _npz(tmp, a)


def int_dtype(world, tmp):
    cfg, state = ovp.checkpoints.read_any(world["enc"])
    state["encoder.spatial_pos"] = state["encoder.spatial_pos"].long()
    return ovp.save_checkpoint(tmp / "int.safetensors", state, cfg)


def _with_config(world, tmp, config: str) -> Path:
    from safetensors.torch import save_file

    _, state = ovp.checkpoints.read_any(world["enc"])
    save_file(state, str(tmp / "meta.safetensors"), metadata={"format": "open_videoprism", "config": config})
    return tmp / "meta.safetensors"


def corrupt_config_json(world, tmp):
    return _with_config(world, tmp, '{"vision": {"width": 64,')


def config_wrong_types(world, tmp):
    return _with_config(world, tmp, json.dumps({"vision": {"width": "sixty-four"}}))


def config_wrong_structure(world, tmp):
    return _with_config(world, tmp, json.dumps(["not", "a", "dict"]))


def config_impossible_values(world, tmp):
    cfg = ovp.get_config("videoprism_test_tiny").to_dict()
    cfg["vision"]["num_heads"] = 5  # 64 is not divisible by 5
    return _with_config(world, tmp, json.dumps(cfg))


def hf_config_not_a_dict(world, tmp):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text("[1, 2, 3]")
    return tmp / "hf"


def hf_config_bad_values(world, tmp):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text(json.dumps({"model_type": "videoprism", "vision_config": {"tubelet_size": "x"}}))
    return tmp / "hf"


def hf_weights_garbage(world, tmp):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text(json.dumps({"model_type": "videoprism_vision_model"}))
    (tmp / "hf" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}" + b"\0" * 64)
    return tmp / "hf"


def hf_index_escapes(world, tmp):
    (tmp / "hf").mkdir()
    (tmp / "hf" / "config.json").write_text(json.dumps({"model_type": "videoprism_vision_model"}))
    (tmp / "hf" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "../../etc/passwd"}}))
    return tmp / "hf"


def npz_huge_shape(world, tmp):
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(tmp / "huge.npz", "w") as zf:
        zf.writestr("params/patch_projection/linear/kernel.npy", buf.getvalue() + b"\0" * 64)
    return tmp / "huge.npz"


def safetensors_huge_shape(world, tmp):
    header = json.dumps({"__metadata__": {"format": "open_videoprism"},
                         "encoder.spatial_pos": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}})
    raw = header.encode()
    (tmp / "huge.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 64)
    return tmp / "huge.safetensors"


def npz_truncated(world, tmp):
    raw = world["official"].read_bytes()
    (tmp / "cut.npz").write_bytes(raw[: len(raw) // 2])
    return tmp / "cut.npz"


def nan_weights(world, tmp):
    cfg, state = ovp.checkpoints.read_any(world["enc"])
    state["encoder.temporal_norm.weight"][3] = float("inf")
    return ovp.save_checkpoint(tmp / "inf.safetensors", state, cfg)


BAD_CHECKPOINTS: dict[str, tuple[Callable, str]] = {
    "wrong_shape": (wrong_shape, "mlp.fc2.weight' has shape"),
    "missing_key": (missing_key, "missing: ['encoder.temporal_norm.weight']"),
    "string_dtype": (string_dtype, "must be floating point"),
    "int_dtype": (int_dtype, "dtype torch.int64"),
    "corrupt_config_json": (corrupt_config_json, "corrupt 'config' metadata"),
    "config_wrong_types": (config_wrong_types, "config"),
    "config_wrong_structure": (config_wrong_structure, "corrupt 'config' metadata"),
    "config_impossible_values": (config_impossible_values, "not divisible by num_heads"),
    "hf_config_not_a_dict": (hf_config_not_a_dict, "not a VideoPrism model"),
    "hf_config_bad_values": (hf_config_bad_values, "malformed VideoPrism config"),
    "hf_weights_garbage": (hf_weights_garbage, "not a readable safetensors"),
    "hf_index_escapes": (hf_index_escapes, "inside the folder"),
    "npz_huge_shape": (npz_huge_shape, "damaged or forged"),
    "npz_truncated": (npz_truncated, "not a readable .npz"),
    "safetensors_huge_shape": (safetensors_huge_shape, "not a readable safetensors"),
    "nan_weights": (nan_weights, "NaN/Inf"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
@pytest.mark.parametrize("command", ["convert", "embed"])
def test_bad_checkpoints(world, tmp_path, capsys, case, command):
    make, expected = BAD_CHECKPOINTS[case]
    src = make(world, tmp_path)
    if command == "convert":
        argv = ["convert", str(src), str(tmp_path / "out.safetensors")]
    else:
        argv = ["embed", "--checkpoint", str(src), str(world["video"]), "--out", str(tmp_path / "f.npz")]
    assert main(argv) == 2
    assert expected in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out.safetensors").exists() and not (tmp_path / "f.npz").exists()


def _cmd(world, tmp: Path, name: str) -> tuple[list[str], str]:
    """``(argv, expected text of the error line)`` of each other bad-input case."""
    w = world
    blocked = str(w["blocked"])
    cases = {
        "embed_frames_negative": (["embed", "--checkpoint", str(w["enc"]), str(w["video"]), "--out", str(tmp / "f.npz"),
                                   "--frames", "-3"], "--frames must be a positive integer"),
        "embed_tokenizer_too_large": (["embed", "--checkpoint", str(w["lvt_small_vocab"]), str(w["video"]), "--out",
                                       str(tmp / "f.npz"), "--text", "a clip", "--tokenizer", str(w["spm"])],
                                      "text vocabulary of 100"),
        "embed_not_a_video": (["embed", "--checkpoint", str(w["enc"]), str(w["data"] / "classes.json"), "--out",
                               str(tmp / "f.npz")], "cannot decode"),
        "embed_unwritable_out": (["embed", "--checkpoint", str(w["enc"]), str(w["video"]), "--out", blocked + ".npz"],
                                 "a_file"),
        "convert_unwritable_out": (["convert", str(w["enc"]), blocked + ".safetensors"], "a_file"),
        "eval_labels_out_of_range": (["eval", "probe", "--checkpoint", str(w["enc"]), "--data", str(w["data"]), "--out",
                                      str(tmp / "ev"), "--no-plots", "--epochs", "1"], "label 7, outside [0, 2)"),
        "eval_unwritable_out": (["eval", "linear", "--checkpoint", str(w["enc"]), "--data", str(w["data"]), "--out",
                                 blocked], "a_file"),
        "eval_frames_negative": (["eval", "linear", "--checkpoint", str(w["enc"]), "--data", str(w["data"]), "--out",
                                  str(tmp / "ev"), "--frames", "-3"], "eval.features.num_frames: must be >= 1, got -3"),
        "features_unwritable_out": (["features", str(w["data"] / "test.jsonl"), "--checkpoint", str(w["enc"]), "--out",
                                     blocked], "a_file"),
        "synth_unwritable_out": (["synth", blocked, "--clips", "3"], "a_file"),
        "shards_unwritable_out": (["shards", str(w["data"] / "test.jsonl"), blocked], "a_file"),
        "pretrain_unwritable_out": (["pretrain", "--config", "stage1-tiny", "--data", "random", "--out", blocked,
                                     "--no-progress", "steps=1"], "a_file"),
        "check_data_missing_manifest": (["check-data", str(tmp / "nope.jsonl")], "manifest not found"),
    }
    return cases[name]


CASES = ["embed_frames_negative", "embed_tokenizer_too_large", "embed_not_a_video", "embed_unwritable_out",
         "convert_unwritable_out", "eval_labels_out_of_range", "eval_unwritable_out", "eval_frames_negative",
         "features_unwritable_out", "synth_unwritable_out", "shards_unwritable_out", "pretrain_unwritable_out",
         "check_data_missing_manifest"]


@pytest.mark.parametrize("case", CASES)
def test_bad_inputs_to_every_command(world, tmp_path, capsys, case):
    argv, expected = _cmd(world, tmp_path, case)
    assert main(argv) == 2
    assert expected in _one_error_line(capsys.readouterr().err)


def test_raw_h264_stream_embeds(world, tmp_path, capsys):
    """A raw .h264 elementary stream (not seekable) used to crash embed; now it is read."""
    import av

    raw = tmp_path / "clip.h264"
    with av.open(str(raw), "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width = stream.height = 72
        stream.pix_fmt = "yuv420p"
        for i in range(6):
            frame = av.VideoFrame.from_ndarray(np.full((72, 72, 3), 30 * i, np.uint8), format="rgb24")
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    assert main(["embed", "--checkpoint", str(world["enc"]), str(raw), "--out", str(tmp_path / "f.npz")]) == 0
    assert np.load(tmp_path / "f.npz")["tokens"].shape == (1, 4 * 16, 64)
