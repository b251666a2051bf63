"""Dilation, masked means, k-means bookkeeping and every single-source metric, by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsol_lite.dictionary import (DictionaryRound, build_dictionary, check_pairing, cluster_report, dilate4,
                                  hungarian_mapping, object_features, run_kmeans)
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.evaluate import class_matching_matrix, sharpness_sweep
from dsol_lite.metrics import (centre_prior, dsol_single_source, ezvsl, grid_oracle, iou, min_max_normalize,
                               success_curve, upsample)


def test_dilation_grows_by_four_neighbours_including_borders():
    m = torch.zeros(1, 4, 4, dtype=torch.bool)
    m[0, 0, 0] = True  # a corner: the original code skipped dilating border cells
    m[0, 2, 2] = True
    expected = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1], [0, 0, 1, 0]], dtype=torch.bool)
    assert torch.equal(dilate4(m)[0], expected)


def test_masked_mean_over_mask_or_grid():
    fea = torch.arange(2 * 3 * 3, dtype=torch.float).view(1, 2, 3, 3)
    maps = torch.zeros(1, 3, 3)
    maps[0, 1, 1] = 0.9  # centre cell -> dilated to a plus of 5 cells
    plus = [(1, 1), (0, 1), (2, 1), (1, 0), (1, 2)]
    expected = torch.tensor([[sum(fea[0, c, y, x] for y, x in plus) / 5 for c in range(2)]])
    feats, empty = object_features(fea, maps, 0.05, "mask")
    torch.testing.assert_close(feats, expected)
    grid, _ = object_features(fea, maps, 0.05, "grid")
    torch.testing.assert_close(grid, expected * 5 / 9)
    assert not empty.any()


def test_empty_mask_falls_back_to_the_peak_and_is_reported():
    fea = torch.randn(1, 3, 2, 2)
    maps = torch.tensor([[[0.01, 0.04], [0.02, 0.0]]])
    feats, empty = object_features(fea, maps, 0.05)
    assert empty.tolist() == [True]
    torch.testing.assert_close(feats[0], fea[0, :, 0, 1])
    with pytest.raises(ConfigError, match="normalize"):
        object_features(fea, maps, 0.05, "area")


def test_kmeans_dictionary_and_report():
    rng = np.random.default_rng(0)
    centres = np.eye(3) * 5
    labels = np.repeat([0, 1, 2], 20)
    feats = torch.tensor(centres[labels] + rng.normal(0, 0.1, (60, 3)), dtype=torch.float)
    assign = run_kmeans(feats, 3, seed=0)
    assert np.array_equal(assign, run_kmeans(feats, 3, seed=0))  # seeded
    report = cluster_report(assign, labels, 3, 3)
    assert report["nmi"] == pytest.approx(1.0) and report["purity"] == 1.0 and report["hungarian_acc"] == 1.0
    dictionary = build_dictionary(feats, assign, 3)
    for c, y in report["mapping"].items():
        torch.testing.assert_close(dictionary[c], feats[labels == y].mean(0))
    with pytest.raises(ConfigError, match="num_clusters=61 is larger than the number of object features"):
        run_kmeans(feats, 61, seed=0)
    with pytest.raises(DataError, match="no object features"):
        run_kmeans(torch.zeros(0, 3), 2, seed=0)


def test_hungarian_mapping_is_one_to_one_and_beats_greedy():
    # greedy by row would map both clusters to class 0; Hungarian finds the better assignment
    table = np.array([[10, 9], [8, 0]])
    assert hungarian_mapping(table) == {0: 1, 1: 0}
    assert hungarian_mapping(np.array([[5, 0], [0, 5], [3, 1]])) == {0: 0, 1: 1, 2: 0}  # spare cluster


def test_dictionary_round_pairing_and_files(tmp_path):
    head1 = {"weight": torch.randn(3, 4), "bias": torch.zeros(3)}
    head2 = {"weight": torch.randn(3, 4), "bias": torch.zeros(3)}
    r1 = DictionaryRound(1, torch.randn(3, 4), head1, torch.tensor([0, 1, 2]), {"nmi": 0.5})
    r2 = DictionaryRound(2, torch.randn(3, 4), head2, torch.tensor([2, 1, 0]))
    r1.save(tmp_path / "r1.pt")
    r2.save(tmp_path / "r2.pt")
    loaded = DictionaryRound.load(tmp_path / "r1.pt")
    assert loaded.round == 1 and torch.equal(loaded.dictionary, r1.dictionary)
    check_pairing(loaded, head1)
    with pytest.raises(ConfigError, match="same clustering round"):
        check_pairing(loaded, DictionaryRound.load(tmp_path / "r2.pt").audio_classifier)
    (tmp_path / "bad.pt").write_bytes((tmp_path / "r1.pt").read_bytes()[:100])
    with pytest.raises(DataError, match="bad.pt: not a readable dictionary round"):
        DictionaryRound.load(tmp_path / "bad.pt")


# ---- metrics ------------------------------------------------------------------------------

def box(n: int, x1: int, y1: int, x2: int, y2: int) -> torch.Tensor:
    m = torch.zeros(n, n, dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def test_iou_by_hand_including_border_boxes_and_empty_predictions():
    gt = box(10, 0, 0, 4, 4)[None]  # a box on the image border
    pred = box(10, 2, 2, 6, 6)[None]
    assert iou(pred, gt).item() == pytest.approx(4 / 28)
    assert iou(torch.zeros_like(gt), gt).item() == 0.0
    assert iou(gt, gt).item() == 1.0
    with pytest.raises(ValueError, match="empty ground truth"):
        iou(pred, torch.zeros_like(gt))


def test_dsol_protocol_thresholds_at_a_tenth_of_the_max():
    gt = box(10, 0, 0, 5, 10)[None]
    maps = torch.zeros(1, 10, 10)
    maps[0, :, :5] = 1.0
    maps[0, :, 5:] = 0.09  # just below 0.1 x max: not predicted
    result = dsol_single_source(maps, gt)
    assert result["iou"].item() == 1.0 and result["iou@0.5"] == 1.0 and result["auc"] == pytest.approx(1.0)
    maps[0, :, 5:] = 0.11  # just above: everything predicted, IoU = 50 / 100
    assert dsol_single_source(maps, gt)["iou"].item() == pytest.approx(0.5)
    # all-zero and constant maps: zero predicts nothing, a constant predicts everything
    assert dsol_single_source(torch.zeros(1, 10, 10), gt)["iou"].item() == 0.0
    assert dsol_single_source(torch.full((1, 10, 10), 0.3), gt)["iou"].item() == pytest.approx(0.5)


def test_success_curve_and_auc_by_hand():
    curve, area = success_curve(torch.tensor([0.0, 0.5, 1.0]))
    assert curve[0] == 1.0 and curve[10] == pytest.approx(2 / 3) and curve[20] == pytest.approx(1 / 3)
    # trapezoid area: 1/3 * (first step) + plateau of 2/3 ... computed directly
    expected = np.trapezoid(curve.numpy(), np.linspace(0, 1, 21))
    assert area == pytest.approx(expected)


def test_ezvsl_protocol_median_threshold_and_constant_maps():
    gt = box(4, 0, 0, 2, 4)[None]
    maps = torch.tensor([[[4.0, 3.0, 1.0, 0.0]] * 4])
    result = ezvsl(maps, gt)  # normalised: 1, 2/3, 1/4, 0; upper median 2/3 -> the left half
    assert result["ciou"].item() == 1.0
    assert ezvsl(torch.full((1, 4, 4), 2.0), gt)["ciou"].item() == 0.5  # constant: all >= it, |G| / N
    assert torch.equal(min_max_normalize(torch.full((1, 2, 2), 3.0)), torch.full((1, 2, 2), 3.0))  # left as it is


def test_centre_prior_region_has_the_requested_area_and_upsample_shape():
    prior = centre_prior(1, 100, mean_box_area=900.0)
    area = (prior > 0.1 * prior.max()).sum().item()
    assert abs(area - 900) / 900 < 0.05
    assert upsample(torch.rand(3, 8, 8), 64).shape == (3, 64, 64)


def test_grid_oracle_is_the_share_of_each_cell_and_fails_small_objects_on_coarse_grids():
    gt = torch.zeros(2, 64, 64, dtype=torch.bool)
    gt[0, 16:32, 16:48] = True  # exactly cells (1, 1) and (1, 2) of a 4 x 4 grid
    gt[1, 20:30, 20:30] = True  # 10 x 10 px inside cell (1, 1): 100 / 256 of it
    cells = grid_oracle(gt, 4)
    assert cells.shape == (2, 4, 4) and cells[0, 1, 1] == cells[0, 1, 2] == 1 and cells[0].sum() == 2
    assert torch.isclose(cells[1, 1, 1], torch.tensor(100 / 256)) and cells[1].sum() == cells[1, 1, 1]
    # scored like a model's map: the finer the grid, the better a map of coverage does, and a box
    # smaller than a cell fails at 4 x 4 (the 0.1 x max region of a bilinear bump spreads over cells)
    ious = torch.stack([dsol_single_source(upsample(grid_oracle(gt, g), 64), gt)["iou"] for g in (4, 8, 16, 32)])
    assert (ious[1:] > ious[:-1]).all()
    assert ious[0, 1] < 0.2 and ious[-1, 1] > 0.7 and ious[-1, 0] > 0.8


def test_sharpness_sweep_rescales_the_logits_before_the_tenth_of_the_max_cut():
    gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    gt[:, 2:6, 2:6] = True  # a 4 x 4 box: a quarter of the frame
    # maps already at image size (upsampling leaves them as they are), given by their logits s * cos
    lukewarm_background = torch.sigmoid(torch.where(gt, 2.0, -1.0))
    sweep = sharpness_sweep(lukewarm_background, gt, [1.0, 3.0])
    # k = 1: sigmoid(-1) = 0.27 is above 0.1 x sigmoid(2) = 0.088, so the whole frame is kept (IoU 1/4);
    # k = 3: sigmoid(-3) = 0.047 falls under 0.1 x sigmoid(6) = 0.0998, leaving exactly the box
    assert sweep == {1.0: 0.0, 3.0: 1.0}
    assert sweep[1.0] == dsol_single_source(upsample(lukewarm_background, 8), gt)["iou@0.5"]
    # a hot centre (+4), a lukewarm rim (-2) and a cold background (-6): at k = 1 the region is the box;
    # a sharper sigmoid (k = 2) drops the rim (IoU 4/16), a flatter one (k = 1/4) keeps everything
    logits = torch.full((1, 8, 8), -6.0)
    logits[:, 2:6, 2:6] = -2.0
    logits[:, 3:5, 3:5] = 4.0
    assert sharpness_sweep(torch.sigmoid(logits), gt, [0.25, 1.0, 2.0]) == {0.25: 0.0, 1.0: 1.0, 2.0: 0.0}


def test_class_matching_matrix_by_hand_skips_each_clips_own_pair():
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # three clips on a 1 x 2 grid: two of class 0 (the sound's direction in one cell, its opposite in
    # the other, so only the max over locations finds it) and one of class 1
    v_emb = torch.stack([torch.stack([e0, -e0], 1), torch.stack([-e0, e0], 1), torch.stack([e1, e1], 1)])[:, :, None]
    a_emb = torch.stack([e0, e0, e1])
    matrix = class_matching_matrix(v_emb, a_emb, torch.tensor([0, 0, 1]), scale=2.0, num_classes=3)
    s2 = torch.sigmoid(torch.tensor(2.0)).item()
    assert matrix[0, 0].item() == pytest.approx(s2)  # 2 pairs of two different class-0 clips, cos 1
    assert matrix[0, 1].item() == pytest.approx(0.5) and matrix[1, 0].item() == pytest.approx(0.5)  # cos 0
    assert torch.isnan(matrix[1, 1])  # one class-1 clip: its own pair is not a pair (it would give sigmoid(2))
    assert torch.isnan(matrix[2]).all() and torch.isnan(matrix[:, 2]).all()  # a class with no clips


def test_class_matching_matrix_does_not_depend_on_the_chunk_size():
    g = torch.Generator().manual_seed(0)
    v_emb = torch.nn.functional.normalize(torch.randn(7, 4, 2, 3, generator=g), dim=1)
    a_emb = torch.nn.functional.normalize(torch.randn(7, 4, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    whole = class_matching_matrix(v_emb, a_emb, labels, 5.0, 3)
    assert torch.allclose(class_matching_matrix(v_emb, a_emb, labels, 5.0, 3, chunk=2), whole)
    # brute force over every pair of different clips
    for a in range(3):
        for v in range(3):
            p = [torch.sigmoid(5.0 * torch.einsum("dhw,d->hw", v_emb[j], a_emb[i]).max())
                 for i in range(7) for j in range(7) if i != j and labels[i] == a and labels[j] == v]
            assert whole[a, v].item() == pytest.approx(torch.stack(p).mean().item(), rel=1e-6)
