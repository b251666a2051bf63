"""One training step of stage one on 2 gloo processes; run by tests/test_distributed.py under torchrun.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_step_worker.py OUT

Rank 0 saves the gradients of a localization step (DDP over the streams, embeddings gathered,
global BatchNorm), of a pseudo-label step (DDP over backbones and heads) and of a stage-two step
(KL on each rank's scenes, localization over the gathered batch) to OUT/grads.pt.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from dsol_lite.distributed import (classifier_part, gather_with_grad, init_distributed, shard, stage_two_part,
                                   streams_part, sync_batchnorm, wrap)
from dsol_lite.models import BackbonePair, DSOLStageOne, DSOLStageTwo
from dsol_lite.objectives import stage_one_loss
from dsol_lite.stage_two import distributed_stage_two_loss


def tiny_model() -> DSOLStageOne:
    torch.manual_seed(0)
    return DSOLStageOne(BackbonePair(8), num_clusters=3)


def tiny_stage_two() -> DSOLStageTwo:
    net = tiny_model()
    dictionary = torch.randn(3, net.backbones.channels, generator=torch.Generator().manual_seed(2))
    return DSOLStageTwo(net, dictionary)


def tiny_audio_probs(batch_size: int = 8) -> torch.Tensor:
    return torch.softmax(torch.randn(batch_size, 3, generator=torch.Generator().manual_seed(3)), dim=1)


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
    streams = wrap(streams_part(model), device)
    enc = streams(images[mine], mel[mine])
    enc = dataclasses.replace(enc, v_emb=gather_with_grad(enc.v_emb), a_emb=gather_with_grad(enc.a_emb))
    loss, _ = stage_one_loss(model, enc, negatives="all")
    loss.backward()
    localize = grads(model)

    model.zero_grad(set_to_none=True)
    heads = wrap(classifier_part(model), device)
    v_logits, a_logits = heads(images[mine], mel[mine])
    (F.cross_entropy(v_logits, labels[mine]) + F.cross_entropy(a_logits, labels[mine])).backward()
    classify = grads(model)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    two = sync_batchnorm(tiny_stage_two(), device).train()
    probs = tiny_audio_probs()
    ddp = wrap(stage_two_part(two), device)  # kept alive until after backward: its hooks average the gradients
    loss2, _ = distributed_stage_two_loss(ddp, two, images[mine], mel[mine], probs[mine])
    loss2.backward()
    if ranks.is_main:
        torch.save({"loss": loss.detach(), "localize": localize, "classify": classify, "running": running,
                    "stage_two": grads(two)}, out / "grads.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
