"""Twin runs (notebook 02, section 8): a rounding-sized nudge, the same batches, two trajectories."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch

from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.divergence import nudge_, twin_runs
from dsol_lite.stage_one import STAGE_ONE_PRESETS, build_stage_one
from dsol_lite.training import batch_order, iterate

CFG = dataclasses.replace(STAGE_ONE_PRESETS["quick"], width=8, image_size=64, batch_size=8)


@pytest.fixture(scope="module")
def batches(tiny_world):
    train = SoloPairs(tiny_world, "train", image_size=CFG.image_size, train=True, seed=0)
    return list(itertools.islice(iterate(train, batch_order(len(train), CFG.batch_size, 0, 0)), 4))


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_stage_one(CFG, num_clusters=4)


def test_nudge_scales_every_weight_by_about_the_relative_amount():
    m = model()
    before = [p.detach().clone() for p in m.parameters()]
    nudge_(m, 1e-3, seed=1)
    for old, new in zip(before, m.parameters()):
        change = (new.detach() - old).abs()
        assert change.max() <= 6e-3 * old.abs().max() + 1e-12  # |N(0, 1)| < 6
    total = torch.cat([(new.detach() - old).flatten() for old, new in zip(before, m.parameters())]).norm()
    norm = torch.cat([old.flatten() for old in before]).norm()
    assert 0.5e-3 < total / norm < 2e-3


def test_without_a_nudge_the_twins_are_identical(batches):
    m = model()
    weights = [p.detach().clone() for p in m.parameters()]
    twins = twin_runs(m, batches, LogMel(AudioConfig()), CFG, relative=0.0)
    assert twins.losses[0] == twins.losses[1] and len(twins.losses[0]) == len(batches)
    assert twins.distance == [0.0] * (len(batches) + 1) and twins.first_step_flips == 0
    assert twins.losses[0][0] != twins.losses[0][-1]  # they did train
    assert all(torch.equal(a, b) for a, b in zip(weights, m.parameters()))  # the model given is left alone
    assert 0 < twins.num_trained < sum(p.numel() for p in m.parameters())  # the heads get no gradient


def test_a_rounding_sized_nudge_grows(batches):
    twins = twin_runs(model(), batches, LogMel(AudioConfig()), CFG, relative=1e-6)
    assert twins.distance[0] == pytest.approx(1e-6 * twins.weight_norm, rel=0.5)
    assert twins.distance[-1] > 10 * twins.distance[0]
    assert twins.losses[0] != twins.losses[1]
