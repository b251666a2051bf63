"""The test split of a world, re-rendered with harder audio: robustness test sets.

Notebook: 06_method_comparison (how each method copes with noise, off-screen sound and silence).

Every variant keeps the test split's pictures, masks and boxes exactly (the same seed and scene
plans; only the audio, and for ``silent`` the sounding flags, change):

* ``clean``: the test split as the world has it;
* ``noise20``, ``noise10``, ``noise0``: background noise at 20, 10 and 0 dB below the objects' sound;
* ``offscreen``: every scene also hears an instrument that is not in view;
* ``silent``: no object sounds (the audio is all zeros): a good method lights up nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dsol_lite.errors import ConfigError
from dsol_lite.synth.config import WorldConfig

ROBUSTNESS_VARIANTS: dict[str, dict] = {
    "clean": {},
    "noise20": {"noise_snr_db": 20.0},
    "noise10": {"noise_snr_db": 10.0},
    "noise0": {"noise_snr_db": 0.0},
    "offscreen": {"offscreen_prob": 1.0},
    "silent": {"silent": True},
}


def robustness_config(cfg: WorldConfig, variant: str) -> WorldConfig:
    """The configuration of ``variant`` of ``cfg``'s test split: no training or validation scenes."""
    if variant not in ROBUSTNESS_VARIANTS:
        raise ConfigError(f"variant={variant!r}: choose one of {', '.join(ROBUSTNESS_VARIANTS)}")
    if cfg.noise_snr_db is not None or cfg.offscreen_prob or cfg.silent:
        raise ConfigError(f"world {cfg.name!r} already has noise, off-screen sound or silence; the variants "
                          f"start from a world whose objects alone are heard")
    counts = {kind: (0, 0, split_counts[2]) for kind, split_counts in cfg.counts.items()}
    return dataclasses.replace(cfg, name=f"{cfg.name}-test-{variant}", counts=counts,
                               **ROBUSTNESS_VARIANTS[variant]).validate()


def render_robustness_set(cfg: WorldConfig, out: str | Path, variant: str, workers: int | None = None,
                          progress: bool = True) -> Path:
    """Write ``variant`` of ``cfg``'s test split to ``out`` (reused when it is already there)."""
    from dsol_lite.synth.writer import generate_world  # the variants' names alone need no writer

    return generate_world(robustness_config(cfg, variant), out, workers=workers, progress=progress)


__all__ = ["ROBUSTNESS_VARIANTS", "robustness_config", "render_robustness_set"]
