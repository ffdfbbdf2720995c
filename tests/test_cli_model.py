"""``videoprism convert`` and ``videoprism embed`` end to end, including bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import open_videoprism as ovp
from open_videoprism.cli.main import main


@pytest.fixture(scope="module")
def lvt_ckpt(official_dir, tmp_path_factory):
    dst = tmp_path_factory.mktemp("ckpt") / "lvt.safetensors"
    assert main(["convert", str(official_dir / "public_lvt.npz"), str(dst)]) == 0
    return dst


def test_embed_demo_clip(lvt_ckpt, demo_clip, official_dir, tmp_path, capsys):
    out = tmp_path / "feats.npz"
    rc = main(["embed", "--checkpoint", str(lvt_ckpt), str(demo_clip), "--out", str(out),
               "--text", "a video of playing drums.", "--text", "a dog.",
               "--tokenizer", str(official_dir / "test_spm.model"), "--dtype", "fp32"])
    assert rc == 0
    z = np.load(out)
    assert str(z["dtype"]) == "fp32"
    assert z["tokens"].shape == (1, 4 * 16, 64)  # model table: 4 frames at 72 px
    assert z["embedding"].shape == (1, 64) and z["frame_embeddings"].shape == (1, 4, 64)
    assert z["scores"].shape == (1, 2)
    np.testing.assert_allclose(z["scores"].sum(-1), 1.0, rtol=1e-5)
    assert json.loads(str(z["paths"])) == [str(demo_clip)]
    # The same numbers as the library with the official demo preprocessing.
    from open_videoprism.data.decode import read_video
    from open_videoprism.data.transforms import center_crop, resize_short_side

    clip = center_crop(resize_short_side(read_video(demo_clip, num_frames=4, as_tensor=True), 72), 72)
    with torch.no_grad():
        ref = ovp.load(lvt_ckpt).encode_video(clip[None])
    np.testing.assert_allclose(z["tokens"], ref.tokens.numpy(), atol=1e-6)
    assert "best text" in capsys.readouterr().out


def test_embed_safetensors_output_and_options(lvt_ckpt, demo_clip, tmp_path):
    from safetensors.numpy import load_file

    out = tmp_path / "f.safetensors"
    assert main(["embed", "--checkpoint", str(lvt_ckpt), str(demo_clip), str(demo_clip), "--out", str(out),
                 "--frames", "2", "--size", "54", "--pooled-only", "--dtype", "bf16"]) == 0
    z = load_file(str(out))
    assert "tokens" not in z and z["embedding"].shape == (2, 64) and z["frame_embeddings"].shape == (2, 2, 64)
    np.testing.assert_allclose(z["embedding"][0], z["embedding"][1])


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "no such file"),
        ("not_video", "cannot decode"),
        ("bad_checkpoint", "unknown checkpoint format"),
    ],
)
def test_embed_bad_inputs_give_one_clear_line(lvt_ckpt, demo_clip, tmp_path, capsys, case, expected):
    text_file = tmp_path / "notes.mp4"
    text_file.write_text("this is not a video")
    args = {
        "missing": [str(lvt_ckpt), str(tmp_path / "nope.mp4")],
        "not_video": [str(lvt_ckpt), str(text_file)],
        "bad_checkpoint": [str(text_file), str(demo_clip)],
    }[case]
    rc = main(["embed", "--checkpoint", args[0], args[1], "--out", str(tmp_path / "o.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0]
    assert not (tmp_path / "o.npz").exists()


def test_text_query_on_video_only_model_is_refused(official_dir, demo_clip, tmp_path, capsys):
    rc = main(["embed", "--checkpoint", str(official_dir / "public_encoder.npz"), str(demo_clip),
               "--out", str(tmp_path / "o.npz"), "--text", "drums", "--tokenizer", str(official_dir / "test_spm.model")])
    assert rc == 2 and "no text encoder" in capsys.readouterr().err


def test_convert_refuses_wrong_suffix(official_dir, tmp_path, capsys):
    assert main(["convert", str(official_dir / "public_encoder.npz"), str(tmp_path / "x.bin")]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_console_script_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "open_videoprism.cli.main", "--help"], capture_output=True, text=True, check=True).stdout
    assert "convert" in out and "embed" in out
