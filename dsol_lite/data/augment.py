"""Training augmentation on the device, for a whole batch at once.

Notebook: 07_real_data_music (feeding a GPU from 2 CPU cores).

The per-item augmentation of ``images.image_transform`` (random resized crop, horizontal flip,
colour jitter) costs about 2 ms per 224-px frame on one CPU core, which caps a DataLoader
worker near 450 clips/s (``benchmarks/cache_loader.py``). With ``device_augment=True`` a
dataset draws the same random parameters per item (seeded per item as before, so runs stay
reproducible and resumable) but returns the frame un-augmented as uint8; ``augment_batch``
then applies crop, flip and jitter to the whole batch on the training device.

Differences from the per-item path: the crop is resampled with ``torchvision.ops.roi_align``
(bilinear at each output pixel's centre; a crop is never larger than the output, so nothing is
lost without antialiasing), and brightness, contrast and saturation are applied in this fixed
order (torchvision draws a random order per item).
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align
from torchvision.transforms import RandomResizedCrop

from dsol_lite.data.images import IMAGENET_MEAN, IMAGENET_STD

CROP_SCALE, CROP_RATIO, JITTER = (0.6, 1.0), (0.8, 1.25), 0.3
MASK_KEYS = ("gt_mask", "class_boxes")  # item entries that follow the image's geometry


def draw_augmentation(size: int) -> torch.Tensor:
    """One item's parameters from the global torch RNG: ``[top, left, height, width]`` of the crop
    in pixels of a ``size`` x ``size`` frame (drawn by torchvision's ``RandomResizedCrop``),
    ``flip`` (0/1), brightness, contrast and saturation factors."""
    top, left, h, w = RandomResizedCrop.get_params(torch.empty(1, size, size), list(CROP_SCALE), list(CROP_RATIO))
    flip = float(torch.rand(1) < 0.5)
    jitter = torch.empty(3).uniform_(1 - JITTER, 1 + JITTER)
    return torch.tensor([top, left, h, w, flip, *jitter.tolist()], dtype=torch.float32)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp(0, 1)


def _crop(x: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Each sample's crop box resized to ``size`` x ``size``: one batched ``roi_align``."""
    top, left, h, w = params[:, :4].unbind(1)
    boxes = torch.stack([torch.arange(len(x), device=x.device, dtype=x.dtype), left, top, left + w, top + h], 1)
    return roi_align(x, boxes.to(x.dtype), output_size=size, spatial_scale=1.0, sampling_ratio=1, aligned=True)


def augment_images(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` frames -> augmented, ImageNet-normalised float32 ``(B, 3, S, S)``."""
    size = images.shape[-1]
    p = params.to(images.device, torch.float32)
    x = _crop(images.float() / 255, p, size)
    x = torch.where(p[:, 4, None, None, None] > 0.5, x.flip(-1), x)
    view = lambda k: p[:, k, None, None, None]  # noqa: E731  (one factor per sample, broadcast)
    x = (x * view(5)).clamp(0, 1)  # brightness
    x = _blend(x, _grayscale(x).mean(dim=(1, 2, 3), keepdim=True), view(6))  # contrast
    x = _blend(x, _grayscale(x), view(7))  # saturation
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return ((x - mean) / std).contiguous(memory_format=layout)


def augment_masks(masks: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``(B, S, S)`` or ``(B, K, S, S)`` masks through the same crop and flip (nearest: > 0.5)."""
    squeeze = masks.dim() == 3
    m = masks[:, None] if squeeze else masks
    p = params.to(m.device, torch.float32)
    m = _crop(m.float(), p, m.shape[-1]) > 0.5
    m = torch.where(p[:, 4, None, None, None] > 0.5, m.flip(-1), m).float()
    return m[:, 0] if squeeze else m


def augment_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A collated batch of ``device_augment`` items (on the device) -> the augmented batch."""
    params = batch.pop("augment")
    batch["image"] = augment_images(batch["image"], params)
    for key in MASK_KEYS:
        if key in batch:
            batch[key] = augment_masks(batch[key], params)
    return batch


__all__ = ["draw_augmentation", "augment_images", "augment_masks", "augment_batch"]
