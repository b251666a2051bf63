"""Images: reading frames and masks safely, box rasters, torchvision transforms.

Notebook: 00_setup_and_data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors
from torchvision.transforms import v2

from dsol_lite.errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image(path: str | Path, size: tuple[int, int] | None = None, mode: str = "RGB") -> np.ndarray:
    """An image file as a uint8 array (H x W x 3 for RGB, H x W for masks).

    ``size = (width, height)`` checks that the file has the size its annotation says.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "image file is missing")
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: truncated files fail here, not later
            if size is not None and im.size != tuple(size):
                raise DataError(path, f"image is {im.size[0]}x{im.size[1]} but its annotation says {size[0]}x{size[1]}")
            if mode == "L" and im.mode not in ("L", "P"):
                raise DataError(path, f"a mask must be a single-channel image, got mode {im.mode}")
            return np.asarray(im.convert(mode) if im.mode != mode else im).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(path, f"cannot decode image ({err})") from None


def box_mask(boxes: list[tuple[int, int, int, int]] | tuple, height: int, width: int) -> np.ndarray:
    """Union of pixel boxes ``[x1, y1, x2, y2)`` as a bool H x W array."""
    out = np.zeros((height, width), bool)
    for x1, y1, x2, y2 in boxes:
        out[y1:y2, x1:x2] = True
    return out


def image_transform(size: int, train: bool) -> v2.Compose:
    """Joint transform for an (image, mask) pair -> normalised float image and resized mask.

    Training: random resized crop (scale 0.6-1), horizontal flip, brightness/contrast/saturation
    jitter (no hue: in the synthetic world colour is part of what a class looks like). Evaluation:
    a plain resize to ``size`` x ``size``, so ground-truth boxes scale exactly.
    Masks (``tv_tensors.Mask``) follow every geometric step and skip the photometric ones.
    """
    steps: list = [v2.ToImage()]
    if train:
        steps += [v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True),
                  v2.RandomHorizontalFlip(), v2.ColorJitter(0.3, 0.3, 0.3)]
    else:
        steps += [v2.Resize((size, size), antialias=True)]
    steps += [v2.ToDtype({tv_tensors.Image: torch.float32, tv_tensors.Mask: torch.float32, "others": None},
                         scale=True),
              v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation, for display: (3, H, W) -> values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=image.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=image.device).view(3, 1, 1)
    return (image * std + mean).clamp(0, 1)


def strong_views(images: torch.Tensor) -> torch.Tensor:
    """A second, strongly augmented view of a normalised batch ``(B, 3, H, W)`` (cross-modal alignment,
    notebook 06): random resized crop, horizontal and vertical flips, colour jitter, grayscale and
    blur, drawn independently per image from torch's global RNG (seeded and checkpointed)."""
    size = images.shape[-1]
    augment = v2.Compose([v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip(),
                          v2.RandomVerticalFlip(0.2), v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                          v2.RandomGrayscale(0.2), v2.RandomApply([v2.GaussianBlur(5, (0.1, 2.0))], p=0.5)])
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(3, 1, 1)
    return torch.stack([(augment((im * std + mean).clamp(0, 1)) - mean) / std for im in images])
