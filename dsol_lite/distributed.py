"""Training on several GPUs (or CPU processes) with ``torchrun``: one global batch, split over ranks.

Notebook: 07_real_data_music (full training). Launch, for example::

    torchrun --nproc_per_node 4 -m dsol_lite.cli run --preset music --world data/music
    torchrun --nproc_per_node 4 -m dsol_lite.cli stage-one data/music runs/music/stage_one --preset full

Each of the ``W`` processes (*ranks*) loads ``1/W`` of every global batch and runs the two
streams on it; the run as a whole computes what one process computes on the global batch:

* **Negatives span the global batch.** Stage one's loss pairs every audio with frames of *other*
  clips, stage two's localization term with the next scene's quadrants. The embeddings are
  gathered from all ranks with an autograd-aware ``all_gather`` (``gather_with_grad``), so every
  rank computes the same loss over the global batch and the gradient flows back to the rank that
  made each embedding. (Stage two's KL term is per scene: each rank's own mean, averaged by DDP.)
* **BatchNorm statistics span the global batch.** With per-rank statistics (what
  ``nn.DataParallel`` and plain DDP do) the result depends on the number of GPUs. CUDA uses
  ``nn.SyncBatchNorm``; it does not run on CPU, so CPU processes (the gloo backend, used by the
  tests) use ``GlobalBatchNorm2d``, the same computation in a few lines.
* **Gradients are averaged** by ``DistributedDataParallel``. Every collective in the backward
  pass sums the gradients of all ranks' losses, and DDP divides by ``W``: the step equals the
  single-process step on the global batch.
* **k-means sees every clip.** Each rank extracts the object features of its share of the
  training clips; ``gather_rows`` puts them together in clip order, rank 0 clusters and
  broadcasts the assignment.

Rank 0 alone writes checkpoints, logs and progress bars, and validates (the val split is small);
the others wait for it (``wait_for_main``) before they read a file it wrote.
A DDP wrapper must outlive the backward pass of its forward: its hooks average the gradients.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn

from dsol_lite.errors import ConfigError


@dataclass(frozen=True)
class Ranks:
    """Who this process is in a ``torchrun`` launch (``Ranks()`` = a single process)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This rank's GPU when training on CUDA (``cuda:<local rank>``), else ``device`` unchanged."""
        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device


def launched_ranks() -> Ranks:
    """The ranks ``torchrun`` set in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    try:
        return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers ({err})") from None


def init_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group of a ``torchrun`` launch (NCCL on CUDA, gloo otherwise).

    Returns the ranks and this rank's device; without ``torchrun`` nothing happens.
    """
    ranks = launched_ranks()
    if not ranks.enabled:
        return ranks, device
    device = ranks.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.get_world_size() != ranks.world_size:
        raise ConfigError(f"WORLD_SIZE={ranks.world_size} but the process group has {dist.get_world_size()} ranks")
    return ranks, device


@contextmanager
def distributed_run(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """``init_distributed`` for the length of a command; the process group is closed at the end."""
    try:
        yield init_distributed(device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def check_batch_size(batch_size: int, ranks: Ranks, per_rank_multiple: int = 1, why: str = "") -> None:
    """A global batch must split evenly over the ranks, into shares that are multiples of
    ``per_rank_multiple`` (``why`` says what needs them: stage one's mosaic tiles four frames)."""
    if batch_size % ranks.world_size:
        raise ConfigError(f"batch_size={batch_size} cannot be split evenly over {ranks.world_size} processes: "
                          f"use a batch size divisible by the number of processes")
    if (batch_size // ranks.world_size) % per_rank_multiple:
        reason = f" ({why})" if why else ""
        raise ConfigError(f"batch_size={batch_size} over {ranks.world_size} processes: each process's share must be "
                          f"a multiple of {per_rank_multiple}{reason}, so use a multiple of "
                          f"{per_rank_multiple * ranks.world_size}")


def shard(batch: list[int], ranks: Ranks) -> list[int]:
    """This rank's contiguous share of a global batch (gathering in rank order restores the batch)."""
    check_batch_size(len(batch), ranks)
    per_rank = len(batch) // ranks.world_size
    return batch[ranks.rank * per_rank:(ranks.rank + 1) * per_rank]


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous: gloo's collectives read the raw
    memory of the gradients they exchange, and a transposed one (e.g. from ``einsum``) comes out
    scrambled without any error (the all-to-all behind ``all_gather``'s backward, torch 2.11;
    pytorch/pytorch#192920 reports the same for gloo's scatter, broadcast and reduce)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.contiguous()


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (same shape on each) along dim 0; gradients flow back to
    each rank's own part (summed over the ranks' losses)."""
    return _ContiguousGrad.apply(torch.cat(dist_nn.all_gather(x.contiguous()), dim=0))


@torch.no_grad()
def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order; ranks may hold different numbers of rows."""
    world = dist.get_world_size()
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    most = int(max(c.item() for c in counts))
    padded = torch.zeros((most, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:int(c.item())] for p, c in zip(parts, counts)])


def broadcast_from_main(x: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``x`` on every rank (same shape and dtype everywhere)."""
    x = x.contiguous()
    dist.broadcast(x, src=0)
    return x


def wait_for_main(ranks: Ranks) -> None:
    """Every rank waits here until rank 0 arrives: what rank 0 wrote before (``best.pt``,
    ``dictionary.pt``) is then on disk for the others to read. No-op in one process."""
    if ranks.enabled:
        dist.barrier()


def mean_over_ranks(values: dict[str, torch.Tensor | float], device: torch.device) -> dict[str, torch.Tensor]:
    """Average logged numbers (0-d tensors or floats) over the ranks (each rank saw a different share
    of the batch); 0-d tensors on ``device`` come back, nothing is read on the host."""
    keys = sorted(values)
    t = torch.stack([torch.as_tensor(values[k], device=device).double() for k in keys])
    dist.all_reduce(t)
    return dict(zip(keys, (t / dist.get_world_size()).unbind()))


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch (every rank's mean and
    variance, gathered and combined); in eval mode, and in a single process, plain ``BatchNorm2d``.

    The CPU counterpart of ``nn.SyncBatchNorm`` (which needs a GPU); same state, so checkpoints
    move freely between one and several processes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        # each rank's mean and variance (two-pass, precise), combined over the ranks with the
        # parallel-variance formula: one collective, no cancellation from E[x^2] - E[x]^2
        c = x.shape[1]
        var_r, mean_r = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
        local = torch.stack([mean_r, var_r, mean_r.new_full((c,), x.numel() / c)])
        mean_r, var_r, n_r = gather_with_grad(local[None]).unbind(1)  # each (ranks, C)
        n = n_r.sum(0)
        mean = (n_r * mean_r).sum(0) / n
        var = (n_r * (var_r + (mean_r - mean) ** 2)).sum(0) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1), m)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` computes global-batch statistics (in place; returns it)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm2d:
                bn = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats, device=device)
                bn.load_state_dict(child.state_dict())
                if child.affine:  # the same Parameter objects: an optimizer made earlier still sees them
                    bn.weight, bn.bias = child.weight, child.bias
                setattr(parent, name, bn)
    return model


class Part(nn.Module):
    """Some of a model's submodules and parameters, with one of its methods as ``forward``.

    ``DistributedDataParallel`` synchronises the parameters of the module it wraps and expects a
    gradient for each of them every step; wrapping exactly what a phase trains (stage one's
    streams while localizing, backbones and heads while classifying) keeps that true without
    ``find_unused_parameters`` and its graph walk.
    """

    def __init__(self, method, **members: nn.Module | nn.Parameter) -> None:
        super().__init__()
        for name, member in members.items():
            setattr(self, name, member)
        self.method = method  # a bound method of the full model (not a submodule)

    def forward(self, *args: torch.Tensor):
        return self.method(*args)


def streams_part(model: nn.Module) -> Part:
    """Stage one's localization phase: ``encode`` with both streams, projections and the map's scale."""
    return Part(model.encode, backbones=model.backbones, v_proj=model.v_proj, a_proj=model.a_proj, scale=model.scale)


def classifier_part(model: nn.Module) -> Part:
    """Stage one's pseudo-label phase: ``classify`` with the backbones and both heads."""
    return Part(model.classify, backbones=model.backbones, v_classifier=model.v_classifier,
                a_classifier=model.a_classifier)


def stage_two_part(model: nn.Module) -> Part:
    """Stage two: the whole network except stage one's pseudo-label heads (not trained there)."""
    net = model.net
    return Part(model.forward, backbones=net.backbones, v_proj=net.v_proj, a_proj=net.a_proj, scale=net.scale,
                obj_weight=model.obj_weight, obj_bias=model.obj_bias)


def wrap(part: Part, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """DDP over ``part`` (buffers are not broadcast: BatchNorm statistics are global already)."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(part, device_ids=ids, broadcast_buffers=False)


__all__ = ["Ranks", "launched_ranks", "init_distributed", "distributed_run", "check_batch_size", "shard",
           "gather_with_grad", "gather_rows", "broadcast_from_main", "wait_for_main", "mean_over_ranks",
           "GlobalBatchNorm2d", "sync_batchnorm", "Part", "streams_part", "classifier_part", "stage_two_part", "wrap"]
