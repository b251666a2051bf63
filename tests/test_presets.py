"""The presets say what they promise: quick and full share one recipe, paper is DSOL's published settings,
and nothing but an explicit switch downloads weights."""

from __future__ import annotations

import dataclasses

import pytest

from dsol_lite.methods import PEER_PRESETS
from dsol_lite.models import backbones
from dsol_lite.pipeline import PIPELINE_PRESETS
from dsol_lite.stage_one import STAGE_ONE_PRESETS, build_stage_one
from dsol_lite.stage_two import STAGE_TWO_PRESETS


def test_full_is_the_quick_recipe_at_dsols_size():
    quick, full = STAGE_ONE_PRESETS["quick"], STAGE_ONE_PRESETS["full"]
    assert (full.width, full.image_size, full.imagenet, full.eval_size) == (64, 224, False, None)
    recipe = {f.name for f in dataclasses.fields(quick)} - {"width", "image_size", "checkpoint_every"}
    assert {name: getattr(full, name) for name in recipe} == {name: getattr(quick, name) for name in recipe}
    assert (full.negatives, full.mosaic, full.class_lr, full.rounds, full.lr_schedule, full.select_from) == \
        ("all", True, 0.0, "best", "step", 0.5)
    full.validate()
    two = STAGE_TWO_PRESETS["full"].validate()
    assert (two.epochs, two.warmup_epochs, two.eval_size, two.lr) == (6, 0, 256, 1e-4)  # quick's, at 256 px
    assert PIPELINE_PRESETS["full"].world == "full"


def test_paper_is_dsols_published_settings():
    p = STAGE_ONE_PRESETS["paper"].validate()
    assert (p.width, p.image_size, p.batch_size, p.epochs) == (64, 224, 32, 15)
    assert (p.lr, p.weight_decay, p.heads_lr, p.scale_lr_mult, p.lr_schedule) == (1e-4, 1e-4, 1e-3, 1.0, "constant")
    assert (p.negatives, p.mosaic, p.rounds, p.class_lr, p.class_passes, p.cluster_from_epoch) == \
        ("one", False, "every", None, 3, 1)
    assert (p.mask_threshold, p.feature_norm, p.select_from, p.imagenet) == (0.05, "mask", 0.0, True)
    two = STAGE_TWO_PRESETS["paper"].validate()
    assert (two.batch_size, two.lr, two.weight_decay, two.loc_weight, two.filter_silent) == (32, 1e-4, 1e-4, 0.5, True)
    assert two.warmup_epochs == 1 and two.epochs == 5
    assert PIPELINE_PRESETS["paper"].world == "full"
    assert PIPELINE_PRESETS["music"].stage_one is STAGE_ONE_PRESETS["paper"]  # DSOL on real data


def test_only_an_explicit_switch_downloads_weights(monkeypatch):
    def no_network():
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(backbones, "imagenet_resnet18_state", no_network)
    assert not STAGE_ONE_PRESETS["full"].imagenet and not PEER_PRESETS["full"].imagenet
    build_stage_one(dataclasses.replace(STAGE_ONE_PRESETS["full"], width=8), 4)  # builds without the network
    with pytest.raises(AssertionError, match="download"):
        build_stage_one(STAGE_ONE_PRESETS["paper"], 4)
