"""Running a trained model over a test set and scoring it with the named protocols.

Notebook: 02_stage_one, 05_evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from dsol_lite.data.audio import LogMel
from dsol_lite.data.datasets import ClipDataset
from dsol_lite.dictionary import cluster_report, object_features, run_kmeans
from dsol_lite.metrics import (centre_prior, cluster_maps_to_classes, dsol_single_source, ezvsl, random_maps,
                               upsample)
from dsol_lite.models.dsol import StageOneOutput
from dsol_lite.training import iterate, sequential_batches, to_device


@torch.no_grad()
def localization_maps(model: nn.Module, dataset: ClipDataset, log_mel: LogMel, device: torch.device,
                      batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps ``(N, h, w)`` of every single-source clip with its own audio, and the GT masks ``(N, S, S)``."""
    model.eval()
    maps, gts = [], []
    for batch in iterate(dataset, sequential_batches(len(dataset), batch_size)):
        batch = to_device(batch, device)
        maps.append(model(batch["image"], log_mel(batch["audio"])).float().cpu())
        gts.append(batch["gt_mask"].cpu() > 0.5)
    return torch.cat(maps), torch.cat(gts)


def mean_box_area(dataset: ClipDataset) -> float:
    """Mean area (pixels at the dataset's image size) of the union of sounding boxes."""
    areas = []
    for clip in dataset.clips:
        frame = clip.frames[len(clip.frames) // 2]
        sx, sy = dataset.image_size / frame.width, dataset.image_size / frame.height
        areas += [sum((x2 - x1) * (y2 - y1) * sx * sy for x1, y1, x2, y2 in (o.box for o in frame.sounding_objects()))]
    return float(sum(areas) / max(len(areas), 1))


def evaluate_single_source(maps: torch.Tensor, gt: torch.Tensor, prior_area: float, seed: int = 0) -> dict:
    """Both single-source protocols for a model's maps ``(N, h, w)`` on its grid and for the
    centre-prior and random baselines. Each protocol upsamples a grid map as its code does (DSOL
    with ``align_corners=False``, EZ-VSL with ``True``); the centre prior is made at image size."""
    n, size = gt.shape[0], gt.shape[-1]
    prior = centre_prior(n, size, prior_area)
    grids = {"model": maps, "centre prior": None, "random": random_maps(n, maps.shape[-1], seed)}
    table = {}
    for name, grid in grids.items():
        dsol_maps = prior if grid is None else upsample(grid, size)
        ezvsl_maps = prior if grid is None else upsample(grid, size, align_corners=True)
        dsol, ez = dsol_single_source(dsol_maps, gt), ezvsl(ezvsl_maps, gt)
        table[name] = {"dsol_iou@0.5": dsol["iou@0.5"], "dsol_auc": dsol["auc"],
                       "ezvsl_ciou@0.5": ez["ciou@0.5"], "ezvsl_auc": ez["auc"],
                       "_dsol": dsol, "_ezvsl": ez}
    return table


@torch.no_grad()
def sharpness_sweep(maps: torch.Tensor, gt: torch.Tensor, factors: Sequence[float]) -> dict[float, float]:
    """DSOL's IoU@0.5 if the learned scale were ``factor`` times larger: ``sigmoid(factor * s * cos)``.

    ``maps`` are the model's sigmoid maps ``(N, h, w)``; their logits ``s * cos`` are recovered with
    ``logit``. The region DSOL keeps, ``sigmoid(s cos) > 0.1 x max``, is ``cos > logit(0.1 x max) / s``,
    so the scale sets how far a region spreads, not only how sharp the map looks. A what-if for the
    validation split (notebook 02): never a way to tune on the test split.
    """
    logits = torch.logit(maps.double(), eps=1e-12)
    return {float(k): dsol_single_source(upsample(torch.sigmoid(k * logits), gt.shape[-1]), gt)["iou@0.5"]
            for k in factors}


def scalar_table(table: dict) -> dict[str, dict[str, float]]:
    """Drop the per-item arrays, keep the numbers."""
    return {name: {k: v for k, v in row.items() if not k.startswith("_")} for name, row in table.items()}


@torch.no_grad()
def encoded_clips(model: nn.Module, dataset: ClipDataset, log_mel: LogMel, device: torch.device,
                  batch_size: int = 64, items: Sequence[int] | None = None
                  ) -> Iterator[tuple[dict[str, torch.Tensor], StageOneOutput]]:
    """Every clip of a single-source dataset (or the clips ``items``) through stage one's two
    streams in eval mode: ``(batch, output)`` pairs, batch by batch, in order."""
    model.eval()
    items = range(len(dataset)) if items is None else items
    batches = [[items[j] for j in chunk] for chunk in sequential_batches(len(items), batch_size)]
    for batch in iterate(dataset, batches):
        batch = to_device(batch, device)
        yield batch, model.encode(batch["image"], log_mel(batch["audio"]))


@torch.no_grad()
def matching_accuracy(model: nn.Module, dataset: ClipDataset, log_mel: LogMel, device: torch.device,
                      batch_size: int = 64) -> float:
    """How often the model tells a clip's own frame (max map > 0.5) from the next clip's frame."""
    from dsol_lite.objectives import stage_one_loss

    correct, total = 0.0, 0
    for batch, out in encoded_clips(model, dataset, log_mel, device, batch_size):
        if len(batch["index"]) < 2:  # a lone clip has no other frame to tell apart
            continue
        _, stats = stage_one_loss(model, out)
        correct += float(stats["match_acc"]) * len(batch["index"])
        total += len(batch["index"])
    return correct / max(total, 1)


@torch.no_grad()
def clip_embeddings(model: nn.Module, dataset: ClipDataset, log_mel: LogMel, device: torch.device,
                    batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage one's unit embeddings of every single-source clip: visual ``(N, D, h, w)``, audio
    ``(N, D)``, and the true classes ``(N,)`` (for reporting only)."""
    vis, aud, labels = [], [], []
    for batch, out in encoded_clips(model, dataset, log_mel, device, batch_size):
        vis.append(out.v_emb.float().cpu())
        aud.append(out.a_emb.float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(vis), torch.cat(aud), torch.cat(labels)


def class_matching_matrix(v_emb: torch.Tensor, a_emb: torch.Tensor, labels: torch.Tensor, scale: float,
                          num_classes: int, chunk: int = 256) -> torch.Tensor:
    """How strongly stage one matches a sound of class ``a`` (row) to a frame of class ``v`` (column).

    Entry ``(a, v)`` is the mean match probability ``sigmoid(max_x scale * cos(v_emb_j(x), a_emb_i))``
    over every pair of two *different* clips, audio ``i`` of class ``a`` and frame ``j`` of class
    ``v``, so the diagonal asks "another clip of the same class?", not "the same clip?". A network
    that tells every class apart has a bright diagonal; a block of bright entries off it is a group
    of classes the two streams have collapsed together, which k-means with one cluster per class then
    puts in one cluster. NaN where a class has no pair. Notebook: 03_object_dictionary.
    """
    n = len(labels)
    onehot = torch.nn.functional.one_hot(labels.long(), num_classes).double()  # (N, C)
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        logits = scale * torch.einsum("jdhw,id->ijhw", v_emb, a_emb[rows]).amax(dim=(2, 3))  # audio i, frame j
        probs = torch.sigmoid(logits.double())
        probs[torch.arange(rows.stop - start), torch.arange(start, rows.stop)] = 0.0  # drop each clip's own pair
        sums += onehot[rows].T @ probs @ onehot
    counts = onehot.sum(0)
    pairs = counts[:, None] * counts[None, :] - torch.diag(counts)
    return (sums / pairs).float()  # 0 / 0 = NaN where there is no pair


class ClipFeatures(NamedTuple):
    objects: torch.Tensor  # (N, C) object features (masked means)
    audio: torch.Tensor  # (N, C) audio features
    visual: torch.Tensor  # (N, C) average-pooled visual features (what the visual pseudo-label head sees)
    labels: torch.Tensor  # (N,) true classes (for reporting only)
    empty: int  # clips whose mask was empty (their peak cell was used)


@torch.no_grad()
def extract_object_features(model: nn.Module, dataset: ClipDataset, log_mel: LogMel, device: torch.device,
                            threshold: float = 0.05, feature_norm: str = "mask", batch_size: int = 64,
                            items: range | None = None) -> ClipFeatures:
    """Object, audio and pooled visual features of every clip of a single-source dataset (eval mode),
    or of the clips ``items`` only (one rank's share in a distributed run)."""
    objs, auds, vis, labels, empty = [], [], [], [], 0
    for batch, out in encoded_clips(model, dataset, log_mel, device, batch_size, items):
        feats, no_mask = object_features(out.v_fea.float(), model.localization_map(out).float(), threshold,
                                         feature_norm)
        objs.append(feats.cpu())
        auds.append(out.a_fea.float().cpu())
        vis.append(out.v_fea.float().mean(dim=(2, 3)).cpu())
        labels.append(batch["label"].cpu())
        empty += int(no_mask.sum())
    return ClipFeatures(torch.cat(objs), torch.cat(auds), torch.cat(vis), torch.cat(labels), empty)


@torch.no_grad()
def validate_stage_one(model: nn.Module, dataset: ClipDataset, log_mel: LogMel, device: torch.device,
                       num_clusters: int, threshold: float = 0.05, feature_norm: str = "mask",
                       seed: int = 0) -> dict[str, float]:
    """Stage one's validation, one pass over the split: DSOL's IoU@0.5 and AUC of the maps (what
    selects the checkpoint), and ``nmi``: k-means with ``num_clusters`` on the split's own object
    features against the true classes. The NMI is reported, never used: a cheap preview of how
    class-like a dictionary made now would be, without a clustering round over the training clips.
    Notebook: 02_stage_one."""
    maps, gts, objects, labels = [], [], [], []
    for batch, out in encoded_clips(model, dataset, log_mel, device):
        heat = model.localization_map(out).float()
        maps.append(heat.cpu())
        gts.append(batch["gt_mask"].cpu() > 0.5)
        objects.append(object_features(out.v_fea.float(), heat, threshold, feature_norm)[0].cpu())
        labels.append(batch["label"].cpu())
    gt = torch.cat(gts)
    scores = dsol_single_source(upsample(torch.cat(maps), gt.shape[-1]), gt)
    feats, k = torch.cat(objects), min(num_clusters, len(gt))
    nmi = cluster_report(run_kmeans(feats, k, seed), torch.cat(labels).numpy(), k, len(dataset.classes))["nmi"]
    return {"iou@0.5": scores["iou@0.5"], "auc": scores["auc"], "nmi": nmi}


@torch.no_grad()
def stage_two_maps(model: nn.Module, dataset: ClipDataset, log_mel: LogMel, device: torch.device,
                   filter_silent: bool = True, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """One pass of a stage-two model over every multi-source scene.

    ``class_maps`` (N, K, h, w): class-aware maps, times ``loc_maps`` (N, h, w) when
    ``filter_silent`` (``with_silent_filter`` applies it later to unfiltered maps, without a second
    pass); ``audio_probs`` (N, K): the network's own audio classifier on the mixture (for the
    stage-one network, the distribution stage two is trained to match); ground truth:
    ``class_boxes`` (N, C, S, S) bool, boxes of sounding objects only; ``silent_boxes`` (N, S, S)
    the union of the silent objects' boxes; ``sounding``, ``present`` (N, C).
    """
    model.eval()
    keys = ("class_maps", "loc_maps", "audio_probs", "class_boxes", "silent_boxes", "sounding", "present")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
    for batch in iterate(dataset, sequential_batches(len(dataset), batch_size)):
        out = model(batch["image"].to(device), log_mel(batch["audio"].to(device)), filter_silent=False)
        parts["class_maps"].append(out.class_maps.float().cpu())
        parts["loc_maps"].append(out.loc_map.float().cpu())
        parts["audio_probs"].append(torch.softmax(model.net.a_classifier(out.stage_one.a_fea).float(), 1).cpu())
        boxes, heard = batch["class_boxes"] > 0.5, batch["sounding"][:, :, None, None] > 0
        parts["class_boxes"].append(boxes & heard)
        parts["silent_boxes"].append((boxes & ~heard).any(1))
        parts["sounding"].append(batch["sounding"])
        parts["present"].append(batch["present"])
    maps = {k: torch.cat(v) for k, v in parts.items()}
    return with_silent_filter(maps) if filter_silent else maps


def with_silent_filter(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same scenes with DSOL's silent-object filter: class maps x localization map."""
    return {**maps, "class_maps": maps["class_maps"] * maps["loc_maps"][:, None]}


def class_maps_at_image(maps: dict[str, torch.Tensor], mapping: dict[int, int], num_classes: int) -> torch.Tensor:
    """``stage_two_maps`` output -> per-class maps ``(N, C, S, S)`` at image size (DSOL's softmax of 3 x
    the maps over clusters, summed per class through the cluster -> class ``mapping``)."""
    size = maps["class_boxes"].shape[-1]
    per_class = cluster_maps_to_classes(maps["class_maps"], mapping, num_classes)
    return upsample(per_class.flatten(0, 1), size).view(len(per_class), num_classes, size, size)


__all__ = ["localization_maps", "mean_box_area", "evaluate_single_source", "sharpness_sweep", "scalar_table",
           "matching_accuracy", "encoded_clips", "clip_embeddings", "class_matching_matrix", "ClipFeatures",
           "extract_object_features", "validate_stage_one", "stage_two_maps", "with_silent_filter",
           "class_maps_at_image"]
