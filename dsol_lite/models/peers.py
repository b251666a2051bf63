"""The peer methods' heads on the shared ResNet-18 pair: EZ-VSL, FNAC, cross-modal alignment, AVGN.

Notebook: 06_method_comparison.

Every network here returns, from ``forward(images, log_mel)``, one class-agnostic map per
frame in [0, 1]: its own logit map ``cos(x) / tau`` turned into ``exp((cos(x) - max cos) / tau)``,
the softmax over locations rescaled so that the peak is 1. The choice matters for DSOL's
protocol (region = map > 0.1 x max): a min-max normalised cosine map (these methods' own
evaluation code) keeps almost the whole frame, while at the method's own temperature the
region is where the method's softmax puts its mass. EZ-VSL's protocol (median threshold) gives
the same numbers for both, since it only depends on the order of the values.
``encode`` returns the same four tensors as DSOL's stage one (``StageOneOutput``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dsol_lite.models.backbones import BackbonePair
from dsol_lite.models.dsol import StageOneOutput


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of ``(..., h, w)`` to [0, 1] (a constant map becomes all zero)."""
    flat = maps.flatten(-2)
    lo, hi = flat.amin(-1, keepdim=True), flat.amax(-1, keepdim=True)
    return ((flat - lo) / (hi - lo).clamp_min(1e-8)).view_as(maps)


def peak_relative(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """``exp((logits - max) / tau)`` per map of ``(..., h, w)``: 1 at the peak, in (0, 1] elsewhere."""
    flat = logits.flatten(-2)
    return torch.exp((flat - flat.amax(-1, keepdim=True)) / tau).view_as(logits)


def cosine_maps(v_emb: torch.Tensor, a_emb: torch.Tensor) -> torch.Tensor:
    """Cosine of frame n's locations with audio n: (B, D, h, w), (B, D) -> (B, h, w)."""
    return torch.einsum("bdhw,bd->bhw", v_emb, a_emb)


class ContrastiveNet(nn.Module):
    """EZ-VSL (and FNAC): a 1x1 projection of the visual map and a linear projection of the audio
    vector, both unit length (the visual one at every location).

    ``visual_dropout`` (FNAC: 0.9) drops entries of the backbone's visual map before the 1x1
    projection, during training only (after the projection, 90 % of a 128-d embedding would be
    gone and the cosines mostly noise: measured, the InfoNCE then stays at chance).
    """

    def __init__(self, backbones: BackbonePair, embed_dim: int = 128, visual_dropout: float = 0.0,
                 tau: float = 0.03) -> None:
        super().__init__()
        c = backbones.channels
        self.backbones, self.tau = backbones, tau
        self.v_proj = nn.Conv2d(c, embed_dim, 1)
        self.a_proj = nn.Linear(c, embed_dim)
        self.visual_dropout = nn.Dropout(visual_dropout)

    def encode(self, images: torch.Tensor, log_mel: torch.Tensor, mosaic: bool = False) -> StageOneOutput:
        """Both streams and their unit-length projections (``mosaic``: see ``BackbonePair.visual``)."""
        v_fea, a_fea = self.backbones.visual(images, mosaic), self.backbones.audio(log_mel)
        v_emb = F.normalize(self.v_proj(self.visual_dropout(v_fea)), dim=1)
        return StageOneOutput(v_fea, v_emb, a_fea, F.normalize(self.a_proj(a_fea), dim=1))

    def forward(self, images: torch.Tensor, log_mel: torch.Tensor) -> torch.Tensor:
        out = self.encode(images, log_mel)
        return peak_relative(cosine_maps(out.v_emb, out.a_emb), self.tau)

    def evidence(self, images: torch.Tensor, log_mel: torch.Tensor) -> torch.Tensor:
        """How sure the network is that something in view makes the sound, ``(B,)``: the highest
        cosine of the audio with a location (the map itself is rescaled to peak at 1)."""
        out = self.encode(images, log_mel)
        return cosine_maps(out.v_emb, out.a_emb).flatten(1).amax(1)


def _mlp(c_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(c_in, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))


class AlignmentNet(ContrastiveNet):
    """Senocak et al. (2023): the localization embeddings of ``ContrastiveNet`` plus *alignment*
    embeddings, projections of the max-pooled visual map and of the audio vector."""

    def __init__(self, backbones: BackbonePair, embed_dim: int = 128, tau: float = 0.07) -> None:
        super().__init__(backbones, embed_dim, tau=tau)
        self.v_align = _mlp(backbones.channels, embed_dim)
        self.a_align = _mlp(backbones.channels, embed_dim)

    def align(self, out: StageOneOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length alignment embeddings ``(B, D)`` of the frames and of the sounds."""
        v = F.normalize(self.v_align(out.v_fea.amax(dim=(2, 3))), dim=1)
        return v, F.normalize(self.a_align(out.a_fea), dim=1)


@dataclass
class AVGNOutput:
    v_emb: torch.Tensor  # (B, D, h, w) unit length at every location
    class_emb: torch.Tensor  # (B, K, D) class-specific audio embeddings, unit length
    assign: torch.Tensor  # (B, T, K) soft assignment of each audio token to the classes (rows sum to 1)
    token_logits: torch.Tensor  # (B, K, K) each class token classified (target: its own class)
    presence_logits: torch.Tensor  # (B, K) multi-label: is class k in the sound?


class AVGNNet(nn.Module):
    """AVGN (Mo & Tian, 2023), at the scale of this course.

    Learnable class tokens ``(K, D)`` and the audio tokens (one per cell of the audio stream's
    frequency x time map) pass through a small transformer; a grouping step then assigns every
    audio token softly to the classes (softmax over classes) and adds the assignment-weighted
    mean of the tokens to each class token: a class-specific audio embedding. Its cosine with
    every visual location is that class's map. Class labels are used (weak supervision).
    """

    def __init__(self, backbones: BackbonePair, num_classes: int, embed_dim: int = 128, layers: int = 1,
                 heads: int = 4, tau: float = 0.03) -> None:
        super().__init__()
        c, d = backbones.channels, embed_dim
        self.backbones, self.num_classes, self.tau = backbones, num_classes, tau
        self.v_proj = nn.Conv2d(c, d, 1)
        self.a_tokens = nn.Linear(c, d)
        self.class_tokens = nn.Parameter(torch.randn(num_classes, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.group_query, self.group_key, self.group_out = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.token_classifier = nn.Linear(d, num_classes)
        self.presence = nn.Linear(d, 1)

    def group(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio tokens ``(B, T, D)`` -> (assignment ``(B, T, K)``, grouped class tokens ``(B, K, D)``)."""
        b, k = tokens.shape[0], self.num_classes
        x = self.transformer(torch.cat([self.class_tokens.expand(b, -1, -1), tokens], dim=1))
        cls, tok = x[:, :k], x[:, k:]
        scores = torch.einsum("btd,bkd->btk", self.group_query(tok), self.group_key(cls)) / math.sqrt(tok.shape[-1])
        assign = scores.softmax(dim=-1)
        weights = assign / assign.sum(dim=1, keepdim=True).clamp_min(1e-6)  # mean over the tokens of each class
        return assign, cls + self.group_out(torch.einsum("btk,btd->bkd", weights, tok))

    def encode(self, images: torch.Tensor, log_mel: torch.Tensor, mosaic: bool = False) -> AVGNOutput:
        v_emb = F.normalize(self.v_proj(self.backbones.visual(images, mosaic)), dim=1)
        tokens = self.a_tokens(self.backbones.audio_map(log_mel).flatten(2).transpose(1, 2))
        assign, grouped = self.group(tokens)
        return AVGNOutput(v_emb, F.normalize(grouped, dim=-1), assign, self.token_classifier(grouped),
                          self.presence(grouped).squeeze(-1))

    @staticmethod
    def class_maps(out: AVGNOutput) -> torch.Tensor:
        """Cosine maps of every class-specific audio embedding: ``(B, K, h, w)``."""
        return torch.einsum("bdhw,bkd->bkhw", out.v_emb, out.class_emb)

    def agnostic_map(self, out: AVGNOutput) -> torch.Tensor:
        """Class-agnostic map ``(B, h, w)``: the map of the class the network hears most surely."""
        top = out.presence_logits.argmax(1)
        return peak_relative(self.class_maps(out)[torch.arange(len(top)), top], self.tau)

    def source_maps(self, out: AVGNOutput, classes: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, K, h, w)`` in [0, 1]: the map of each class heard, zero for the others.

        ``classes`` (B, K) multi-hot picks the classes (the ground-truth variant); by default the
        predicted ones (presence probability > 0.5, and at least the most likely class).
        """
        if classes is None:
            probs = out.presence_logits.sigmoid()
            classes = (probs > 0.5) | (probs == probs.amax(1, keepdim=True))
        return peak_relative(self.class_maps(out), self.tau) * classes.to(out.v_emb.dtype)[:, :, None, None]

    def forward(self, images: torch.Tensor, log_mel: torch.Tensor) -> torch.Tensor:
        return self.agnostic_map(self.encode(images, log_mel))

    def evidence(self, images: torch.Tensor, log_mel: torch.Tensor) -> torch.Tensor:
        """How sure the network is that a class is heard, ``(B,)``: its highest presence probability."""
        return self.encode(images, log_mel).presence_logits.sigmoid().amax(1)

    def per_source_maps(self, images: torch.Tensor, log_mel: torch.Tensor,
                        classes: torch.Tensor | None = None) -> torch.Tensor:
        """``source_maps`` of a batch (see there)."""
        return self.source_maps(self.encode(images, log_mel), classes)


__all__ = ["minmax", "peak_relative", "cosine_maps", "ContrastiveNet", "AlignmentNet", "AVGNNet", "AVGNOutput"]
