"""Exercise of notebook 05_evaluation: NSA of one scene, by hand.

Write ``non_sounding_area(class_maps, sounding)``: ``class_maps`` (C, H, W) per-class maps in
[0, 1] (after DSOL's softmax), ``sounding`` (C,) booleans. For every class that does *not* sound,
the fraction of its pixels <= 0.2; return their mean (a float), or ``nan`` when every class sounds.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


def non_sounding_area(class_maps: torch.Tensor, sounding: torch.Tensor) -> float:
    """Solution, one class at a time."""
    fractions = [(class_maps[c] <= 0.2).float().mean().item() for c in range(len(sounding)) if not sounding[c]]
    return sum(fractions) / len(fractions) if fractions else math.nan


def check_non_sounding_area(fn: Callable) -> str:
    from dsol_lite.metrics import dsol_multi_source

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        maps = torch.rand(4, 8, 8, generator=g) ** 2
        sounding = torch.rand(4, generator=g) > 0.5
        boxes = torch.zeros(1, 4, 8, 8, dtype=torch.bool)
        boxes[0, :, :4, :4] = sounding[:, None, None]
        expected = dsol_multi_source(maps[None], boxes, sounding[None].float())["nsa"]
        got = fn(maps, sounding)
        if math.isnan(expected) != math.isnan(got) or (not math.isnan(expected) and abs(got - expected) > 1e-6):
            raise AssertionError("differs from dsol_multi_source's NSA: non-sounding classes only, pixels <= 0.2")
    return "correct: matches dsol_lite.metrics.dsol_multi_source (NSA)"
