"""Shared test fixtures.

``../shared`` (next to the repository root) holds the official reference outputs
and the demo clip. It is read-only; tests never write into it. Tests that need
it skip with a clear reason where it is absent (a checkout without it).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OVP_SHARED_DIR", REPO_ROOT.parent / "shared"))
OFFICIAL = SHARED / "fixtures" / "official"
DEMO_CLIP = SHARED / "data" / "water_bottle_drumming.mp4"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official reference fixtures folder (skips where ../shared is absent)."""
    if not (OFFICIAL / "README.md").exists():
        pytest.skip(f"official fixtures not found at {OFFICIAL} (set OVP_SHARED_DIR to the shared/ folder)")
    return OFFICIAL


@pytest.fixture(scope="session")
def demo_clip() -> Path:
    """The official demo video (skips where ../shared is absent)."""
    if not DEMO_CLIP.exists():
        pytest.skip(f"demo clip not found at {DEMO_CLIP} (set OVP_SHARED_DIR to the shared/ folder)")
    return DEMO_CLIP


@pytest.fixture(autouse=True)
def _one_thread():
    # Every test model is tiny: intra-op threads only add synchronisation (up to 8x slower on a
    # busy 2-core machine), and one fixed thread count keeps numerics stable from run to run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
