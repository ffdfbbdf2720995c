"""Checkpoint conversion, config inference at real sizes, our format, and load errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import open_videoprism as ovp
from open_videoprism.checkpoints import (
    infer_config,
    load_checkpoint,
    official_to_state_dict,
    save_checkpoint,
    state_shapes,
)
from open_videoprism.errors import CheckpointError

EXPECTED = {  # section name in the listings -> registry config it must equal
    "base": "videoprism_v1_base",
    "lvt_base": "videoprism_lvt_v1_base",
    "large": "videoprism_v1_large",
    "lvt_large": "videoprism_lvt_v1_large",
}


def _sections(official_dir: Path) -> dict[str, tuple[dict[str, tuple[int, ...]], int]]:
    """Parse ``official_params_*.txt`` into {section: (shapes, total params)}."""
    out: dict[str, tuple[dict[str, tuple[int, ...]], int]] = {}
    for path in sorted(official_dir.glob("official_params_*.txt")):
        name, shapes = None, {}
        for line in path.read_text().splitlines():
            head = re.match(r"# (\w+): param tree", line)
            total = re.match(r"# total params: (\d+)", line)
            if head:
                name, shapes = head.group(1), {}
            elif total:
                out[name] = (shapes, int(total.group(1)))
            elif line.startswith("params/"):
                key, shape = line.split("\t")[:2]
                shapes[key] = tuple(int(x) for x in re.findall(r"\d+", shape))
    return out


def test_listings_cover_the_four_released_models(official_dir):
    assert set(_sections(official_dir)) == set(EXPECTED)


@pytest.mark.parametrize("section", sorted(EXPECTED))
def test_infer_config_at_released_sizes(official_dir, section):
    shapes, total = _sections(official_dir)[section]
    cfg = infer_config(shapes)
    assert cfg == ovp.get_config(EXPECTED[section])
    # The mapped official tree has exactly our model's keys and shapes (meta tensors: no memory).
    meta = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    mapped = {k: tuple(v.shape) for k, v in official_to_state_dict(meta).items()}
    assert mapped == state_shapes(cfg)
    assert sum(int(np.prod(s)) for s in mapped.values()) == total


def test_safetensors_roundtrip_is_exact(official_dir, tmp_path):
    dst, cfg = ovp.convert(official_dir / "public_lvt.npz", tmp_path / "lvt.safetensors")
    cfg2, state = load_checkpoint(dst)
    assert cfg2 == cfg
    a = ovp.load(official_dir / "public_lvt.npz")
    b = ovp.load(dst)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_layernorm_gamma_minus_one_is_converted(official_dir):
    arrays = np.load(official_dir / "public_encoder.npz")
    model = ovp.load(official_dir / "public_encoder.npz")
    scale = arrays["params/spatial_ln/scale"]
    np.testing.assert_allclose(model.encoder.spatial_norm.weight.detach().numpy(), scale + 1.0, rtol=0, atol=0)


def test_every_registered_config_roundtrips_through_json():
    for name in ovp.list_models():
        cfg = ovp.get_config(name)
        assert ovp.VideoPrismConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.npz", "no such file"),
        (lambda d: _write(d / "x.npz", b"not a zip at all"), "unknown checkpoint format"),
        (lambda d: _write(d / "x.safetensors", b"\x00" * 16), "not a readable safetensors"),
        (lambda d: _npz(d / "other.npz", {"weights": np.zeros(3)}), "not an official VideoPrism"),
    ],
    ids=["missing", "garbage", "bad-safetensors", "foreign-npz"],
)
def test_bad_checkpoints_fail_with_one_clear_error(tmp_path, make, message):
    with pytest.raises(CheckpointError, match=message):
        ovp.load(make(tmp_path))


def test_public_name_explains_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache, offline: nothing to load
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"flax_lvt_base_f16r288_repeated\.npz.*google/videoprism-lvt-base-f16r288"):
        ovp.load("videoprism_lvt_public_v1_base")


def test_object_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **{"params/x": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(CheckpointError, match="not a readable .npz"):
        ovp.load(path)


def test_plain_safetensors_without_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="without open_videoprism metadata"):
        ovp.load(tmp_path / "plain.safetensors")


def test_state_dict_that_does_not_fit_config_is_refused(tmp_path):
    model = ovp.create_model("videoprism_test_tiny")
    state = model.state_dict()
    state.pop("encoder.spatial_norm.bias")
    save_checkpoint(tmp_path / "broken.safetensors", state, model.cfg)
    with pytest.raises(CheckpointError, match="missing"):
        ovp.load(tmp_path / "broken.safetensors")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path
