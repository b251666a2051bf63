"""Exercise of notebook 03_object_dictionary: an object feature from a map.

Write ``object_feature(v_fea, heatmap)``: ``v_fea`` (C, h, w), ``heatmap`` (h, w) in [0, 1];
mask = heatmap > 0.05, grown by its 4 neighbours (up, down, left, right; stay inside the grid);
return the mean of ``v_fea`` over the mask's cells, shape (C,).
"""

from __future__ import annotations

from typing import Callable

import torch


def object_feature(v_fea: torch.Tensor, heatmap: torch.Tensor) -> torch.Tensor:
    """Solution, written out with explicit shifts."""
    mask = heatmap > 0.05
    grown = mask.clone()
    grown[1:, :] |= mask[:-1, :]
    grown[:-1, :] |= mask[1:, :]
    grown[:, 1:] |= mask[:, :-1]
    grown[:, :-1] |= mask[:, 1:]
    return v_fea[:, grown].mean(dim=1)


def check_object_feature(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    from dsol_lite.dictionary import object_features

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        v = torch.randn(5, 6, 6, generator=g)
        heatmap = torch.rand(6, 6, generator=g) ** 6
        heatmap[torch.randint(0, 6, (1,), generator=g), torch.randint(0, 6, (1,), generator=g)] = 0.9
        expected, _ = object_features(v[None], heatmap[None], 0.05, "mask")
        got = fn(v, heatmap)
        if got.shape != (5,) or not torch.allclose(got, expected[0], atol=1e-5):
            raise AssertionError("differs from the library: threshold 0.05, 4-neighbour dilation that stays "
                                 "inside the grid, mean over the mask's cells")
    return "correct: matches dsol_lite.dictionary.object_features"
