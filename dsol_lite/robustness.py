"""How a trained network copes with harder audio: noise, an off-screen instrument, silence.

Notebook: 06_method_comparison.

The robustness test sets (``synth.variants``) are the world's test split with its pictures and
boxes unchanged and only the audio re-rendered, so any change in score is the audio's doing:

* noise at 20, 10 and 0 dB SNR and an off-screen instrument: DSOL's single-source IoU@0.5 on
  the solo scenes, as on the clean split;
* silence: there is nothing to localize, so the question is whether the network still claims
  a source. Each network's *evidence* (``model.evidence``: the peak of DSOL's sigmoid map, the
  highest audio-location cosine of a contrastive method, AVGN's highest class presence) is set a
  threshold that 95 % of the clean solo scenes reach; ``silent_alarm`` is the fraction of silent
  solo scenes that reach it too (lower is better; 0.95 means silence looks like sound).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.schema import read_manifest
from dsol_lite.errors import ConfigError
from dsol_lite.evaluate import evaluate_single_source, localization_maps, mean_box_area
from dsol_lite.training import iterate, sequential_batches, to_device

CLEAN_DETECTION = 0.95  # the fraction of clean scenes whose evidence reaches the silence threshold


def robustness_sets(world: str | Path, folder: str | Path, variants: tuple[str, ...] | None = None,
                    progress: bool = False) -> dict[str, Path]:
    """Render (or reuse) the robustness test sets of a synthetic ``world`` into ``folder/<variant>``."""
    from dsol_lite.synth.config import WorldConfig
    from dsol_lite.synth.variants import ROBUSTNESS_VARIANTS, render_robustness_set

    manifest = read_manifest(world)
    if manifest.source.get("type") != "synthetic" or "config" not in manifest.source:
        raise ConfigError(f"{world}: robustness sets re-render a synthetic world's test split; this dataset is "
                          f"{manifest.source.get('type', 'not synthetic')}")
    cfg = WorldConfig.from_dict(manifest.source["config"])
    return {v: render_robustness_set(cfg, Path(folder) / v, v, progress=progress)
            for v in (variants or tuple(ROBUSTNESS_VARIANTS))}


@torch.no_grad()
def evidence(model: nn.Module, world: str | Path, image_size: int, device: torch.device,
             batch_size: int = 64) -> torch.Tensor:
    """``model.evidence`` of every test solo scene of ``world``, ``(N,)`` on the CPU."""
    model.eval()
    scenes = MultiSourceScenes(world, "test", kinds=("solo",), image_size=image_size, device=device, masks=False)
    log_mel, parts = LogMel(AudioConfig()).to(device), []
    for batch in iterate(scenes, sequential_batches(len(scenes), batch_size)):
        batch = to_device(batch, device)
        parts.append(model.evidence(batch["image"], log_mel(batch["audio"])).float().cpu())
    return torch.cat(parts)


def silent_alarm(clean: torch.Tensor, silent: torch.Tensor, detection: float = CLEAN_DETECTION) -> dict[str, float]:
    """The threshold that ``detection`` of the ``clean`` scenes' evidence reaches, and the fraction
    of ``silent`` scenes whose evidence reaches it."""
    threshold = float(torch.quantile(clean.double(), 1 - detection))
    return {"silent_threshold": threshold, "silent_alarm": float((silent >= threshold).double().mean())}


def evaluate_robustness(model: nn.Module, world: str | Path, sets: dict[str, Path], image_size: int,
                        device: torch.device) -> dict[str, float]:
    """``<variant>_iou@0.5`` on every set but ``silent`` and, with it, ``silent_alarm``."""
    log_mel, row = LogMel(AudioConfig()).to(device), {}
    for variant, path in sets.items():
        if variant == "silent":
            continue
        solo = SoloPairs(path, "test", image_size=image_size, device=device)
        maps, gt = localization_maps(model, solo, log_mel, device)
        row[f"{variant}_iou@0.5"] = evaluate_single_source(maps, gt, mean_box_area(solo))["model"]["dsol_iou@0.5"]
    if "silent" in sets:
        clean = evidence(model, sets.get("clean", world), image_size, device)
        row |= silent_alarm(clean, evidence(model, sets["silent"], image_size, device))
    return {k: float(v) for k, v in row.items()}


__all__ = ["CLEAN_DETECTION", "robustness_sets", "evidence", "silent_alarm", "evaluate_robustness"]
