"""Exercise of notebook 01_correspondence: DSOL's matching loss from embeddings.

Write ``loss(v_emb, a_emb, scale)``: positives pair frame i with audio i, negatives pair audio
i with frame i + 1 (cyclically); the score of a pair is the max over locations of
``scale * cosine``; the loss is binary cross-entropy with targets 1 and 0, averaged.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def matching_loss(v_emb: torch.Tensor, a_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Solution. ``v_emb`` (B, D, h, w) and ``a_emb`` (B, D) are unit-length embeddings."""
    pos = (scale * torch.einsum("bdhw,bd->bhw", v_emb, a_emb)).amax(dim=(1, 2))
    partner = torch.roll(v_emb, shifts=-1, dims=0)  # frame i + 1 for audio i
    neg = (scale * torch.einsum("bdhw,bd->bhw", partner, a_emb)).amax(dim=(1, 2))
    logits = torch.cat([pos, neg])
    targets = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
    return F.binary_cross_entropy_with_logits(logits, targets)


def check_matching_loss(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> str:
    """Compare ``fn`` with the library's ``stage_one_loss`` on random embeddings."""
    from dsol_lite.models.dsol import StageOneOutput
    from dsol_lite.objectives import stage_one_loss

    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(6, 8, 3, 3, generator=g), dim=1)
    a = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    scale = torch.tensor(5.0)

    class Scaled(torch.nn.Module):  # the part of DSOLStageOne that stage_one_loss uses
        def logit_maps(self, ve, ae):
            return scale * torch.einsum("bdhw,bd->bhw", ve, ae)

    expected, _ = stage_one_loss(Scaled(), StageOneOutput(v, v, a, a))
    got = fn(v, a, scale)
    if not isinstance(got, torch.Tensor) or got.dim() != 0:
        raise AssertionError("return the loss as a 0-dimensional tensor")
    if not torch.allclose(got, expected, atol=1e-5):
        raise AssertionError(f"got {got.item():.5f}, expected {expected.item():.5f}: check the max over "
                             f"locations, the pairing (audio i with frame i + 1) and the targets")
    return "correct: matches dsol_lite.objectives.stage_one_loss"
