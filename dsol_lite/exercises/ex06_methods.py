"""Exercise of notebook 06_method_comparison: EZ-VSL's multiple-instance InfoNCE, and FNAC's first term.

Write ``mil_info_nce(v_emb, a_emb, tau)``: ``v_emb`` (B, D, h, w) unit-length visual embeddings,
``a_emb`` (B, D) unit-length audio embeddings. The similarity of frame n and sound m is the best
cosine over frame n's locations, divided by ``tau``; return the cross-entropy of every row
(frame -> the right sound) plus that of every column (sound -> the right frame), each averaged
over the batch.

Then ``fnac_audio_term(v_emb, a_emb, tau)``: the mean absolute difference between the row-wise
softmax of the audio-audio similarities (``a_emb @ a_emb.T / tau``) and the row-wise softmax of
the cross-modal similarities above.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def mil_info_nce(v_emb: torch.Tensor, a_emb: torch.Tensor, tau: float = 0.03) -> torch.Tensor:
    """Solution: all B x B x h x w cosines at once, the max over locations, two cross-entropies."""
    sim = torch.einsum("ndhw,md->nmhw", v_emb, a_emb).flatten(2).amax(2) / tau  # (B, B)
    target = torch.arange(len(sim))
    return F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)


def fnac_audio_term(v_emb: torch.Tensor, a_emb: torch.Tensor, tau: float = 0.03) -> torch.Tensor:
    """Solution: if two sounds are alike, their rows of cross-modal similarities should be alike too."""
    sim = torch.einsum("ndhw,md->nmhw", v_emb, a_emb).flatten(2).amax(2) / tau
    return (torch.softmax(a_emb @ a_emb.T / tau, 1) - torch.softmax(sim, 1)).abs().mean()


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(5, 8, 3, 3, generator=g, dtype=torch.float64), dim=1)
    return v, F.normalize(torch.randn(5, 8, generator=g, dtype=torch.float64), dim=1)


def check_mil_info_nce(fn: Callable) -> str:
    from dsol_lite.objectives.peers import ezvsl_loss

    for seed in range(3):
        v, a = _inputs(seed)
        for tau in (0.03, 0.5):
            got, want = torch.as_tensor(fn(v, a, tau)), ezvsl_loss(v, a, tau)[0]
            if got.numel() != 1 or not torch.allclose(got.double(), want, rtol=1e-6):
                raise AssertionError(f"expected {want.item():.6f}, got {got.flatten()[:3].tolist()} (tau {tau}): "
                                     "max over locations, divide by tau, CE of rows + CE of columns")
    return "correct: matches dsol_lite.objectives.peers.ezvsl_loss"


def check_fnac_audio_term(fn: Callable) -> str:
    from dsol_lite.objectives.peers import fnac_loss

    for seed in range(3):
        v, a = _inputs(seed)
        want = fnac_loss(v, a, 0.1, (1.0, 0.0, 0.0))[1]["fnac_aa"]
        got = float(fn(v, a, 0.1))
        if abs(got - want) > 1e-6 * max(1.0, abs(want)):
            raise AssertionError(f"expected {want:.6f}, got {got:.6f}: mean |softmax(AA^T/tau) - softmax(S)|")
    return "correct: matches the first FNAC term of dsol_lite.objectives.peers.fnac_loss"
