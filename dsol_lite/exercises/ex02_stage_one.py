"""Exercise of notebook 02_stage_one: DSOL's single-source IoU for one map.

Write ``iou_of_map(heatmap, gt)``: ``heatmap`` (H, W) at image size, ``gt`` (H, W) boolean;
predicted region = heatmap > 0.1 * heatmap.max(); return |pred & gt| / |pred | gt|.
"""

from __future__ import annotations

from typing import Callable

import torch


def iou_of_map(heatmap: torch.Tensor, gt: torch.Tensor) -> float:
    """Solution."""
    pred = heatmap > 0.1 * heatmap.max()
    return ((pred & gt).sum() / (pred | gt).sum()).item()


def check_iou_of_map(fn: Callable[[torch.Tensor, torch.Tensor], float]) -> str:
    """Compare ``fn`` with ``metrics.dsol_single_source`` on random maps and boxes."""
    from dsol_lite.metrics import dsol_single_source

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        heatmap = torch.rand(32, 32, generator=g) ** 4
        gt = torch.zeros(32, 32, dtype=torch.bool)
        x, y = torch.randint(0, 24, (2,), generator=g).tolist()
        gt[y:y + 8, x:x + 8] = True
        expected = dsol_single_source(heatmap[None], gt[None])["iou"].item()
        got = float(fn(heatmap, gt))
        if abs(got - expected) > 1e-6:
            raise AssertionError(f"got {got:.4f}, expected {expected:.4f}: threshold at 0.1 x max, then IoU")
    return "correct: matches dsol_lite.metrics.dsol_single_source"
