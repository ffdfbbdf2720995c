"""Shared test fixtures.

``tests/fixtures/`` holds the official reference outputs (``official/``, made by the
official JAX code; see its README) and the real demo clip of the official demos, so a
fresh clone runs every test. Tests never write into it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
OFFICIAL = FIXTURES / "official"
DEMO_CLIP = FIXTURES / "water_bottle_drumming.mp4"


@pytest.fixture(scope="session")
def official_dir() -> Path:
    """The official reference fixtures folder."""
    assert (OFFICIAL / "README.md").exists(), f"official fixtures missing at {OFFICIAL}: the checkout is incomplete"
    return OFFICIAL


@pytest.fixture(scope="session")
def demo_clip() -> Path:
    """The official demo video."""
    assert DEMO_CLIP.exists(), f"demo clip missing at {DEMO_CLIP}: the checkout is incomplete"
    return DEMO_CLIP


@pytest.fixture(autouse=True)
def _one_thread():
    # Every test model is tiny: intra-op threads only add synchronisation (up to 8x slower on a
    # busy 2-core machine), and one fixed thread count keeps numerics stable from run to run.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
