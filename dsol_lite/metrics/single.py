"""Localization metrics, each named by the protocol it comes from, computed as the original code does.

Notebook: 02_stage_one, 05_evaluation.

All functions take whole test sets as tensors: maps ``(N, H, W)`` already at image
resolution (see ``upsample``) and ground-truth masks ``(N, H, W)`` (union of the sounding
boxes). IoU is ``|P & G| / |P | G|``, which is the same number as the "cIoU" of DSOL's and
EZ-VSL's code, ``sum(P G) / (sum(G) + sum(P [G = 0]))``, for binary masks; it is computed in
float64, as their NumPy code does, so that a score of exactly 9/20 counts as 0.45.

* **DSOL single source**: the map resized to the image (``cv2.resize``: the half-pixel
  convention, ``align_corners=False``); predicted region = map > 0.1 x its max; success rate
  over IoU thresholds 0, 0.05, ..., 1; report IoU@0.5 and the area under that curve.
* **EZ-VSL**: the map resized with ``align_corners=True`` (its ``F.interpolate`` call); min-max
  normalised, but a constant map left as it is (its ``normalize_img``); predicted region = the
  pixels ``>=`` the *upper* median (the value at index ``int(N / 2)`` of the sorted pixels);
  report the fraction with cIoU >= 0.5 and the 21-step AUC.

The success curve counts a score ``s`` at threshold ``t_i = 0.05 i`` when ``s >= 0.05 * i`` in
float64, the originals' comparison. A ground truth with no pixels cannot be scored: it raises
(say what to exclude) rather than counting as a success or a failure.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sklearn.metrics import auc as area_under_curve

THRESHOLDS = torch.tensor([0.05 * i for i in range(21)], dtype=torch.float64)  # the originals' thresholds, exactly


def upsample(maps: torch.Tensor, size: int | tuple[int, int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear upsampling of ``(N, h, w)`` maps to image size (``align_corners=False``: DSOL's
    ``cv2.resize``; ``True``: EZ-VSL's ``F.interpolate``)."""
    size = (size, size) if isinstance(size, int) else size
    return F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=align_corners)[:, 0]


def iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-item IoU of binary masks ``(N, H, W)`` in float64; an empty prediction scores 0."""
    pred, gt = pred.bool(), gt.bool()
    gt_area = gt.flatten(1).sum(1)
    if (gt_area == 0).any():
        bad = torch.nonzero(gt_area == 0).flatten().tolist()
        raise ValueError(f"items {bad[:10]} have an empty ground truth; exclude them before scoring")
    inter = (pred & gt).flatten(1).sum(1).double()
    union = (pred | gt).flatten(1).sum(1).double()
    return inter / union


def success_curve(scores: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Fraction of items with score ``>= 0.05 i`` for i = 0..20 (float64, as the originals compare),
    and the area under that curve."""
    curve = (scores.double()[None, :] >= THRESHOLDS[:, None]).double().mean(1)
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
    """Per-map min-max normalisation to [0, 1]; a constant map is left as it is (EZ-VSL's
    ``normalize_img`` divides only when the span is not zero)."""
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)), flat)
    return out.view_as(maps)


def ezvsl_region(maps: torch.Tensor) -> torch.Tensor:
    """EZ-VSL's predicted region of maps at image size: min-max normalised (``min_max_normalize``),
    then every pixel ``>=`` the value at index ``int(N / 2)`` of the map's N sorted pixels (the
    upper median; a plateau at the median is kept whole)."""
    norm = min_max_normalize(maps)
    flat = norm.flatten(1)
    threshold = flat.sort(dim=1).values[:, flat.shape[1] // 2]
    return norm >= threshold.view(-1, 1, 1)


def ezvsl(maps: torch.Tensor, gt: torch.Tensor) -> dict:
    """EZ-VSL protocol on maps at image size (upsampled with ``align_corners=True``): cIoU of the
    region above the upper median (``ezvsl_region``), the fraction >= 0.5, and the AUC."""
    scores = iou(ezvsl_region(maps), gt)
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


def random_maps(n: int, grid: int, seed: int = 0) -> torch.Tensor:
    """Uniform noise on the model's ``grid x grid`` map (upsample it like a real map)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, grid, grid, generator=generator)


def grid_oracle(gt: torch.Tensor, grid: int) -> torch.Tensor:
    """A ``grid x grid`` map that reports masks ``gt (N, H, W)`` exactly: each cell's share of
    ground-truth pixels, ``(N, grid, grid)``. Upsampled and scored like a model's map, it shows
    what the grid's coarseness costs a map that says only what each cell covers (notebook 02:
    an 8 x 8 map of coverage cannot outline a small object). Not a bound: a map that plays down
    partly covered cells cuts tighter under DSOL's 0.1 x max threshold, and can score higher."""
    return F.adaptive_avg_pool2d(gt.float()[:, None], grid)[:, 0]
