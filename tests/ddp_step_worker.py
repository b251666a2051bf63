"""One training step of stage one on 2 gloo processes; run by tests/test_distributed.py under torchrun.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_step_worker.py OUT

Rank 0 saves the gradients of a localization step (DDP over the streams, embeddings gathered,
global BatchNorm) and of a pseudo-label step (DDP over backbones and heads) to OUT/grads.pt.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dsol_lite.distributed import Part, gather_with_grad, init_distributed, shard, sync_batchnorm, wrap
from dsol_lite.models import BackbonePair, DSOLStageOne
from dsol_lite.objectives import stage_one_loss


def tiny_model() -> DSOLStageOne:
    torch.manual_seed(0)
    return DSOLStageOne(BackbonePair(8), num_clusters=3)


def tiny_batch(batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch_size, 3, 64, 64, generator=g), torch.randn(batch_size, 1, 64, 48, generator=g),
            torch.randint(0, 3, (batch_size,), generator=g))


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def main(out: Path) -> None:
    ranks, device = init_distributed(torch.device("cpu"))
    images, mel, labels = tiny_batch()
    mine = shard(list(range(len(images))), ranks)

    model = sync_batchnorm(tiny_model(), device).train()
    streams = wrap(Part(model.encode, backbones=model.backbones, v_proj=model.v_proj, a_proj=model.a_proj,
                        scale=model.scale), device)
    enc = streams(images[mine], mel[mine])
    enc = dataclasses.replace(enc, v_emb=gather_with_grad(enc.v_emb), a_emb=gather_with_grad(enc.a_emb))
    loss, _ = stage_one_loss(model, enc, negatives="all")
    loss.backward()
    localize = grads(model)

    model.zero_grad(set_to_none=True)
    heads = wrap(Part(model.classify, backbones=model.backbones, v_classifier=model.v_classifier,
                      a_classifier=model.a_classifier), device)
    v_logits, a_logits = heads(images[mine], mel[mine])
    (F.cross_entropy(v_logits, labels[mine]) + F.cross_entropy(a_logits, labels[mine])).backward()
    classify = grads(model)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    if ranks.is_main:
        torch.save({"loss": loss.detach(), "localize": localize, "classify": classify, "running": running},
                   out / "grads.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
