"""DSOL's stage-one objective: does this sound belong to this frame?

Notebook: 01_correspondence.

For audio ``i`` the positive is its own frame and the negative is the frame of another clip
in the batch. Every frame's visual map is computed once; negatives come from re-pairing the
batch (the original code loads a second frame per clip and runs both streams on a doubled
batch). The score of a pair is the global max of its localization map, trained with binary
cross-entropy: own frame -> 1, other frame -> 0.

Since ``max_x sigmoid(s(x)) = sigmoid(max_x s(x))``, the loss is computed on the max *logit*
with ``binary_cross_entropy_with_logits``: the same value, without overflow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsol_lite.models.dsol import DSOLStageOne, DSOLStageTwo, StageOneOutput, StageTwoOutput


def negative_partners(batch_size: int, labels: torch.Tensor | None = None, avoid_same_class: bool = False,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """For every audio ``i``, the frame ``j != i`` it is paired with as a negative (on ``device``).

    By default the next clip in the batch (``j = i + 1`` cyclically), so each audio is used
    twice. With ``avoid_same_class`` (needs ``labels``), the next clip of a *different* class;
    ``-1`` where the batch has none.
    """
    if batch_size < 2:
        raise ValueError("stage-one training needs at least 2 clips per batch to form negatives")
    if not avoid_same_class:
        return (torch.arange(batch_size, device=device) + 1) % batch_size
    if labels is None:
        raise ValueError("avoid_same_class needs the class labels of the batch")
    labels = labels.cpu()
    partners = torch.full((batch_size,), -1, dtype=torch.long)
    for i in range(batch_size):
        for step in range(1, batch_size):
            j = (i + step) % batch_size
            if labels[j] != labels[i]:
                partners[i] = j
                break
    return partners.to(device)


def stage_one_loss(model: DSOLStageOne, out: StageOneOutput, labels: torch.Tensor | None = None,
                   avoid_same_class: bool = False, negatives: str = "one"
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """BCE of max-pooled maps: positives (i, i) -> 1, negatives (frame j, audio i), j != i -> 0.

    ``negatives="one"`` is DSOL: one partner frame per audio (``negative_partners``).
    ``negatives="all"`` pairs every audio with every other frame of the batch: still one visual
    forward, B - 1 negatives per audio, so many more locations get a gradient per step. The
    loss is the mean over positives plus the mean over negatives, halved (with one negative
    per audio this is the plain mean of DSOL's doubled batch). The statistics are 0-d tensors
    on the model's device (reading them would wait for the device: ``float()`` them to print).
    """
    batch = out.a_emb.shape[0]
    pos = model.logit_maps(out.v_emb, out.a_emb).amax(dim=(1, 2))
    if negatives == "one":
        partners = negative_partners(batch, labels, avoid_same_class, out.a_emb.device)
        if avoid_same_class:  # some audios may have no partner of another class
            valid = partners >= 0
            neg = model.logit_maps(out.v_emb[partners[valid]], out.a_emb[valid]).amax(dim=(1, 2))
        else:
            neg = model.logit_maps(out.v_emb[partners], out.a_emb).amax(dim=(1, 2))
        keep = torch.ones_like(neg, dtype=torch.bool)
    elif negatives == "all":
        if batch < 2:
            raise ValueError("stage-one training needs at least 2 clips per batch to form negatives")
        neg = model.scale * torch.einsum("jdhw,id->jihw", out.v_emb, out.a_emb).amax(dim=(2, 3))  # frame j, audio i
        keep = ~torch.eye(batch, dtype=torch.bool, device=neg.device)
        if avoid_same_class:
            if labels is None:
                raise ValueError("avoid_same_class needs the class labels of the batch")
            keep &= labels[:, None] != labels[None, :]
    else:
        raise ValueError(f"negatives={negatives!r}: use 'one' (DSOL) or 'all'")
    weight = keep.to(pos.dtype)  # the mean over the kept pairs, without indexing (no wait for the device)
    count = weight.sum()
    loss_pos = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
    bce = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
    loss_neg = (bce * weight).sum() / count.clamp(min=1)
    loss = 0.5 * (loss_pos + loss_neg)
    with torch.no_grad():
        right = ((neg <= 0).to(pos.dtype) * weight).sum() / count.clamp(min=1)
        accuracy = 0.5 * ((pos > 0).to(pos.dtype).mean() + torch.where(count > 0, right, torch.ones_like(right)))
    return loss, {"loss": loss.detach(), "match_acc": accuracy, "negatives": count.detach()}


def quadrant_maxima(logit_maps: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` -> ``(B, 4)``: the max of each quadrant (a 2x2 scene holds four frames)."""
    return F.adaptive_max_pool2d(logit_maps.unsqueeze(1), 2).flatten(1)


def stage_two_kl(visual_logits: torch.Tensor, audio_probs: torch.Tensor) -> torch.Tensor:
    """``KL(audio || visual)`` averaged over the batch (``batchmean``; the original's ``reduce=True``
    also divides by the number of categories)."""
    return F.kl_div(F.log_softmax(visual_logits.float(), dim=1), audio_probs.float(), reduction="batchmean")


def stage_two_localization(net: DSOLStageOne, s1: StageOneOutput) -> torch.Tensor:
    """The BCE that keeps stage one's skill: own scene's global max -> 1; the audio against the next
    scene of the batch, pooled into its four quadrant maxima -> 0 each."""
    pos = net.logit_maps(s1.v_emb, s1.a_emb).amax(dim=(1, 2))
    partners = negative_partners(s1.a_emb.shape[0], device=s1.a_emb.device)
    neg = quadrant_maxima(net.logit_maps(s1.v_emb[partners], s1.a_emb)).flatten()
    return 0.5 * (F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
                  + F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg)))


def stage_two_loss(model: DSOLStageTwo, out: StageTwoOutput, audio_probs: torch.Tensor,
                   loc_weight: float = 0.5) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DSOL's stage-two objective. Notebook: 04_stage_two.

    The visual category distribution (softmax of the pooled class-aware maps) must match the
    frozen stage-one audio classifier's distribution on the mixture (``audio_probs``):
    ``stage_two_kl``; plus ``loc_weight`` x ``stage_two_localization``.
    """
    kl = stage_two_kl(out.visual_logits, audio_probs)
    loc = stage_two_localization(model.net, out.stage_one)
    loss = kl + loc_weight * loc
    with torch.no_grad():
        agree = (out.visual_logits.argmax(1) == audio_probs.argmax(1)).float().mean()
    return loss, {"loss": loss.detach(), "kl": kl.detach(), "loc": loc.detach(), "category_agreement": agree}
