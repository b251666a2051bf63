"""DSOL stage two: the model, the objective on hand-made inputs, and the trainer's bad input."""

from __future__ import annotations

import dataclasses
import math
import shutil

import pytest
import torch

from dsol_lite.dictionary import DictionaryRound
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.models import BackbonePair, DSOLStageOne, DSOLStageTwo
from dsol_lite.objectives import quadrant_maxima, stage_two_loss
from dsol_lite.stage_two import (STAGE_TWO_PRESETS, Interrupted, StageTwoConfig, StageTwoTrainer, load_stage_one,
                                 load_stage_two)

TINY = dataclasses.replace(STAGE_TWO_PRESETS["quick"], batch_size=8, epochs=2, warmup_epochs=1, checkpoint_every=2,
                           eval_size=None)


def tiny_model(k: int = 3) -> DSOLStageTwo:
    torch.manual_seed(0)
    one = DSOLStageOne(BackbonePair(8), num_clusters=k)
    return DSOLStageTwo(one, torch.rand(k, one.backbones.channels))


def test_quadrant_maxima_hand_case():
    maps = torch.arange(16.0).view(1, 4, 4)
    assert quadrant_maxima(maps).tolist() == [[5.0, 7.0, 13.0, 15.0]]


def test_class_maps_are_dictionary_products_times_the_localization_map():
    model = tiny_model().eval()
    images, spec = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 201, 64)
    plain = model(images, spec, filter_silent=False)
    filtered = model(images, spec)
    v_fea = plain.stage_one.v_fea
    by_hand = model.obj_weight * torch.einsum("bchw,kc->bkhw", v_fea, model.dictionary) + model.obj_bias
    assert torch.allclose(plain.class_maps, by_hand, atol=1e-5)
    assert torch.allclose(filtered.class_maps, by_hand * filtered.loc_map[:, None], atol=1e-5)
    assert torch.allclose(filtered.visual_logits, filtered.class_maps.mean(dim=(2, 3)))
    # without the filter the maps never hear the audio (the report's "dictionary maps, no audio" row)
    other = torch.randn(2, 1, 201, 64)
    assert torch.equal(model(images, other, filter_silent=False).class_maps, plain.class_maps)
    assert not torch.allclose(model(images, other).class_maps, filtered.class_maps)


def test_stage_two_loss_known_value_and_gradients():
    model = tiny_model()
    images, spec = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 201, 64)
    out = model(images, spec)
    target = torch.softmax(out.visual_logits.detach(), dim=1)  # the visual distribution itself: KL = 0
    loss, stats = stage_two_loss(model, out, target, loc_weight=0.5)
    assert stats["kl"] == pytest.approx(0.0, abs=1e-6)
    # the localization part by hand: own max -> 1, the next scene's 4 quadrant maxima -> 0
    net, s1 = model.net, out.stage_one
    pos = net.logit_maps(s1.v_emb, s1.a_emb).amax(dim=(1, 2))
    neg = quadrant_maxima(net.logit_maps(s1.v_emb[[1, 0]], s1.a_emb)).flatten()
    bce = 0.5 * (torch.nn.functional.softplus(-pos).mean() + torch.nn.functional.softplus(neg).mean())
    assert loss.item() == pytest.approx(0.5 * bce.item(), rel=1e-5)
    uniform = torch.full_like(target, 1 / 3)
    loss, _ = stage_two_loss(model, model(images, spec), uniform)
    loss.backward()
    for name in ("obj_weight", "obj_bias"):
        assert getattr(model, name).grad is not None and getattr(model, name).grad.abs() > 0
    assert model.net.backbones.visual_net.conv1.weight.grad.abs().sum() > 0
    assert model.net.backbones.audio_net.conv1.weight.grad.abs().sum() > 0


def test_kl_is_batchmean_not_elementwise_mean():
    model = tiny_model(k=2)
    out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 1, 201, 64))
    out.visual_logits = torch.zeros(2, 2)  # visual: uniform
    target = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss, stats = stage_two_loss(model, out, target, loc_weight=0.0)
    assert stats["kl"] == pytest.approx(math.log(2), rel=1e-5)  # KL(one-hot || uniform) per scene


def make(world, run, stage_one, cfg: StageTwoConfig = TINY) -> StageTwoTrainer:
    return StageTwoTrainer(world, run, stage_one, cfg, device=torch.device("cpu"), progress_bar=False)


def test_stage_two_without_stage_one_says_which_command_makes_it(tiny_world, tmp_path):
    with pytest.raises(DataError, match="dsol-lite run"):
        make(tiny_world, tmp_path / "two", tmp_path / "no_stage_one")


def test_dictionary_of_another_round_is_refused(tiny_world, tiny_stage_one, tmp_path):
    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_stage_one, mixed)
    other = DictionaryRound.load(mixed / "dictionary.pt")
    other.audio_classifier = {k: v + 0.01 for k, v in other.audio_classifier.items()}  # another round's head
    other.save(mixed / "dictionary.pt")
    with pytest.raises(ConfigError, match="same clustering round"):
        load_stage_one(mixed)


def test_interrupted_stage_two_resumes_bitwise(tiny_world, tiny_stage_one, tmp_path):
    ref = make(tiny_world, tmp_path / "ref", tiny_stage_one)
    ref.fit()
    with pytest.raises(Interrupted):
        make(tiny_world, tmp_path / "cut", tiny_stage_one).fit(interrupt_after=3)
    resumed = make(tiny_world, tmp_path / "cut", tiny_stage_one)
    assert 0 < resumed.progress.global_step < 3 or resumed.progress.phase == "validate"
    resumed.fit()
    a, b = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "cut" / "best.pt").exists()


def test_stage_two_config_errors(tiny_world, tiny_stage_one, tmp_path):
    with pytest.raises(ConfigError, match="warmup_epochs"):
        StageTwoConfig(epochs=2, warmup_epochs=3).validate()
    with pytest.raises(ConfigError, match="kinds"):
        StageTwoConfig(kinds=("solo",)).validate()
    with pytest.raises(ConfigError, match="larger than"):
        make(tiny_world, tmp_path, tiny_stage_one, dataclasses.replace(TINY, batch_size=500))
    with pytest.raises(ConfigError, match="eval_size=16"):
        dataclasses.replace(TINY, eval_size=16).validate()
    with pytest.raises(ConfigError, match="prepared cache"):  # a cache holds one size: the training crops'
        make(tiny_world, tmp_path / "cache", tiny_stage_one, dataclasses.replace(TINY, prepared="cache", eval_size=96))


def test_stage_two_validates_at_its_own_evaluation_size(tiny_world, tiny_stage_one, tmp_path):
    """Stage two's multi-source validation runs at its ``eval_size``, by default stage one's; the
    checkpoint keeps the setting, so the test (``evaluate_run``) scores at the same size."""
    s1_cfg = load_stage_one(tiny_stage_one)[0]
    assert (s1_cfg.image_size, s1_cfg.evaluation_size) == (64, 80)
    assert TINY.evaluation_size(s1_cfg) == 80 and "eval_size" not in make(tiny_world, tmp_path / "a",
                                                                           tiny_stage_one).ckpt.fingerprint
    own = dataclasses.replace(TINY, eval_size=96, epochs=1, warmup_epochs=0)
    trainer = make(tiny_world, tmp_path / "b", tiny_stage_one, own)
    assert trainer.val_set.image_size == 96 and trainer.train_set.image_size == 64
    assert trainer.val_set[0]["image"].shape[-1] == 96
    trainer.fit()
    cfg, model = load_stage_two(tmp_path / "b" / "best.pt", s1_cfg, load_stage_one(tiny_stage_one)[2])
    assert cfg == dataclasses.replace(own, checkpoint_every=100) and not model.training
