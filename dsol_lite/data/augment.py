"""Training augmentation of whole batches on the device, from per-item random draws.

Notebook: 02_stage_one (what training sees).

Every random choice of a training item (which frame, how far its audio window shifts, the crop,
the flip, the colour jitter) is a pure function of ``(seed, epoch, item index)``: ``item_uniforms``
hashes the three into uniform numbers, for a whole batch at once, on any device. An item is
therefore the same whatever batch it sits in, however many processes share the batch, and after
a resume; and making a batch needs no Python per item.

The augmentation is DSOL's: a random resized crop (scale 0.6-1 of the frame, aspect 0.8-1.25,
drawn by torchvision's rule of ten tries and a central fallback), a horizontal flip, and
brightness, contrast and saturation jitter (no hue: in the synthetic world colour is part of what
a class looks like). The crop is resampled as torchvision's ``resized_crop`` does it (antialiased
bilinear), for the whole batch at once by two matrix products (``resized_crops``); the jitter is
applied in this fixed order (torchvision draws a random order per item).
"""

from __future__ import annotations

import functools
import math

import torch

from dsol_lite.data.images import IMAGENET_MEAN, IMAGENET_STD

CROP_SCALE, CROP_RATIO, JITTER = (0.6, 1.0), (0.8, 1.25), 0.3
TRIES = 10  # torchvision's RandomResizedCrop tries ten crops before it falls back to a central one
#: which uniform of an item drives what (``item_uniforms(..., DRAWS)``)
FRAME, SHIFT, AREA, RATIO, TOP, LEFT, FLIP, COLOUR = 0, 1, 2, 2 + TRIES, 2 + 2 * TRIES, 3 + 2 * TRIES, \
    4 + 2 * TRIES, 5 + 2 * TRIES
DRAWS = COLOUR + 3

_MASK, _MULT = 0xFFFFFFFF, 0x45D9F3B  # 32-bit values; products stay below 2**59, exact in int64


def _mix(x):
    """A 32-bit integer hash (two multiply-xorshift rounds), of an int or elementwise of an int64 tensor."""
    x = (((x >> 16) ^ x) * _MULT) & _MASK
    x = (((x >> 16) ^ x) * _MULT) & _MASK
    return (x >> 16) ^ x


def item_uniforms(seed: int, epoch: int, index: torch.Tensor, count: int = DRAWS, first: int = 0) -> torch.Tensor:
    """``(B, count)`` numbers in (0, 1), float64: draws ``first .. first + count - 1`` of item
    ``index[b]`` in ``epoch``, each a pure function of ``(seed, epoch, index, j)`` computed on
    ``index``'s device (indices below 2**31)."""
    # Weyl steps (odd multipliers, non-zero offsets) before each hash: neighbouring inputs land far
    # apart, and zero is not a fixed point
    key = _mix(_mix(((seed & _MASK) * 0x9E3779B1 + 0x632BE5AB) & _MASK) ^ ((epoch * 0x85EBCA6B + 0x27D4EB2F) & _MASK))
    item = _mix(_mix(((index.long() * 0x9E3779B1 + 0x165667B1) & _MASK) ^ key))[:, None]
    draw = ((torch.arange(first, first + count, device=index.device, dtype=torch.int64) + 1) * 0xC2B2AE35) & _MASK
    return (_mix(_mix(item ^ draw)).double() + 0.5) / 2.0 ** 32


def crop_boxes(u: torch.Tensor, size: int) -> torch.Tensor:
    """``[top, left, height, width]`` (pixels, float32) of each item's random resized crop of a
    ``size`` x ``size`` frame, from its uniforms ``u`` (torchvision's rule: the first of ten tries
    that fits, else the central crop of allowed aspect)."""
    area = size * size
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    target = area * (CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * u[:, AREA:AREA + TRIES])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[:, RATIO:RATIO + TRIES])
    w, h = torch.round(torch.sqrt(target * aspect)), torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = torch.where(fits.any(1), fits.float().argmax(1), -1)
    take = first.clamp(min=0)[:, None]
    w, h = w.gather(1, take)[:, 0], h.gather(1, take)[:, 0]
    top = torch.floor(u[:, TOP] * (size - h + 1))
    left = torch.floor(u[:, LEFT] * (size - w + 1))
    fallback = first < 0  # a square frame: the central crop of aspect 1 is the whole frame
    box = torch.stack([top, left, h, w], 1)
    whole = torch.zeros_like(box)
    whole[:, 2:] = size
    return torch.where(fallback[:, None], whole, box).float()


def augmentation_params(u: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 8)`` float32 per item: crop ``[top, left, height, width]`` of a ``size``-px frame, flip
    (0/1), brightness, contrast and saturation factors."""
    flip = (u[:, FLIP] < 0.5).float()
    jitter = (1 - JITTER) + 2 * JITTER * u[:, COLOUR:COLOUR + 3].float()
    return torch.cat([crop_boxes(u, size), flip[:, None], jitter], 1)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _axis_weights(start: torch.Tensor, length: torch.Tensor, size: int, out: int,
                  flip: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, out, size)``: how much each of ``size`` source pixels counts in each output pixel when the
    span ``[start, start + length)`` is resized to ``out`` pixels, torchvision's antialiased bilinear
    rule (a triangle as wide as the scale when shrinking, plain bilinear when enlarging, only pixels
    inside the span); the output order reversed where ``flip``."""
    scale = (length / out)[:, None, None]
    centre = start[:, None, None] + (torch.arange(out, device=start.device, dtype=start.dtype)[:, None] + 0.5) * scale
    pos = torch.arange(size, device=start.device, dtype=start.dtype) + 0.5  # source pixel centres
    w = (1 - (pos - centre).abs() / scale.clamp(min=1.0)).clamp(min=0)
    w = w * ((pos >= start[:, None, None]) & (pos < (start + length)[:, None, None]))
    w = w / w.sum(-1, keepdim=True)
    if flip is not None:
        w = torch.where(flip[:, None, None], w.flip(1), w)
    return w.float()


def resized_crops(images: torch.Tensor, params: torch.Tensor, out: int) -> torch.Tensor:
    """``(B, C, N, N)`` -> ``(B, C, out, out)`` float32: each sample's crop box ``params[:, :4]`` resized
    (antialiased, as torchvision's ``resized_crop``) and flipped where ``params[:, 4] > 0.5``; two
    batched matrix products, one per axis."""
    b, c, n, _ = images.shape
    p = params.to(images.device, torch.float32)  # pixel positions: exact in float32
    rows = _axis_weights(p[:, 0], p[:, 2], n, out)
    cols = _axis_weights(p[:, 1], p[:, 3], n, out, p[:, 4] > 0.5)
    x = images.permute(0, 2, 1, 3).reshape(b, n, c * n).float()  # (B, rows, channels x columns)
    x = torch.bmm(rows, x).view(b, out * c, n)
    x = torch.bmm(x, cols.transpose(1, 2))
    return x.view(b, out, c, out).permute(0, 2, 1, 3).contiguous()


@functools.lru_cache(maxsize=None)
def _imagenet_stats(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's channel means and deviations on ``device``, copied there once (not every batch)."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` or float in [0, 1] -> ImageNet-normalised float32."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    mean, std = _imagenet_stats(x.device)
    return (x - mean) / std


def augment_images(images: torch.Tensor, params: torch.Tensor, out: int | None = None) -> torch.Tensor:
    """uint8 ``(B, 3, N, N)`` frames -> crops at ``out`` x ``out`` (default N), flipped and jittered,
    ImageNet-normalised float32."""
    p = params.to(images.device, torch.float32)
    x = resized_crops(images, p, out or images.shape[-1]).div_(255).clamp_(0, 1)
    factor = lambda k: p[:, k, None, None, None]  # noqa: E731  (one factor per sample, broadcast)
    x.mul_(factor(5)).clamp_(0, 1)  # brightness
    mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x.mul_(factor(6)).add_((1 - factor(6)) * mean).clamp_(0, 1)  # contrast
    gray = _grayscale(x)
    x.mul_(factor(7)).add_((1 - factor(7)) * gray).clamp_(0, 1)  # saturation
    mean, std = _imagenet_stats(x.device)
    return x.sub_(mean).div_(std)


def augment_masks(masks: torch.Tensor, params: torch.Tensor, out: int | None = None) -> torch.Tensor:
    """``(B, N, N)`` or ``(B, K, N, N)`` masks through the same crop and flip (> 0.5 after resampling)."""
    squeeze = masks.dim() == 3
    m = masks[:, None] if squeeze else masks
    m = (resized_crops(m.float(), params, out or m.shape[-1]) > 0.5).float()
    return m[:, 0] if squeeze else m


__all__ = ["item_uniforms", "crop_boxes", "augmentation_params", "resized_crops", "augment_images", "augment_masks",
           "normalize",
           "DRAWS", "FRAME", "SHIFT"]
