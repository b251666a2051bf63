"""The two ResNet-18 streams every method shares.

Notebook: 01_correspondence.

Both streams are torchvision's ResNet-18 (its ``BasicBlock``), with two changes from DSOL:
the visual stream's layer4 keeps stride 1 (a 224 image gives a 14 x 14 map, 1/16 of the
input), and the audio stream has a 1-channel stem for log-mel images. ``width`` scales every
layer's channels (64 = the real ResNet-18, 512 output channels); quick mode uses a narrower
network so that a laptop CPU trains it in minutes. At width 64 the module names and shapes
equal torchvision's ``resnet18``, so its ImageNet weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

from dsol_lite.errors import ConfigError


def tile_2x2(x: torch.Tensor) -> torch.Tensor:
    """``(4G, C, H, W) -> (G, C, 2H, 2W)``: items ``4g, 4g+1`` side by side on top, ``4g+2, 4g+3`` below."""
    b, c, h, w = x.shape
    if b % 4:
        raise ValueError(f"a 2x2 mosaic needs a multiple of 4 frames, got {b}")
    return x.view(b // 4, 2, 2, c, h, w).permute(0, 3, 1, 4, 2, 5).reshape(b // 4, c, 2 * h, 2 * w)


def untile_2x2(x: torch.Tensor) -> torch.Tensor:
    """``(G, C, 2h, 2w) -> (4G, C, h, w)``: the inverse of ``tile_2x2``, one quadrant per item."""
    g, c, h2, w2 = x.shape
    if h2 % 2 or w2 % 2:
        raise ValueError(f"a 2x2 mosaic's map has even sides, got {h2} x {w2}")
    h, w = h2 // 2, w2 // 2
    return x.view(g, c, 2, h, 2, w).permute(0, 2, 4, 1, 3, 5).reshape(4 * g, c, h, w)


def check_mosaic(batch_size: int, image_size: int) -> None:
    """Refuse training settings the 2x2 mosaic cannot tile (``mosaic=True`` of any trainer)."""
    if batch_size % 4 or image_size % 16:
        raise ConfigError(f"mosaic=True with batch_size={batch_size}, image_size={image_size}: the frames are "
                          f"tiled four to a picture (a multiple of 4 per batch), and each frame must fill whole "
                          f"cells of the 1/16 map (image_size a multiple of 16)")


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its classifier: ``(B, in_channels, H, W) -> (B, 8 * width, h, w)``."""

    def __init__(self, in_channels: int = 3, width: int = 64, layer4_stride: int = 2) -> None:
        super().__init__()
        if width < 4 or width % 4:
            raise ConfigError(f"width={width}: use a multiple of 4 (64 is the real ResNet-18)")
        self.width, self.out_channels = width, 8 * width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self._inplanes = width
        self.layer1 = self._make_layer(width, stride=1)
        self.layer2 = self._make_layer(2 * width, stride=2)
        self.layer3 = self._make_layer(4 * width, stride=2)
        self.layer4 = self._make_layer(8 * width, stride=layer4_stride)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._inplanes != planes:
            downsample = nn.Sequential(conv1x1(self._inplanes, planes, stride), nn.BatchNorm2d(planes))
        blocks = [BasicBlock(self._inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
        self._inplanes = planes
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> None:
        """Load a torchvision ``resnet18`` state dict (its ``fc`` is dropped; an audio stem is averaged)."""
        if self.width != 64:
            raise ConfigError(f"width={self.width}: torchvision's ResNet-18 weights need width 64")
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if self.conv1.in_channels == 1:
            state["conv1.weight"] = state["conv1.weight"].mean(1, keepdim=True)
        self.load_state_dict(state)


def imagenet_resnet18_state() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet ResNet-18 weights. Downloads once (network needed); the file's
    SHA-256 prefix, part of its name, is checked by ``torch.hub``."""
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)


class BackbonePair(nn.Module):
    """The visual and audio ResNet-18 streams.

    ``visual(images)`` -> (B, C, H/16, W/16) feature map; ``audio(log_mel)`` -> (B, C) vector
    (the audio map max-pooled over time and frequency), with C = 8 * width.

    The audio stream first standardises each log-mel image (zero mean, unit variance per clip):
    raw decibels span about -100..+20, and without it the audio stream learns far more slowly
    (measured in quick mode: matching accuracy 0.57 vs 0.69 after the same 150 steps).
    """

    def __init__(self, width: int = 64, imagenet: bool = False) -> None:
        super().__init__()
        self.visual_net = ResNet18Trunk(3, width, layer4_stride=1)
        self.audio_net = ResNet18Trunk(1, width, layer4_stride=2)
        self.audio_input_norm = nn.InstanceNorm2d(1)  # per-clip standardisation, no parameters
        self.channels = self.visual_net.out_channels
        if imagenet:
            self.visual_net.load_torchvision(imagenet_resnet18_state())

    def visual(self, images: torch.Tensor, mosaic: bool = False) -> torch.Tensor:
        """The visual feature map; ``mosaic``: the frames seen four at a time, tiled 2 x 2 into one
        picture (``tile_2x2``), each frame's quadrant of the map returned as its own."""
        if mosaic:
            return untile_2x2(self.visual_net(tile_2x2(images)))
        return self.visual_net(images)

    def audio_map(self, log_mel: torch.Tensor) -> torch.Tensor:
        """The audio stream's (frequency x time) feature map, (B, C, f, t): AVGN's audio tokens."""
        return self.audio_net(self.audio_input_norm(log_mel))

    def audio(self, log_mel: torch.Tensor) -> torch.Tensor:
        return torch.amax(self.audio_map(log_mel), dim=(2, 3))
