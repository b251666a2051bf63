"""Exercise of notebook 04_stage_two: class-aware maps of one scene.

Write ``class_aware_maps(v_fea, dictionary, weight, bias, loc_map)``: ``v_fea`` (C, h, w) backbone
features, ``dictionary`` (K, C), scalars ``weight`` and ``bias``, ``loc_map`` (h, w) in [0, 1].
Return the K maps ``(weight * <v_fea(x), D_k> + bias) * loc_map(x)``, shape (K, h, w), and the
visual category distribution: the softmax over k of each map's spatial mean, shape (K,).
"""

from __future__ import annotations

from typing import Callable

import torch


def class_aware_maps(v_fea: torch.Tensor, dictionary: torch.Tensor, weight: float, bias: float,
                     loc_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solution, with the dot products written as one matrix product."""
    c, h, w = v_fea.shape
    similarity = (dictionary @ v_fea.reshape(c, h * w)).reshape(-1, h, w)  # (K, h, w)
    maps = (weight * similarity + bias) * loc_map
    return maps, torch.softmax(maps.mean(dim=(1, 2)), dim=0)


def check_class_aware_maps(fn: Callable) -> str:
    from dsol_lite.models import BackbonePair, DSOLStageOne, DSOLStageTwo

    torch.manual_seed(0)
    model = DSOLStageTwo(DSOLStageOne(BackbonePair(4), num_clusters=3), torch.rand(3, 32)).eval()
    with torch.no_grad():
        model.obj_weight.fill_(0.7)
        model.obj_bias.fill_(-0.2)
        out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 1, 201, 64))
        for i in range(2):
            maps, probs = fn(out.stage_one.v_fea[i], model.dictionary, 0.7, -0.2, out.loc_map[i])
            if maps.shape != out.class_maps[i].shape or not torch.allclose(maps, out.class_maps[i], atol=1e-5):
                raise AssertionError("the maps differ from DSOLStageTwo: (w <v_fea(x), D_k> + b) x loc_map(x)")
            if not torch.allclose(probs, torch.softmax(out.visual_logits[i], 0), atol=1e-5):
                raise AssertionError("the distribution differs: softmax over k of each map's spatial mean")
    return "correct: matches dsol_lite.models.DSOLStageTwo"
