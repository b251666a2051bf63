"""Multi-source metrics on hand-computed cases (DESIGN section 5)."""

from __future__ import annotations

import math

import pytest
import torch

from dsol_lite.metrics import (avgn_multi_source, cluster_maps_to_classes, dsol_multi_source, pixel_ap, pixel_aps,
                               silent_object_scores)


def box(y1, y2, x1, x2, size=8) -> torch.Tensor:
    m = torch.zeros(size, size, dtype=torch.bool)
    m[y1:y2, x1:x2] = True
    return m


def test_cluster_maps_sum_the_softmax_over_assigned_clusters():
    maps = torch.zeros(1, 3, 2, 2)  # equal logits: softmax 1/3 each
    out = cluster_maps_to_classes(maps, {0: 0, 1: 1, 2: 1}, num_classes=3)
    assert torch.allclose(out[0, 0], torch.full((2, 2), 1 / 3))
    assert torch.allclose(out[0, 1], torch.full((2, 2), 2 / 3))
    assert torch.equal(out[0, 2], torch.zeros(2, 2))  # a class no cluster maps to: never found


def test_cluster_maps_use_temperature_three():
    maps = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    out = cluster_maps_to_classes(maps, {0: 0, 1: 1}, num_classes=2)
    assert out[0, 0, 0, 0].item() == pytest.approx(math.exp(3) / (math.exp(3) + 1))


def two_class_scene():
    """Class 0 sounds (left box), class 1 is silent; overlapping boxes are tested separately."""
    gt = torch.stack([box(0, 8, 0, 4), torch.zeros(8, 8, dtype=torch.bool)])[None]
    sounding = torch.tensor([[1.0, 0.0]])
    return gt, sounding


def test_perfect_maps_score_one():
    gt, sounding = two_class_scene()
    r = dsol_multi_source(gt.float(), gt, sounding)
    assert r["ciou"].tolist() == [1.0] and r["ciou@0.3"] == 1.0 and r["nsa"] == 1.0


def test_nsa_counts_pixels_at_most_point_two():
    gt, sounding = two_class_scene()
    maps = gt.float().clone()
    maps[0, 1, :, :2] = 0.5  # a quarter of the silent class's map lights up
    maps[0, 1, :, 2:] = 0.2  # exactly 0.2 still counts as silent
    assert dsol_multi_source(maps, gt, sounding)["nsa"] == pytest.approx(0.75)


def test_all_zero_and_constant_maps():
    gt, sounding = two_class_scene()
    zero = dsol_multi_source(torch.zeros(1, 2, 8, 8), gt, sounding)
    assert zero["ciou"].tolist() == [0.0] and zero["nsa"] == 1.0
    const = dsol_multi_source(torch.full((1, 2, 8, 8), 0.7), gt, sounding)
    assert const["ciou"].tolist() == [0.5]  # everything predicted: 32 / 64
    assert const["nsa"] == 0.0


def test_scene_without_sounding_object_is_reported_not_scored():
    gt = torch.zeros(2, 2, 8, 8, dtype=torch.bool)
    gt[0, 0] = box(0, 4, 0, 4)
    sounding = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # scene 1: all objects silent (nothing sounds)
    r = dsol_multi_source(gt.float(), gt, sounding)
    assert r["scored_scenes"] == 1 and r["unscored_scenes"] == 1
    assert r["nsa"] == 1.0  # both scenes count for NSA


def test_overlapping_boxes_of_two_classes():
    gt = torch.stack([box(0, 4, 0, 4), box(2, 6, 2, 6)])[None]
    sounding = torch.tensor([[1.0, 1.0]])
    perfect = dsol_multi_source(gt.float(), gt, sounding)
    assert perfect["ciou"].tolist() == [1.0]
    swapped = dsol_multi_source(gt.flip(1).float(), gt, sounding)
    assert swapped["ciou"].item() == pytest.approx(4 / 28)  # each box vs the other: 4 shared of 28 pixels


def test_sounding_class_off_screen_is_not_scored():
    gt = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    gt[0, 0] = box(0, 4, 0, 4)
    sounding = torch.tensor([[1.0, 1.0]])  # class 1 is heard but has no box in view
    assert dsol_multi_source(gt.float(), gt, sounding)["ciou"].tolist() == [1.0]


def test_avgn_cap_and_piap():
    gt = torch.stack([box(0, 8, 0, 4), box(0, 8, 4, 8)])[None]
    sounding = torch.tensor([[1.0, 1.0]])
    right = avgn_multi_source(gt.float(), gt, sounding)
    assert right["cap"] == 1.0 and right["piap"] == 1.0 and right["sources"] == 2
    swapped = avgn_multi_source(gt.flip(1).float(), gt, sounding)
    assert swapped["piap"] == 1.0  # the right maps under the wrong names: permutation-invariant AP is perfect
    assert swapped["cap"] == pytest.approx(0.5)  # class-aware AP: a map disjoint from its mask scores the base rate
    assert swapped["ciou@0.3"] == 0.0


def test_pixel_ap_hand_case_and_degenerate_masks():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    mask = torch.tensor([1, 0, 1, 0])
    assert pixel_ap(scores, mask) == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="both foreground and background"):
        pixel_ap(scores, torch.zeros(4))


def test_pixel_aps_equal_scikit_learn_row_by_row_with_ties():
    from sklearn.metrics import average_precision_score

    g = torch.Generator().manual_seed(0)
    scores = (torch.rand(40, 6, 7, generator=g) * 5).round() / 5  # few distinct values: many ties
    scores[0] = 0.3  # a constant map: every pixel at one threshold, AP = the foreground fraction
    masks = torch.rand(40, 6, 7, generator=g) < 0.3
    masks[:, 0, 0], masks[:, -1, -1] = True, False
    got = pixel_aps(scores, masks, chunk=16)  # three chunks, the last one short
    want = [average_precision_score(m.flatten().numpy(), s.flatten().double().numpy()) for s, m in zip(scores, masks)]
    assert got.tolist() == pytest.approx(want, abs=1e-12)
    assert got[0] == pytest.approx(masks[0].float().mean().item())
    with pytest.raises(ValueError, match="both foreground and background"):
        pixel_aps(scores[:2], torch.ones(2, 6, 7, dtype=torch.bool))


def test_silent_object_scores():
    sounding = box(0, 8, 0, 4)[None]
    silent = box(0, 8, 4, 8)[None]
    good = silent_object_scores(sounding.float(), sounding, silent)
    assert good == {"sounding_iou": 1.0, "silent_coverage": 0.0, "scenes": 1}
    everywhere = silent_object_scores(torch.ones(1, 8, 8), sounding, silent)
    assert everywhere["silent_coverage"] == 1.0 and everywhere["sounding_iou"] == 0.5
    none = silent_object_scores(torch.ones(1, 8, 8), sounding, torch.zeros_like(silent))
    assert none["scenes"] == 0 and math.isnan(none["sounding_iou"])
