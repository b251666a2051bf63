"""The equal tuning budget (every method the same grid, chosen on validation) and the robustness
evaluation (scores on noisy / off-screen sets, the silent-scene alarm)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from dsol_lite.comparison import comparison_markdown
from dsol_lite.errors import ConfigError
from dsol_lite.methods import METHODS, PEER_PRESETS, PeerConfig
from dsol_lite.models import BackbonePair, tile_2x2, untile_2x2
from dsol_lite.robustness import evaluate_robustness, robustness_sets, silent_alarm
from dsol_lite.tuning import PAPER_TAU, sweep_epochs, sweep_grid, tune_method, tuned_comparison

CPU = torch.device("cpu")


def test_every_method_gets_the_same_grid():
    base = PEER_PRESETS["quick"]
    grids = {m: sweep_grid(m, base) for m in METHODS}
    assert {len(g) for g in grids.values()} == {4}
    for method, grid in grids.items():
        assert [c.mosaic for c in grid.values()] == [False, True, False, True]
        assert all(c.method == method and c.lr == base.lr and c.epochs == base.epochs for c in grid.values())
        if method != "dsol":
            assert [c.tau for c in grid.values()] == [PAPER_TAU[method]] * 2 + [0.2] * 2
    assert list(grids["ezvsl"]) == ["tau0.03", "tau0.03+mosaic", "tau0.2", "tau0.2+mosaic"]
    assert [c.dsol_scale_lr_mult for c in grids["dsol"].values()] == [10.0, 10.0, 20.0, 20.0]


def test_the_mosaic_is_one_picture_of_four_frames_for_every_method():
    torch.manual_seed(0)
    pair = BackbonePair(width=4).eval()
    images = torch.randn(8, 3, 64, 64)
    with torch.no_grad():
        tiled = pair.visual(images, mosaic=True)
        assert torch.equal(tiled, untile_2x2(pair.visual_net(tile_2x2(images))))
        assert tiled.shape == pair.visual(images).shape and not torch.allclose(tiled, pair.visual(images))
    with pytest.raises(ConfigError, match="mosaic=True with batch_size=6"):
        PeerConfig(mosaic=True, batch_size=6).validate()


def test_the_sweep_trains_a_share_of_the_run_and_sees_fnac_s_terms():
    assert sweep_epochs(PEER_PRESETS["quick"]) == 3  # 3 of 8; FNAC's terms start at epoch 2
    assert sweep_epochs(PEER_PRESETS["full"]) == 8  # 3/8 of 20, past the warm-up of 5
    assert sweep_epochs(PEER_PRESETS["compare-quick"]) == 2  # both epochs of a 2-epoch run
    assert sweep_epochs(dataclasses.replace(PEER_PRESETS["quick"], fnac_warmup_epochs=6)) == 7
    with pytest.raises(ConfigError, match="sweep epochs 9: the sweep.s epochs per configuration"):
        tune_method("unused", "unused", "ezvsl", PEER_PRESETS["quick"], CPU, epochs=9)
    with pytest.raises(ConfigError, match="sweep epochs 0: the sweep.s epochs per configuration"):  # before any world
        tuned_comparison("unused", "unused", ["ezvsl"], [0], PEER_PRESETS["quick"], CPU, epochs=0)


def test_the_choice_after_each_epoch_by_hand():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from sweep_choice_by_epoch import choices

    curves = {"a": [0.1, 0.5, 0.2], "b": [0.3, 0.4, 0.6], "c": [0.3, 0.2, 0.1]}
    assert choices(curves) == ["b", "a", "b"]  # best so far; a tie goes to the first listed


def test_silent_alarm_by_hand():
    clean = torch.arange(1, 21, dtype=torch.float32)  # 1..20: the 5 % quantile is 1.95
    got = silent_alarm(clean, torch.tensor([0.0, 1.0, 2.0, 30.0]))
    assert got["silent_threshold"] == pytest.approx(1.95)
    assert got["silent_alarm"] == 0.5  # 2.0 and 30.0 reach it


def test_tuned_comparison_records_the_sweep_and_scores_every_set(tiny_world, tmp_path):
    sets = robustness_sets(tiny_world, tmp_path / "sets")
    assert set(sets) == {"clean", "noise20", "noise10", "noise0", "offscreen", "silent"}
    base = dataclasses.replace(PEER_PRESETS["compare-quick"], width=8, image_size=64, epochs=2, steps_per_epoch=2,
                               batch_size=8)
    result = tuned_comparison(tiny_world, tmp_path / "runs", ["ezvsl"], [0, 1], base, CPU, None, sets, False, epochs=1)
    sweep = result["sweep"]
    assert result["sweep_epochs"] == 1 and [t["label"] for t in sweep] == list(sweep_grid("ezvsl", base))
    chosen = [t for t in sweep if t["chosen"]]
    assert len(chosen) == 1 and chosen[0]["best_val"] == max(t["best_val"] for t in sweep)
    for trial in sweep:  # each scored on its first epoch; only the chosen one trained on
        folder = tmp_path / "runs" / "ezvsl" / f"{trial['label']}-s0"
        log = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        validations = [r["val_iou@0.5"] for r in log if r["phase"] == "validate"]
        assert trial["epochs"] == 1 and trial["best_val"] == validations[0]
        assert len(validations) == (2 if trial["chosen"] else 1)
    assert [(r["seed"], r["config"]) for r in result["rows"]] == [(0, chosen[0]["label"]), (1, chosen[0]["label"])]
    for row in result["robustness"]:
        for key in ("clean_iou@0.5", "noise20_iou@0.5", "noise0_iou@0.5", "offscreen_iou@0.5", "silent_alarm"):
            assert 0 <= row[key] <= 1
    # the clean set is the test split itself: its score is the test score
    assert [r["clean_iou@0.5"] for r in result["robustness"]] == [r["dsol_iou@0.5"] for r in result["rows"]]
    model_dir = tmp_path / "runs" / "ezvsl" / f"{chosen[0]['label']}-s0"
    assert (model_dir / "best.pt").exists()
    assert result["chosen"]["ezvsl"]["label"] == chosen[0]["label"] and result["chosen"]["ezvsl"]["seed"] == 0
    table = comparison_markdown(result)
    assert f"| EZ-VSL | {chosen[0]['label']} |" in table and " ± " in table and "silent alarm" in table
    # scripts/fnac_brakes.py reads the choice back from the file, as JSON left it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from fnac_brakes import chosen_config

    label, cfg = chosen_config(json.loads(json.dumps(result)), "ezvsl")
    assert (label, cfg) == (chosen[0]["label"], dataclasses.replace(sweep_grid("ezvsl", base)[label], seed=0))


def test_robustness_needs_a_synthetic_world(tiny_world, tmp_path):
    import shutil

    fake = tmp_path / "real"
    shutil.copytree(tiny_world, fake)
    manifest = json.loads((fake / "dataset.json").read_text())
    manifest["source"] = {"type": "music"}
    (fake / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="synthetic"):
        robustness_sets(fake, tmp_path / "sets")


def test_evidence_of_every_network_is_one_number_per_scene(tiny_world, tmp_path):
    from dsol_lite.methods import get_method

    sets = robustness_sets(tiny_world, tmp_path / "sets", ("clean", "silent"))
    for name in METHODS:
        cfg = PeerConfig(method=name, width=4, image_size=64, embed_dim=16)
        model = get_method(name).build(cfg, 8).eval()
        row = evaluate_robustness(model, tiny_world, sets, 64, CPU)
        assert set(row) == {"clean_iou@0.5", "silent_threshold", "silent_alarm"} and 0 <= row["silent_alarm"] <= 1
