"""Shared fixtures: a tiny world generated once per test session (tests never read ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsol_lite.synth.config import preset
from dsol_lite.synth.writer import generate_world

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_samples" / "world"


@pytest.fixture(scope="session")
def tiny_cfg():
    return preset("tiny")


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory, tiny_cfg) -> Path:
    return generate_world(tiny_cfg, tmp_path_factory.mktemp("world") / "tiny", workers=2, progress=False)
