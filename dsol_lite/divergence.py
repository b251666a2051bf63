"""Why one training run is one draw: two copies of stage one, one nudged by a rounding-sized
amount, trained on the same batches.

Notebook: 02_stage_one (section 8).

Adam's first update of a weight is ``lr * g / (|g| + eps)``, about ``lr * sign(g)``: every weight
moves by the full learning rate, however small its gradient. A gradient component so close to
zero that float rounding decides its sign (the thread count, the memory layout or the CPU
changes the order of a sum) therefore moves its weight by ``2 * lr`` the other way. Those
differences feed the next step's gradients, and two runs that differ in the seventh digit drift
apart by orders of magnitude within a few steps. A long run then ends somewhere else, which is
why the README reports several seeds and calls their spread the result.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from dsol_lite.models.dsol import DSOLStageOne
from dsol_lite.objectives import stage_one_loss
from dsol_lite.stage_one import StageOneConfig, set_stage_one_lr, stage_one_optimizer
from dsol_lite.training import to_device


@dataclass
class TwinRuns:
    """Two copies of a model trained on the same batches, one nudged before the first step."""

    losses: tuple[list[float], list[float]]  # per step: the reference copy, the nudged copy
    distance: list[float]  # ||w_reference - w_nudged|| over all weights, before training and after each step
    weight_norm: float  # ||w|| of the reference copy before training, for scale
    first_step_flips: int  # weights whose first gradient has opposite signs in the two copies
    num_trained: int  # weights the loss gives a gradient (the pseudo-label heads get none)


def nudge_(model: nn.Module, relative: float, seed: int = 0) -> nn.Module:
    """Multiply every parameter by ``1 + relative * N(0, 1)``, in place (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + relative * torch.randn(p.shape, generator=generator).to(p))
    return model


def _flat(model: nn.Module) -> torch.Tensor:
    return parameters_to_vector(model.parameters()).detach()


def twin_runs(model: DSOLStageOne, batches: list[dict[str, torch.Tensor]], log_mel: nn.Module,
              cfg: StageOneConfig, relative: float = 1e-7, seed: int = 0,
              device: torch.device = torch.device("cpu")) -> TwinRuns:
    """Train two copies of ``model`` (left unchanged) with stage one's loss and optimizer at the
    first epoch's rates, on the same ``batches`` (collated items of ``SoloPairs``), in float32 on
    ``device``; the second copy is first nudged by ``relative`` (``nudge_``). ``relative=0`` gives
    two identical runs on a CPU (a GPU's kernels need not repeat themselves)."""
    twins = [copy.deepcopy(model).to(device).train(), nudge_(copy.deepcopy(model).train(), relative, seed).to(device)]
    optimizers = [stage_one_optimizer(m, cfg) for m in twins]
    for opt in optimizers:
        set_stage_one_lr(opt, cfg.lr)
    losses: tuple[list[float], list[float]] = ([], [])
    distance = [float((_flat(twins[0]) - _flat(twins[1])).norm())]
    first_grads: list[torch.Tensor] = []
    for step, batch in enumerate(batches):
        batch = to_device(batch, device)
        for m, opt, record in zip(twins, optimizers, losses):
            out = m.encode(batch["image"], log_mel(batch["audio"]), cfg.mosaic)
            loss, _ = stage_one_loss(m, out, batch["label"], cfg.avoid_same_class, cfg.negatives)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if step == 0:
                first_grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
            opt.step()
            record.append(loss.item())
        distance.append(float((_flat(twins[0]) - _flat(twins[1])).norm()))
    flips = int((first_grads[0].sign() != first_grads[1].sign()).sum()) if first_grads else 0
    trained = first_grads[0].numel() if first_grads else 0
    return TwinRuns(losses, distance, float(_flat(model).norm()), flips, trained)
