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


@pytest.fixture(scope="session")
def tiny_stage_one(tiny_world, tmp_path_factory) -> Path:
    """A finished stage-one run on the tiny world (a tiny network: seconds on a CPU)."""
    import dataclasses

    import torch

    from dsol_lite.stage_one import STAGE_ONE_PRESETS, StageOneTrainer

    cfg = dataclasses.replace(STAGE_ONE_PRESETS["quick"], width=8, image_size=64, eval_size=80, epochs=2,
                              batch_size=8, class_passes=1, checkpoint_every=2)
    run = tmp_path_factory.mktemp("stage_one")
    StageOneTrainer(tiny_world, run, cfg, device=torch.device("cpu"), progress_bar=False).fit()
    return run
