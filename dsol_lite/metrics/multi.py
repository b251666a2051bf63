"""Multi-source localization metrics: which object makes which sound, and which are silent.

Notebook: 05_evaluation.

Inputs are whole test sets: per-class maps ``(N, C, H, W)`` at image resolution, per-class
ground-truth masks ``(N, C, H, W)`` (the boxes of the *sounding* objects of each class) and
the multi-hot ``sounding (N, C)``. The model's K clusters become C class maps first
(``cluster_maps_to_classes``), with the Hungarian cluster-to-class assignment of the training
clips (``dictionary.cluster_report``).

* **DSOL multi source** (``dsol_multi_source``): class maps = softmax over clusters of
  3 x the class-aware maps, summed over the clusters assigned to each class. Per scene, CIoU =
  mean over the sounding classes of the IoU of (map > 0.5 x its max) with that class's boxes;
  report CIoU@0.3 and the AUC of the success curve. NSA = for each *non-sounding* class the
  fraction of pixels <= 0.2, averaged over those classes and then over scenes. DSOL's code takes
  the non-sounding classes to be those *without a box in the frame* (``nsa``); on real duets,
  where some instruments of a video are never boxed, that differs from the classes the video
  does not list (``nsa_not_heard``, also returned; in the synthetic world the two are equal).
  ``halves=True`` scores each sounding class on the half of the frame (left or right) its box
  lies in, as some later papers do for duets: not DSOL's protocol, and it scores higher.
* **AVGN style** (``avgn_multi_source``): every sounding source is one item: CIoU@0.3 and AUC
  over sources; class-aware pixel AP (CAP: the map of the source's own class, scored against
  its mask) and permutation-invariant pixel AP (PIAP: per scene the maps are matched to the
  sources by the Hungarian assignment maximising AP, ignoring class identity).

Scenes without a sounding on-screen object have no CIoU (they are counted and reported, not
scored as 0 or 1); they still count for NSA.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from dsol_lite.metrics.single import iou, relative_region, success_curve


def cluster_maps_to_classes(cluster_maps: torch.Tensor, mapping: dict[int, int], num_classes: int,
                            temperature: float = 3.0) -> torch.Tensor:
    """``(N, K, h, w)`` class-aware maps -> ``(N, C, h, w)``: softmax(3 x maps) over the K
    clusters, summed over the clusters assigned to each class. A class with no cluster gets
    an all-zero map (it can never be found, and it is always "silent")."""
    probs = torch.softmax(temperature * cluster_maps.float(), dim=1)
    out = torch.zeros(probs.shape[0], num_classes, *probs.shape[2:], dtype=probs.dtype)
    for cluster, cls in mapping.items():
        out[:, cls] += probs[:, cluster]
    return out


def _iou_rel(maps: torch.Tensor, gt: torch.Tensor, rel_threshold: float) -> torch.Tensor:
    """IoU of (map > rel x max) with a non-empty mask, per row of ``(M, H, W)``."""
    return iou(relative_region(maps, rel_threshold), gt)


def _sounding_pairs(gt: torch.Tensor, sounding: torch.Tensor) -> torch.Tensor:
    """(scene, class) index pairs of sounding classes whose boxes are in view."""
    visible = gt.flatten(2).any(2)
    return torch.nonzero(sounding.bool() & visible)


def _own_halves(gt: torch.Tensor) -> torch.Tensor:
    """``(M, H, W)`` bool: the half of the frame (left or right) where each mask's centre lies."""
    w = gt.shape[-1]
    cols = torch.arange(w, dtype=torch.float64)
    centre = (gt.double().sum(1) * cols).sum(1) / gt.double().sum((1, 2))
    right = (centre + 0.5 >= w / 2)[:, None]
    half = torch.where(right, cols >= w // 2, cols < w // 2)  # (M, W)
    return half[:, None, :].expand_as(gt)


def dsol_multi_source(class_maps: torch.Tensor, gt: torch.Tensor, sounding: torch.Tensor,
                      rel_threshold: float = 0.5, silent_threshold: float = 0.2, halves: bool = False) -> dict:
    """DSOL's multi-source protocol: CIoU@0.3, AUC and NSA (see the module docstring).

    ``rel_threshold`` is 0.5 on synthetic scenes and 0.2 on MUSIC duets in DSOL's code.
    ``halves=True``: each sounding class scored on its own half of the frame (later papers).
    """
    n, c = sounding.shape
    pairs = _sounding_pairs(gt, sounding)
    maps_p, gt_p = class_maps[pairs[:, 0], pairs[:, 1]], gt[pairs[:, 0], pairs[:, 1]]
    if halves:
        keep = _own_halves(gt_p)
        maps_p, gt_p = torch.where(keep, maps_p, torch.zeros_like(maps_p)), gt_p & keep
    per_pair = _iou_rel(maps_p, gt_p, rel_threshold)
    sums = torch.zeros(n, dtype=torch.float64).index_add_(0, pairs[:, 0], per_pair)
    counts = torch.bincount(pairs[:, 0], minlength=n).double()
    scored = counts > 0
    ciou = sums[scored] / counts[scored]
    quiet = (class_maps <= silent_threshold).flatten(2).double().mean(2)  # (N, C)

    def nsa(silent: torch.Tensor) -> float:
        n_silent = silent.sum(1)
        per_scene = (quiet * silent).sum(1)[n_silent > 0] / n_silent[n_silent > 0]
        return float(per_scene.mean()) if len(per_scene) else float("nan")

    curve, area = success_curve(ciou) if len(ciou) else (torch.zeros(21), float("nan"))
    return {"protocol": "dsol_multi_halves" if halves else "dsol_multi", "ciou": ciou, "curve": curve,
            "ciou@0.3": float(curve[6]) if len(ciou) else float("nan"), "auc": area,
            "nsa": nsa(~gt.flatten(2).any(2)), "nsa_not_heard": nsa(~sounding.bool()),
            "scored_scenes": int(scored.sum()), "unscored_scenes": int((~scored).sum())}


def pixel_aps(scores: torch.Tensor, masks: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Average precision of each row's pixel scores against its binary mask: ``(M, ...)`` -> ``(M,)``.

    AP = sum over thresholds of (recall gain) x precision, one threshold per distinct score (tied
    pixels enter together), as scikit-learn's ``average_precision_score``; sorted in torch, ``chunk``
    rows at a time to bound memory."""
    s, y = scores.flatten(1), masks.flatten(1).bool()
    positives = y.sum(1)
    if ((positives == 0) | (positives == y.shape[1])).any():
        raise ValueError("pixel AP needs masks with both foreground and background pixels")
    rank = torch.arange(1, s.shape[1] + 1, dtype=torch.float64)
    out = []
    for a in range(0, len(s), chunk):
        ranked, order = s[a:a + chunk].sort(dim=1, descending=True, stable=True)
        tp = y[a:a + chunk].gather(1, order).double().cumsum(1)
        group_end = torch.ones_like(ranked, dtype=torch.bool)  # the last pixel of each run of tied scores
        group_end[:, :-1] = ranked[:, :-1] != ranked[:, 1:]
        tp_at_ends = torch.where(group_end, tp, 0.0)
        before = torch.nn.functional.pad(torch.cummax(tp_at_ends, 1).values[:, :-1], (1, 0))  # previous end's tp
        gain = torch.where(group_end, tp - before, 0.0)  # positives entering at this threshold
        out.append((gain * tp / rank).sum(1))
    return torch.cat(out) / positives.double() if out else torch.zeros(0, dtype=torch.float64)


def pixel_ap(scores: torch.Tensor, mask: torch.Tensor) -> float:
    """Average precision of one map's pixel scores against a binary mask (``pixel_aps`` for one)."""
    return float(pixel_aps(scores[None], mask[None])[0])


def avgn_multi_source(class_maps: torch.Tensor, gt: torch.Tensor, sounding: torch.Tensor,
                      rel_threshold: float = 0.5) -> dict:
    """AVGN-style per-source CIoU@0.3 / AUC, class-aware AP (CAP) and permutation-invariant AP (PIAP)."""
    pairs = _sounding_pairs(gt, sounding)
    scene, cls = pairs[:, 0], pairs[:, 1]
    ciou = _iou_rel(class_maps[scene, cls], gt[scene, cls], rel_threshold)
    # every map of the scene against every sounding source: CAP reads the source's own class,
    # PIAP the best one-to-one matching
    n_maps, step = class_maps.shape[1], 64  # 64 sources at a time: bounded memory on large test sets
    ap_all = torch.zeros(len(pairs), n_maps, dtype=torch.float64)
    for a in range(0, len(pairs), step):
        s, c = scene[a:a + step], cls[a:a + step]
        block = pixel_aps(class_maps[s].flatten(0, 1), gt[s, c].repeat_interleave(n_maps, 0))
        ap_all[a:a + step] = block.view(-1, n_maps)
    cap = ap_all[torch.arange(len(pairs)), cls]
    piap: list[float] = []
    for i in scene.unique().tolist():
        ap = ap_all[scene == i].numpy()
        rows, cols = linear_sum_assignment(ap, maximize=True)
        piap += ap[rows, cols].tolist()
    curve, area = success_curve(ciou) if len(ciou) else (torch.zeros(21), float("nan"))
    nan = float("nan")
    return {"protocol": "avgn_multi", "ciou": ciou, "curve": curve,
            "ciou@0.3": float(curve[6]) if len(ciou) else nan, "auc": area,
            "cap": float(cap.mean()) if len(cap) else nan, "piap": float(np.mean(piap)) if piap else nan,
            "sources": len(pairs)}


def silent_object_scores(maps: torch.Tensor, sounding_mask: torch.Tensor, silent_mask: torch.Tensor,
                         rel_threshold: float = 0.5) -> dict:
    """For one class-agnostic map per scene ``(N, H, W)``: does it cover what sounds, not what is silent?

    ``sounding_iou``: mean IoU of (map > 0.5 x max) with the union of sounding boxes;
    ``silent_coverage``: mean fraction of silent-object pixels above that threshold (lower is
    better). Only scenes with at least one sounding and one silent object are scored.
    """
    keep = sounding_mask.flatten(1).any(1) & silent_mask.flatten(1).any(1)
    maps, sounding_mask, silent_mask = maps[keep], sounding_mask[keep].bool(), silent_mask[keep].bool()
    if not len(maps):
        return {"sounding_iou": float("nan"), "silent_coverage": float("nan"), "scenes": 0}
    pred = relative_region(maps, rel_threshold)
    sounding_iou = iou(pred, sounding_mask)
    covered = (pred & silent_mask).flatten(1).sum(1).float() / silent_mask.flatten(1).sum(1).float()
    return {"sounding_iou": float(sounding_iou.mean()), "silent_coverage": float(covered.mean()),
            "scenes": int(keep.sum())}


__all__ = ["cluster_maps_to_classes", "dsol_multi_source", "avgn_multi_source", "pixel_ap", "pixel_aps",
           "silent_object_scores"]
