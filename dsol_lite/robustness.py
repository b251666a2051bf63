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
from typing import TYPE_CHECKING

import torch
from torch import nn

from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.schema import read_manifest
from dsol_lite.errors import ConfigError
from dsol_lite.evaluate import evaluate_single_source, localization_maps, mean_box_area
from dsol_lite.training import iterate, sequential_batches, to_device

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

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


SNR_AXIS = (("clean", "clean"), ("noise20", "20 dB"), ("noise10", "10 dB"), ("noise0", "0 dB"))


def robustness_figure(rows: list[dict], title: str = "") -> "plt.Figure":
    """Left: IoU@0.5 against the noise level, one line per method (mean over its rows, bars: the
    spread over seeds); right: the off-screen score and the silent alarm per method."""
    import matplotlib.pyplot as plt
    import numpy as np

    from dsol_lite.methods import get_method

    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(SNR_AXIS))
    for m in methods:
        runs = [r for r in rows if r["method"] == m]
        values = np.array([[r[f"{v}_iou@0.5"] for v, _ in SNR_AXIS] for r in runs])
        spread = values.std(0, ddof=1) if len(runs) > 1 else None
        left.errorbar(x, values.mean(0), yerr=spread, marker="o", capsize=3, label=get_method(m).title)
    left.set_xticks(x, [name for _, name in SNR_AXIS])
    left.set_xlabel("background noise (SNR)")
    left.set_ylabel("test solo IoU@0.5")
    left.set_ylim(0, 1)
    left.legend(fontsize=8)
    left.set_title(title or "scores as the noise grows")
    width = 0.38
    for j, (key, name) in enumerate((("offscreen_iou@0.5", "IoU@0.5 with an off-screen instrument"),
                                     ("silent_alarm", "silent alarm (lower is better)"))):
        means = [np.mean([r[key] for r in rows if r["method"] == m]) for m in methods]
        right.bar(np.arange(len(methods)) + (j - 0.5) * width, means, width, label=name)
    right.set_xticks(np.arange(len(methods)), [get_method(m).title.split(" (")[0] for m in methods], rotation=20,
                     ha="right", fontsize=8)
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


__all__ = ["CLEAN_DETECTION", "SNR_AXIS", "robustness_figure", "robustness_sets", "evidence", "silent_alarm",
           "evaluate_robustness"]
