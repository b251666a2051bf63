"""Localization metrics, each named by the protocol it comes from.

Notebook: 02_stage_one, 05_evaluation.

All functions take whole test sets as tensors: maps ``(N, H, W)`` already at image
resolution (see ``upsample``) and ground-truth masks ``(N, H, W)`` (union of the sounding
boxes). IoU is ``|P & G| / |P | G|``, which is the same number as the "cIoU" of DSOL's and
EZ-VSL's code, ``sum(P G) / (sum(G) + sum(P [G = 0]))``, for binary masks.

* **DSOL single source**: predicted region = map > 0.1 x its max; success rate over IoU
  thresholds 0, 0.05, ..., 1; report IoU@0.5 and the area under that curve.
* **EZ-VSL**: min-max normalise, predicted region = above the median; report the fraction
  with cIoU >= 0.5 and the 21-step AUC.

A ground truth with no pixels cannot be scored: it raises (say what to exclude) rather than
counting as a success or a failure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sklearn.metrics import auc as area_under_curve

THRESHOLDS = torch.linspace(0.0, 1.0, 21)


def upsample(maps: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of ``(N, h, w)`` maps to image size."""
    size = (size, size) if isinstance(size, int) else size
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]


def iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-item IoU of binary masks ``(N, H, W)``; an empty prediction scores 0."""
    pred, gt = pred.bool(), gt.bool()
    gt_area = gt.flatten(1).sum(1)
    if (gt_area == 0).any():
        bad = torch.nonzero(gt_area == 0).flatten().tolist()
        raise ValueError(f"items {bad[:10]} have an empty ground truth; exclude them before scoring")
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float()
    return inter / union


def success_curve(scores: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Fraction of items with score >= t for t = 0, 0.05, ..., 1, and the area under it."""
    curve = (scores[None, :] >= THRESHOLDS[:, None] - 1e-9).float().mean(1)
    return curve, float(area_under_curve(THRESHOLDS.numpy(), curve.numpy()))


def relative_region(maps: torch.Tensor, rel_threshold: float) -> torch.Tensor:
    """DSOL's predicted region of every map ``(N, H, W)``: pixels above ``rel_threshold`` x its max
    (an all-zero or non-positive map predicts nothing)."""
    return maps > rel_threshold * maps.flatten(1).amax(1).view(-1, 1, 1)


def dsol_single_source(maps: torch.Tensor, gt: torch.Tensor, rel_threshold: float = 0.1) -> dict:
    """DSOL single-source protocol: IoU of (map > 0.1 max) with the GT, IoU@0.5 and AUC."""
    scores = iou(relative_region(maps, rel_threshold), gt)
    curve, area = success_curve(scores)
    return {"protocol": "dsol_single", "iou": scores, "curve": curve,
            "iou@0.5": float(curve[10]), "auc": area}


def min_max_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.view_as(maps)


def ezvsl(maps: torch.Tensor, gt: torch.Tensor) -> dict:
    """EZ-VSL protocol: normalised map above its median vs the GT: cIoU, fraction >= 0.5, AUC."""
    norm = min_max_normalize(maps)
    median = norm.flatten(1).median(1).values.view(-1, 1, 1)
    scores = iou(norm > median, gt)
    curve, area = success_curve(scores)
    return {"protocol": "ezvsl", "ciou": scores, "curve": curve, "ciou@0.5": float(curve[10]), "auc": area}


def centre_prior(n: int, size: int, mean_box_area: float) -> torch.Tensor:
    """A Gaussian at the image centre whose (0.1 x max) region has the mean GT box area.

    The strongest "look at the middle" baseline for the DSOL protocol: it knows how large
    objects are on average (from the training split), but not where they are.
    """
    radius = math.sqrt(mean_box_area / math.pi)
    sigma = radius / math.sqrt(2 * math.log(10))  # exp(-r^2 / 2 sigma^2) = 0.1 at r = radius
    c = (torch.arange(size) + 0.5) - size / 2
    g = torch.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * sigma ** 2))
    return g.expand(n, size, size).clone()


def random_maps(n: int, grid: int, size: int, seed: int = 0) -> torch.Tensor:
    """Uniform noise on the model's grid, upsampled like a real map."""
    generator = torch.Generator().manual_seed(seed)
    return upsample(torch.rand(n, grid, grid, generator=generator), size)


def grid_oracle(gt: torch.Tensor, grid: int) -> torch.Tensor:
    """A ``grid x grid`` map that reports masks ``gt (N, H, W)`` exactly: each cell's share of
    ground-truth pixels, ``(N, grid, grid)``. Upsampled and scored like a model's map, it shows
    what the grid's coarseness costs a map that says only what each cell covers (notebook 02:
    an 8 x 8 map of coverage cannot outline a small object). Not a bound: a map that plays down
    partly covered cells cuts tighter under DSOL's 0.1 x max threshold, and can score higher."""
    return F.adaptive_avg_pool2d(gt.float()[:, None], grid)[:, 0]
