"""The stage-one trainer: resume, selection on val, and bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dsol_lite.stage_one as stage_one_module
import dsol_lite.training as training_module
from dsol_lite.dictionary import DictionaryRound, check_pairing
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.stage_one import STAGE_ONE_PRESETS, Interrupted, StageOneTrainer
from dsol_lite.synth.config import preset
from dsol_lite.synth.writer import generate_world
from dsol_lite.training import TrainingError

TINY = dataclasses.replace(STAGE_ONE_PRESETS["quick"], width=8, image_size=64, eval_size=80, epochs=2,
                           batch_size=8, class_passes=1, checkpoint_every=2, rounds="every")


def make(world, run, cfg=TINY) -> StageOneTrainer:
    return StageOneTrainer(world, run, cfg, device=torch.device("cpu"), progress_bar=False)


@pytest.fixture(scope="module")
def reference(tiny_world, tmp_path_factory):
    run = tmp_path_factory.mktemp("reference")
    trainer = make(tiny_world, run)
    trainer.fit()
    return trainer, run


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def assert_same_round(run_a, run_b) -> int:
    """The two runs' ``dictionary.pt`` hold the same round, dictionary and audio head; returns the round."""
    a, b = DictionaryRound.load(run_a / "dictionary.pt"), DictionaryRound.load(run_b / "dictionary.pt")
    assert a.round == b.round and torch.equal(a.dictionary, b.dictionary) and a.digest == b.digest
    return a.round


@pytest.mark.parametrize("interrupt_after", [9, 15], ids=["mid-localize", "mid-classify"])
def test_resumed_training_is_bitwise_identical(tiny_world, tmp_path, reference, interrupt_after):
    ref, ref_run = reference
    with pytest.raises(Interrupted):
        make(tiny_world, tmp_path).fit(interrupt_after=interrupt_after)
    resumed = make(tiny_world, tmp_path)
    assert 0 < resumed.progress.global_step < interrupt_after  # picked up from the last checkpoint
    assert resumed.resumed and not ref.resumed
    resumed.fit()
    assert_same_weights(ref.model.state_dict(), resumed.model.state_dict())
    assert_same_round(ref_run, tmp_path)


def test_outputs_pair_the_dictionary_with_the_best_model(reference):
    trainer, run = reference
    records = trainer.log.read()
    selections = [r for r in records if r["phase"] == "select"]
    assert selections and all(r["epoch"] >= 1 for r in selections)  # epochs with a dictionary only
    assert not any(r["phase"] == "validate" and r.get("split") == "test" for r in records)
    best = trainer.ckpt.load("best")
    dictionary = DictionaryRound.load(run / "dictionary.pt")
    assert dictionary.round == best["extra"]["round"]
    head = {k[len("a_classifier."):]: v for k, v in best["model"].items() if k.startswith("a_classifier.")}
    check_pairing(dictionary, head)
    assert dictionary.dictionary.shape == (8, 64) and len(dictionary.pseudo_labels) == 48
    assert any(r["phase"] == "cluster" and 0.0 <= r["nmi"] <= 1.0 for r in records)


def test_rounds_best_clusters_once_for_the_selected_epoch_with_the_same_outputs(tiny_world, tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, epochs=5, class_lr=0.0)
    every = make(tiny_world, tmp_path / "every", dataclasses.replace(cfg, rounds="every"))
    lazy = make(tiny_world, tmp_path / "best", dataclasses.replace(cfg, rounds="best"))
    every.fit()
    bars, real_tqdm = [], training_module.tqdm
    monkeypatch.setattr(training_module, "tqdm", lambda *a, **kw: bars.append(kw["desc"]) or real_tqdm(*a, **kw))
    lazy.fit()

    def epochs(trainer, phase):
        return [r["epoch"] for r in trainer.log.read() if r["phase"] == phase]

    assert epochs(every, "cluster") == [1, 2, 3, 4]
    selected = epochs(every, "select")[-1]
    assert epochs(lazy, "cluster") == epochs(lazy, "select") == [selected]  # one round, logged once
    assert epochs(lazy, "validate") == epochs(every, "validate") == [0, 1, 2, 3, 4]
    assert_same_weights(every.ckpt.load("best")["model"], lazy.ckpt.load("best")["model"])
    assert_same_weights(lazy.ckpt.load("best")["model"], lazy.model.state_dict())  # it ends on the selected model
    assert assert_same_round(tmp_path / "every", tmp_path / "best") == selected
    rounds = sorted(p.name for p in (tmp_path / "best").glob("dictionary_round*.pt"))
    assert rounds == [f"dictionary_round{selected:02d}.pt"]
    assert every.best == lazy.best
    assert bars[-1] == f"epoch {selected} classify"  # the final round's bar names the round's epoch, not epoch 5
    assert lazy.fit()["epochs"] == 5 and epochs(lazy, "cluster") == [selected]  # a finished run does nothing more


@pytest.mark.parametrize("interrupt_after", [9, 15], ids=["mid-training", "in-the-final-round"])
def test_rounds_best_resumes_bitwise(tiny_world, tmp_path, interrupt_after):
    cfg = dataclasses.replace(TINY, rounds="best")
    reference = make(tiny_world, tmp_path / "reference", cfg)
    reference.fit()
    assert reference.progress.global_step == 18  # 2 epochs of 6 localize steps, then the round's 6 classify steps
    with pytest.raises(Interrupted):
        make(tiny_world, tmp_path / "run", cfg).fit(interrupt_after=interrupt_after)
    resumed = make(tiny_world, tmp_path / "run", cfg)
    resumed.fit()
    assert_same_weights(reference.model.state_dict(), resumed.model.state_dict())
    assert_same_round(tmp_path / "reference", tmp_path / "run")
    assert resumed.best == reference.best


AVERAGED = dataclasses.replace(TINY, rounds="best", ema_decay=0.9)


def test_the_moving_average_follows_its_recurrence_and_is_what_gets_selected(tiny_world, tmp_path, monkeypatch):
    scales, real_step = [], stage_one_module.optimizer_step

    def step_and_record(*args, **kwargs):
        real_step(*args, **kwargs)
        scales.append(trainer.model.scale.detach().clone())

    monkeypatch.setattr(stage_one_module, "optimizer_step", step_and_record)
    trainer = make(tiny_world, tmp_path / "averaged", AVERAGED)
    monkeypatch.setattr(trainer, "_final_round", lambda: None)  # keep the live weights to compare
    trainer.fit()
    assert len(scales) == int(trainer.average.n_averaged) == 12  # every localize step
    expected = scales[0]  # the first update copies; then w_avg <- d w_avg + (1 - d) w
    for s in scales[1:]:
        expected = 0.9 * expected + 0.1 * s
    assert torch.allclose(trainer.average.module.scale, expected, rtol=1e-6)
    assert not torch.equal(trainer.average.module.scale, trainer.model.scale)
    best = trainer.ckpt.load("best")["model"]  # 2 epochs: epoch 1 is the only one with a dictionary
    assert trainer.best_epoch == 1 and torch.equal(best["scale"], trainer.average.module.scale)
    average = trainer.average.module.state_dict()
    for key in ("backbones.visual_net.conv1.weight", "backbones.visual_net.bn1.running_mean"):  # buffers too
        assert torch.equal(best[key], average[key])


def test_the_moving_average_resumes_bitwise(tiny_world, tmp_path):
    reference = make(tiny_world, tmp_path / "reference", AVERAGED)
    reference.fit()
    with pytest.raises(Interrupted):
        make(tiny_world, tmp_path / "run", AVERAGED).fit(interrupt_after=9)
    resumed = make(tiny_world, tmp_path / "run", AVERAGED)
    assert resumed.resumed
    resumed.fit()
    assert_same_weights(reference.model.state_dict(), resumed.model.state_dict())
    assert_same_weights(reference.average.state_dict(), resumed.average.state_dict())
    assert_same_round(tmp_path / "reference", tmp_path / "run")


def test_a_moving_average_needs_one_round_and_a_decay_below_one():
    with pytest.raises(ConfigError, match="rounds='best'"):
        dataclasses.replace(TINY, rounds="every", ema_decay=0.99).validate()
    with pytest.raises(ConfigError, match="ema_decay=1"):
        dataclasses.replace(AVERAGED, ema_decay=1.0).validate()


def test_validation_reports_the_nmi_of_the_validation_clips(reference):
    trainer, _ = reference
    val = [r for r in trainer.log.read() if r["phase"] == "validate"]
    assert len(val) == 2 and all(0.0 <= r["val_nmi"] <= 1.0 for r in val)


@pytest.mark.parametrize("select_from, selected", [(0.0, 1), (0.5, 2)])
def test_select_from_keeps_early_epochs_out_of_the_selection(tiny_world, tmp_path, monkeypatch, select_from, selected):
    scores = iter([0.9, 0.8, 0.7, 0.6])  # validation gets worse epoch by epoch
    monkeypatch.setattr(stage_one_module, "validate_stage_one",
                        lambda *a, **kw: {"iou@0.5": next(scores), "auc": 0.5, "nmi": 0.5})
    cfg = dataclasses.replace(TINY, epochs=4, rounds="best", select_from=select_from)
    assert cfg.first_eligible_epoch == selected  # epoch 0 has no round; 0.5 x 4 epochs: epoch 2
    trainer = make(tiny_world, tmp_path, cfg)
    trainer.fit()
    assert trainer.best_epoch == selected and trainer.best == pytest.approx([0.9, 0.8, 0.7, 0.6][selected])
    assert [r["epoch"] for r in trainer.log.read() if r["phase"] == "cluster"] == [selected]
    with pytest.raises(ConfigError, match="select_from=1"):
        dataclasses.replace(TINY, select_from=1.0).validate()


def test_a_mosaic_needs_whole_pictures_and_whole_cells(tiny_world, tmp_path):
    from dsol_lite.distributed import Ranks

    for bad in ({"batch_size": 6}, {"image_size": 72}):
        with pytest.raises(ConfigError, match="mosaic=True"):
            dataclasses.replace(TINY, mosaic=True, **bad).validate()
    with pytest.raises(ConfigError, match=r"multiple of 4 \(with mosaic=True .*\), so use a multiple of 8"):
        StageOneTrainer(tiny_world, tmp_path, dataclasses.replace(TINY, mosaic=True, batch_size=12),
                        torch.device("cpu"), progress_bar=False, ranks=Ranks(0, 2, 0))


def test_rounds_best_needs_a_frozen_trunk():
    with pytest.raises(ConfigError, match="class_lr=0"):
        dataclasses.replace(TINY, rounds="best", class_lr=1e-4).validate()
    with pytest.raises(ConfigError, match="'every' .* or 'best'"):
        dataclasses.replace(TINY, rounds="some").validate()


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_world, tmp_path, monkeypatch):
    real = stage_one_module.stage_one_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):  # the fifth loss (step 4) becomes NaN, as its logged value then is
        loss, stats = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 5:
            loss = loss * float("nan")
            stats = stats | {"loss": loss.detach()}
        return loss, stats

    monkeypatch.setattr(stage_one_module, "stage_one_loss", poisoned)
    trainer = make(tiny_world, tmp_path)
    with pytest.raises(TrainingError, match=r"loss became nan at epoch 0, localize step 4; .*last good checkpoint"):
        trainer.fit()
    saved = trainer.ckpt.load("last")
    assert saved["progress"]["global_step"] == 4  # the checkpoint of step 4, not the poisoned step
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


def test_checkpoint_from_another_configuration_is_refused(tiny_world, tmp_path):
    with pytest.raises(Interrupted):
        make(tiny_world, tmp_path).fit(interrupt_after=3)
    with pytest.raises(ConfigError, match=r"another configuration \(width: 8 there vs 12 here\)"):
        make(tiny_world, tmp_path, dataclasses.replace(TINY, width=12))


def test_corrupt_checkpoint_is_a_clear_error(tiny_world, tmp_path):
    (tmp_path / "last.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(DataError, match="last.pt: corrupt or unreadable checkpoint"):
        make(tiny_world, tmp_path)


def test_more_clusters_than_clips_and_empty_datasets(tiny_world, tmp_path):
    with pytest.raises(ConfigError, match="num_clusters=100 is larger than the number of training clips"):
        make(tiny_world, tmp_path / "a", dataclasses.replace(TINY, num_clusters=100))
    empty = generate_world(preset("tiny", counts={"solo": (0, 2, 2)}), tmp_path / "w", progress=False)
    with pytest.raises(DataError, match="no solo clips in split 'train'"):
        make(empty, tmp_path / "b")
    with pytest.raises(ConfigError, match="batch_size"):
        make(tiny_world, tmp_path / "c", dataclasses.replace(TINY, batch_size=1))


@pytest.mark.parametrize("class_lr, trunk_moves", [(0.0, False), (None, True)], ids=["frozen", "dsol"])
def test_pseudo_label_phase_trains_heads_and_optionally_the_trunk(tiny_world, tmp_path, class_lr, trunk_moves):
    trainer = make(tiny_world, tmp_path, dataclasses.replace(TINY, class_lr=class_lr))
    trainer._interrupt_after = None
    trainer._cluster(0)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer._classify(0)
    after = trainer.model.state_dict()
    trunk = [k for k in before if k.startswith("backbones.")]
    heads = [k for k in before if "classifier" in k]
    assert any(not torch.equal(before[k], after[k]) for k in heads)
    assert any(not torch.equal(before[k], after[k]) for k in trunk) == trunk_moves
    assert (tmp_path / f"dictionary_round{trainer.round:02d}.pt").exists()


def test_avoid_same_cluster_drops_negatives_only_after_clustering(tiny_world, tmp_path):
    cfg = dataclasses.replace(TINY, avoid_same_cluster=True, epochs=3)  # epoch 1 clusters, epoch 2 uses them
    trainer = make(tiny_world, tmp_path, cfg)
    trainer.fit()
    loc = [r for r in trainer.log.read() if r.get("phase") == "localize"]
    every_pair = cfg.batch_size * (cfg.batch_size - 1)
    assert all(r["negatives"] == every_pair for r in loc if r["epoch"] <= 1)  # no clusters yet
    later = [r["negatives"] for r in loc if r["epoch"] == 2]
    assert all(n <= every_pair for n in later) and sum(later) < every_pair * len(later)  # same-cluster pairs skipped


def test_cosine_and_step_schedules_decay_the_trunk_not_the_scale(tiny_world, tmp_path):
    cfg = dataclasses.replace(TINY, lr=1e-3, lr_schedule="cosine", warmup_steps=2, epochs=4)
    trainer = make(tiny_world, tmp_path / "cos", cfg)
    per_epoch = len(trainer.train_set) // cfg.batch_size
    assert trainer.localize_lr(0, 0) == pytest.approx((5e-4, 5e-4))  # warm-up: both ramp
    trunk_mid, scale_mid = trainer.localize_lr(2, 0)
    trunk_end, scale_end = trainer.localize_lr(3, per_epoch - 1)
    assert trunk_end < trunk_mid < 1e-3 and scale_mid == scale_end == 1e-3
    trainer._set_trunk_lr(trunk_end, scale_end)
    trunk_group, scale_group = trainer.optimizer.param_groups
    assert trunk_group["lr"] == pytest.approx(trunk_end)
    assert scale_group["lr"] == pytest.approx(1e-3 * cfg.scale_lr_mult)
    constant = dataclasses.replace(TINY, lr_schedule="constant")
    assert make(tiny_world, tmp_path / "const", constant).localize_lr(1, 3) == (TINY.lr, TINY.lr)
    step = make(tiny_world, tmp_path / "step", dataclasses.replace(cfg, lr_schedule="step"))
    assert step.cfg.decay_epoch == 3  # 0.75 of 4 epochs
    assert step.localize_lr(0, 0) == pytest.approx((5e-4, 5e-4))  # the same warm-up
    assert step.localize_lr(2, per_epoch - 1) == (1e-3, 1e-3) and step.localize_lr(3, 0) == (1e-4, 1e-3)
    assert "decay_at" not in constant.fingerprint(tiny_world)  # runs made before the option resume
    assert dataclasses.replace(constant, decay_at=0.5).fingerprint(tiny_world)["decay_at"] == 0.5
    for bad in (0.0, 1.0):
        with pytest.raises(ConfigError, match=f"decay_at={bad}"):
            dataclasses.replace(cfg, lr_schedule="step", decay_at=bad).validate()


def test_evaluation_size_is_for_validation_and_features_not_training(tiny_world, reference):
    from dsol_lite.data.audio import AudioConfig, LogMel
    from dsol_lite.evaluate import localization_maps

    trainer, _ = reference
    assert trainer.train_set.image_size == 64 and trainer.train_set.train
    assert trainer.val_set.image_size == trainer.feature_set.image_size == 80
    maps, gt = localization_maps(trainer.model, trainer.val_set, LogMel(AudioConfig()), torch.device("cpu"))
    assert maps.shape[-1] == 80 // 16 and gt.shape[-1] == 80  # a finer grid than training's 4 x 4
    assert dataclasses.replace(TINY, eval_size=None).evaluation_size == 64
    assert TINY.fingerprint(tiny_world)["eval_size"] == 80
    assert "eval_size" not in dataclasses.replace(TINY, eval_size=None).fingerprint(tiny_world)  # older runs resume
    with pytest.raises(ConfigError, match="prepared cache"):
        dataclasses.replace(TINY, prepared="cache-64").validate()
    dataclasses.replace(TINY, prepared="cache-64", eval_size=64).validate()  # one size: fine
    with pytest.raises(ConfigError, match="eval_size=16"):
        dataclasses.replace(TINY, eval_size=16).validate()
