"""DSOL's stage-one network: where in the frame does this sound come from?

Notebook: 01_correspondence, 02_stage_one.

Visual map ``v(x)`` and audio vector ``a`` are projected to 128-d and L2-normalised; their
cosine at every location, times one learnable scale (no bias, initialised to 5), through a
sigmoid, is the localization map. Its global max says whether the sound belongs to the frame.
Two K-way classifiers (on the average-pooled visual feature and on the audio vector) are
trained on k-means pseudo-labels between localization epochs (see ``dictionary``).

``encode(..., mosaic=True)`` (the quick preset's training, not in DSOL): every four frames of a
batch are tiled 2 x 2 into one picture for the visual stream, and its feature map is cut back
into the four frames' maps. Each cell then also sees its neighbours in the picture, so three of
every audio's negatives sit right next to its positive: evidence that spreads from the object
across the seam into another frame's quadrant costs loss there (notebook 02, sections 1 and 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dsol_lite.models.backbones import BackbonePair


@dataclass
class StageOneOutput:
    v_fea: torch.Tensor  # (B, C, h, w) backbone feature map
    v_emb: torch.Tensor  # (B, D, h, w) projected, unit length at every location
    a_fea: torch.Tensor  # (B, C) max-pooled audio feature
    a_emb: torch.Tensor  # (B, D) projected, unit length


class DSOLStageOne(nn.Module):
    def __init__(self, backbones: BackbonePair, num_clusters: int, embed_dim: int = 128,
                 init_scale: float = 5.0) -> None:
        super().__init__()
        c = backbones.channels
        self.backbones = backbones
        self.v_proj = nn.Sequential(nn.Conv2d(c, embed_dim, 1), nn.ReLU(inplace=True),
                                    nn.Conv2d(embed_dim, embed_dim, 1))
        self.a_proj = nn.Sequential(nn.Linear(c, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, embed_dim))
        self.scale = nn.Parameter(torch.tensor(float(init_scale)))  # the 1x1 conv without bias of DSOL
        self.v_classifier = nn.Linear(c, num_clusters)
        self.a_classifier = nn.Linear(c, num_clusters)

    def encode(self, images: torch.Tensor, log_mel: torch.Tensor, mosaic: bool = False) -> StageOneOutput:
        """Both streams and projections; ``mosaic``: the frames seen four at a time, tiled 2 x 2."""
        v_fea = self.backbones.visual(images, mosaic)
        a_fea = self.backbones.audio(log_mel)
        v_emb = F.normalize(self.v_proj(v_fea), dim=1)
        a_emb = F.normalize(self.a_proj(a_fea), dim=1)
        return StageOneOutput(v_fea, v_emb, a_fea, a_emb)

    def logit_maps(self, v_emb: torch.Tensor, a_emb: torch.Tensor) -> torch.Tensor:
        """scale * cosine between frame i's locations and audio i: (B, D, h, w), (B, D) -> (B, h, w)."""
        return self.scale * torch.einsum("bdhw,bd->bhw", v_emb, a_emb)

    def localization_map(self, out: StageOneOutput) -> torch.Tensor:
        """The sigmoid localization map of each frame with its own audio, (B, h, w) in [0, 1]."""
        return torch.sigmoid(self.logit_maps(out.v_emb, out.a_emb))

    def evidence(self, images: torch.Tensor, log_mel: torch.Tensor) -> torch.Tensor:
        """How sure the network is that something in view makes the sound, ``(B,)``: the map's peak
        (notebook 06 asks how high it stays when nothing sounds)."""
        return self.localization_map(self.encode(images, log_mel)).flatten(1).amax(1)

    def class_logits(self, out: StageOneOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-label logits: visual (on the average-pooled map) and audio."""
        return self.v_classifier(out.v_fea.mean(dim=(2, 3))), self.a_classifier(out.a_fea)

    def classify(self, images: torch.Tensor, log_mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pseudo-label logits straight from the backbones (the embeddings are not needed)."""
        v_fea, a_fea = self.backbones.visual(images), self.backbones.audio(log_mel)
        return self.v_classifier(v_fea.mean(dim=(2, 3))), self.a_classifier(a_fea)

    def reset_classifiers(self, num_clusters: int, seed: int) -> None:
        """Fresh K-way heads for a new clustering round (DSOL: N(0, 0.01) weights, zero bias).

        Seeded explicitly, so the heads do not depend on how much of the global RNG was used.
        """
        device = self.scale.device
        generator = torch.Generator().manual_seed(seed)
        for name in ("v_classifier", "a_classifier"):
            weight = torch.randn(num_clusters, self.backbones.channels, generator=generator) * 0.01
            head = nn.Linear(self.backbones.channels, num_clusters, device="meta").to_empty(device=device)
            with torch.no_grad():
                head.weight.copy_(weight)
                head.bias.zero_()
            setattr(self, name, head)

    def forward(self, images: torch.Tensor, log_mel: torch.Tensor) -> torch.Tensor:
        return self.localization_map(self.encode(images, log_mel))


@dataclass
class StageTwoOutput:
    stage_one: StageOneOutput
    loc_map: torch.Tensor  # (B, h, w) stage one's localization map of the mixture, in [0, 1]
    class_maps: torch.Tensor  # (B, K, h, w) class-aware maps (times loc_map when filtering silent objects)
    visual_logits: torch.Tensor  # (B, K) their global average: the visual category distribution (logits)


class DSOLStageTwo(nn.Module):
    """Stage one's network plus the object dictionary: one map per object category.

    Notebook: 04_stage_two.

    ``class_maps[k] = (w * <v_fea(x), D_k> + b) * loc_map(x)``: the backbone feature at every
    location compared with dictionary row ``k``, one scalar affine (DSOL's 1x1x1 Conv3d), times
    the localization map so that silent objects, which look like category ``k`` but do not
    sound, are filtered out (``filter_silent=False`` skips the product: DSOL's warm-up).
    The affine weight starts at ``1 / mean ||D_k||^2`` so the first logits are of order one
    (DSOL's random Conv3d initialisation makes the first steps a lottery).
    """

    def __init__(self, stage_one: DSOLStageOne, dictionary: torch.Tensor) -> None:
        super().__init__()
        if dictionary.dim() != 2 or dictionary.shape[1] != stage_one.backbones.channels:
            raise ValueError(f"dictionary must be (K, {stage_one.backbones.channels}), got {tuple(dictionary.shape)}")
        self.net = stage_one
        self.register_buffer("dictionary", dictionary.detach().float().clone())
        self.obj_weight = nn.Parameter(1.0 / dictionary.pow(2).sum(1).mean().clamp_min(1e-6).detach().float())
        self.obj_bias = nn.Parameter(torch.tensor(0.0))

    @property
    def num_clusters(self) -> int:
        return self.dictionary.shape[0]

    def forward(self, images: torch.Tensor, log_mel: torch.Tensor, filter_silent: bool = True) -> StageTwoOutput:
        out = self.net.encode(images, log_mel)
        loc_map = self.net.localization_map(out)
        similarity = torch.einsum("bchw,kc->bkhw", out.v_fea, self.dictionary.to(out.v_fea.dtype))
        class_maps = self.obj_weight * similarity + self.obj_bias
        if filter_silent:
            class_maps = class_maps * loc_map.unsqueeze(1)
        return StageTwoOutput(out, loc_map, class_maps, class_maps.mean(dim=(2, 3)))
