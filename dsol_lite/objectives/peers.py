"""The peer methods' objectives: EZ-VSL, FNAC, cross-modal alignment and AVGN.

Notebook: 06_method_comparison.

All of them are contrastive over the batch: clip ``n``'s frame and sound are a positive pair,
every other pairing in the batch a negative. Inputs are unit-length embeddings: visual maps
``(B, D, h, w)`` and audio vectors ``(B, D)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mil_logits(v_emb: torch.Tensor, a_emb: torch.Tensor, tau: float = 0.03) -> torch.Tensor:
    """EZ-VSL's multiple-instance similarity: ``S[n, m] = max_x cos(v_n(x), a_m) / tau``, (N, M)."""
    return torch.einsum("ndhw,md->nmhw", v_emb, a_emb).flatten(2).amax(2) / tau


def symmetric_info_nce(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy of each row (frame -> sounds) and each column (sound -> frames); the diagonal
    holds the positives. Returns the two terms."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target), F.cross_entropy(logits.T, target)


def ezvsl_loss(v_emb: torch.Tensor, a_emb: torch.Tensor, tau: float = 0.03
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EZ-VSL: multiple-instance InfoNCE, visual->audio plus audio->visual (summed, as in EZ-VSL)."""
    logits = mil_logits(v_emb, a_emb, tau)
    v2a, a2v = symmetric_info_nce(logits)
    loss = v2a + a2v
    acc = (logits.argmax(1) == torch.arange(len(logits), device=logits.device)).float().mean()
    return loss, {"loss": loss.detach(), "nce": loss.detach(), "match_acc": acc}


def foreground_embeddings(v_emb: torch.Tensor, a_emb: torch.Tensor, threshold: float = 0.6) -> torch.Tensor:
    """FNAC's foreground visual feature: the mean of ``v_emb`` over the locations where the frame's
    own min-max-normalised cosine map exceeds ``threshold`` (never empty: the peak is 1), unit length."""
    own = torch.einsum("bdhw,bd->bhw", v_emb, a_emb).flatten(1)
    lo, hi = own.amin(1, keepdim=True), own.amax(1, keepdim=True)
    mask = ((own - lo) / (hi - lo).clamp_min(1e-8) > threshold) | (own == hi)
    mask = mask.to(v_emb.dtype).unsqueeze(1)  # (B, 1, hw)
    fg = (v_emb.flatten(2) * mask).sum(2) / mask.sum(2)
    return F.normalize(fg, dim=1)


def fnac_loss(v_emb: torch.Tensor, a_emb: torch.Tensor, tau: float = 0.03,
              weights: tuple[float, float, float] = (100.0, 100.0, 100.0),
              fg_threshold: float = 0.6) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FNAC = EZ-VSL + three false-negative-aware L1 terms between row-softmaxed similarity matrices.

    Two clips whose sounds are alike (or whose frames are alike) should not be pushed apart
    as negatives: the cross-modal similarity rows are pulled towards the intra-modal ones.

    * ``fnac_aa``: audio-audio similarity vs the cross-modal logits;
    * ``fnac_fg``: audio-audio similarity vs the similarity of the foreground visual features;
    * ``fnac_vv``: visual-visual (average-pooled) similarity vs the cross-modal logits.

    Every similarity is divided by ``tau`` before its softmax. With ``weights == (0, 0, 0)`` the
    loss *is* EZ-VSL's. Two deliberate differences from FNAC's code: the foreground feature is the
    mean over the foreground locations (the code sums them and divides by the whole grid, so small
    objects give short vectors), and the pooled and foreground features are renormalised to unit
    length before their similarities.
    """
    loss, stats = ezvsl_loss(v_emb, a_emb, tau)
    if not any(weights):
        return loss, stats | {k: torch.zeros((), device=loss.device) for k in ("fnac_aa", "fnac_fg", "fnac_vv")}
    logits = mil_logits(v_emb, a_emb, tau)
    audio_sim = (a_emb @ a_emb.T / tau).softmax(1)
    fg = foreground_embeddings(v_emb, a_emb, fg_threshold)
    pooled = F.normalize(v_emb.mean(dim=(2, 3)), dim=1)
    terms = {"fnac_aa": F.l1_loss(audio_sim, logits.softmax(1)),
             "fnac_fg": F.l1_loss(audio_sim, (fg @ fg.T / tau).softmax(1)),
             "fnac_vv": F.l1_loss((pooled @ pooled.T / tau).softmax(1), logits.softmax(1))}
    for w, term in zip(weights, terms.values()):
        loss = loss + w * term
    return loss, stats | {"loss": loss.detach()} | {k: v.detach() for k, v in terms.items()}


def localization_similarity(v_emb: torch.Tensor, a_emb: torch.Tensor, epsilon: float = 0.65,
                            tau_mask: float = 0.03) -> torch.Tensor:
    """Senocak et al.: the mean of the cosine map weighted by ``sigmoid((cos - epsilon) / tau_mask)``
    (a soft "where it sounds" mask), for every frame n and sound m: (N, M)."""
    cos = torch.einsum("ndhw,md->nmhw", v_emb, a_emb).flatten(2)
    log_w = F.logsigmoid((cos - epsilon) / tau_mask)
    weight = torch.exp(log_w - log_w.amax(2, keepdim=True))  # rescaled: no underflow when all cos << epsilon
    return (weight * cos).sum(2) / weight.sum(2)


def alignment_loss(visual_views: list[tuple[torch.Tensor, torch.Tensor]],
                   audio_views: list[tuple[torch.Tensor, torch.Tensor]], tau: float = 0.07,
                   epsilon: float = 0.65, tau_mask: float = 0.03) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-modal alignment (Senocak et al., 2023), over every (image view, audio view) pairing.

    ``visual_views``: per view ``(v_emb (B, D, h, w), v_align (B, D))``; ``audio_views``: per view
    ``(a_emb (B, D), a_align (B, D))``. For each pairing: symmetric InfoNCE on the localization
    similarity and on the alignment similarity (both / ``tau``), halved per direction; the loss
    is the mean over pairings of their sum.
    """
    loc_total, align_total, acc = 0.0, 0.0, 0.0
    pairs = [(v, a) for v in visual_views for a in audio_views]
    for (v_emb, v_align), (a_emb, a_align) in pairs:
        loc = localization_similarity(v_emb, a_emb, epsilon, tau_mask) / tau
        loc_total = loc_total + sum(symmetric_info_nce(loc)) / 2
        align_total = align_total + sum(symmetric_info_nce(v_align @ a_align.T / tau)) / 2
        acc = acc + (loc.argmax(1) == torch.arange(len(loc), device=loc.device)).float().mean()
    loc_total, align_total = loc_total / len(pairs), align_total / len(pairs)
    loss = loc_total + align_total
    return loss, {"loss": loss.detach(), "loc": loc_total.detach(), "align": align_total.detach(),
                  "match_acc": acc / len(pairs)}


def avgn_loss(v_emb: torch.Tensor, class_emb: torch.Tensor, token_logits: torch.Tensor,
              presence_logits: torch.Tensor, labels: torch.Tensor, tau: float = 0.03,
              weights: tuple[float, float] = (1.0, 1.0)) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """AVGN on single-source clips with class ``labels (B,)``:

    * localization: EZ-VSL's multiple-instance InfoNCE between the frames and the class-specific
      audio embedding of each clip's own class;
    * token classification (weight ``weights[0]``): class token k must be recognised as class k;
    * class prediction (weight ``weights[1]``): multi-label BCE of the presence logits.
    """
    b, k = presence_logits.shape
    own = class_emb[torch.arange(b, device=labels.device), labels]  # (B, D)
    loc, stats = ezvsl_loss(v_emb, own, tau)
    tokens = F.cross_entropy(token_logits.reshape(b * k, k), torch.arange(k, device=labels.device).repeat(b))
    present = F.binary_cross_entropy_with_logits(presence_logits, F.one_hot(labels, k).to(presence_logits.dtype))
    loss = loc + weights[0] * tokens + weights[1] * present
    class_acc = (presence_logits.argmax(1) == labels).float().mean()
    return loss, stats | {"loss": loss.detach(), "tokens": tokens.detach(), "classes": present.detach(),
                          "class_acc": class_acc}


__all__ = ["mil_logits", "symmetric_info_nce", "ezvsl_loss", "foreground_embeddings", "fnac_loss",
           "localization_similarity", "alignment_loss", "avgn_loss"]
