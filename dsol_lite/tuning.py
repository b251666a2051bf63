"""An equal tuning budget: the same validation sweep for every method, then seeds of the choice.

Notebook: 06_method_comparison.

A comparison in which one method was tuned over many runs and the others run at their papers'
settings measures the tuning, not the methods. Here every method gets the same grid of
``len(TEMPERATURES) x len(MOSAIC)`` configurations, each trained once (seed 0) on the same budget
of steps:

* its **temperature**: a contrastive method's tau at its paper's value and at 0.2 (which suits
  small networks trained from scratch); DSOL learns its map scale, so its counterpart is how
  fast that scale learns (``dsol_scale_lr_mult`` 10 or 20);
* the **mosaic**: training frames seen four to a picture (``BackbonePair.visual``) or alone.

The configuration with the best validation IoU@0.5 (of its best epoch) is chosen, trained with
the remaining seeds, and only then scored on test (``comparison.compare_methods``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from dsol_lite.methods import PeerConfig, PeerTrainer, get_method

PAPER_TAU = {"ezvsl": 0.03, "fnac": 0.03, "alignment": 0.07, "avgn": 0.03}
TEMPERATURES = {method: (tau, 0.2) for method, tau in PAPER_TAU.items()} | {"dsol": (10.0, 20.0)}
MOSAIC = (False, True)


def sweep_grid(method: str, base: PeerConfig) -> dict[str, PeerConfig]:
    """The method's configurations by label (e.g. ``"tau0.2+mosaic"``), in a fixed order."""
    get_method(method)
    grid = {}
    for value in TEMPERATURES[method]:
        for mosaic in MOSAIC:
            if method == "dsol":
                label, change = f"scale-rate{value:g}x", {"dsol_scale_lr_mult": value}
            else:
                label, change = f"tau{value:g}", {"tau": value}
            label += "+mosaic" if mosaic else ""
            grid[label] = dataclasses.replace(base, method=method, mosaic=mosaic, **change).validate()
    return grid


def swept_settings(cfg: PeerConfig) -> dict[str, object]:
    """The values a sweep varies, as they were in ``cfg`` (None: the method's own tau)."""
    key = "dsol_scale_lr_mult" if cfg.method == "dsol" else "tau"
    return {key: getattr(cfg, key), "mosaic": cfg.mosaic}


def run_folder(runs: str | Path, method: str, label: str, seed: int) -> Path:
    return Path(runs) / method / f"{label}-s{seed}"


@dataclass
class Trial:
    """One configuration of the sweep and how it validated."""

    method: str
    label: str
    settings: dict
    best_val: float
    chosen: bool = False


def tune_method(world, runs: str | Path, method: str, base: PeerConfig, device: torch.device | None = None,
                seed: int = 0, progress: bool = True) -> tuple[PeerConfig, list[Trial]]:
    """Train every configuration of ``method``'s grid with ``seed`` (or resume, or reuse a finished
    run) and return the one with the best validation IoU@0.5, with the record of all. Ties go
    to the configuration listed first (the paper's temperature, no mosaic)."""
    trials, configs = [], {}
    for label, cfg in sweep_grid(method, base).items():
        cfg = dataclasses.replace(cfg, seed=seed)
        trainer = PeerTrainer(world, run_folder(runs, method, label, seed), cfg, device, progress)
        trainer.fit()
        trials.append(Trial(method, label, swept_settings(cfg), float(trainer.best)))
        configs[label] = cfg
    best = max(trials, key=lambda t: t.best_val)  # max keeps the first of equals
    best.chosen = True
    return configs[best.label], trials


def tuned_comparison(world, runs: str | Path, methods: list[str], seeds: list[int], base: PeerConfig,
                     device: torch.device | None = None, offscreen: str | Path | None = None,
                     robustness: dict[str, Path] | None = None, progress: bool = True) -> dict:
    """The whole comparison: each method's sweep on ``seeds[0]``, its chosen configuration trained
    with every seed, each run scored on the test split (``comparison.evaluate_method``) and, given
    ``robustness`` (variant -> test set, ``synth.variants``), on each robustness set. Returns
    ``{"sweep": [...], "chosen": {method: settings}, "rows": [...], "robustness": [...]}`` (one row
    per method and seed in ``rows`` and ``robustness``)."""
    from dsol_lite.comparison import evaluate_method
    from dsol_lite.robustness import evaluate_robustness

    for m in methods:
        get_method(m)  # fail before any training on a misspelt name
    sweep, chosen_settings, rows, robust = [], {}, [], []
    for method in methods:
        chosen, trials = tune_method(world, runs, method, base, device, seeds[0], progress)
        sweep += [dataclasses.asdict(t) for t in trials]
        label = next(t.label for t in trials if t.chosen)
        chosen_settings[method] = {"label": label} | dataclasses.asdict(chosen)
        for seed in seeds:
            cfg = dataclasses.replace(chosen, seed=seed)
            trainer = PeerTrainer(world, run_folder(runs, method, label, seed), cfg, device, progress)
            trainer.fit()
            model = trainer.load_best()
            head = {"method": method, "seed": seed, "config": label, "best_val_iou@0.5": float(trainer.best)}
            rows.append(head | evaluate_method(method, model, world, cfg.image_size, trainer.device, offscreen))
            if robustness:
                robust.append(head | evaluate_robustness(model, world, robustness, cfg.image_size, trainer.device))
    return {"sweep": sweep, "chosen": chosen_settings, "rows": rows, "robustness": robust}


def paper_vs_tuned(method: str, tuned: dict, paper: PeerConfig | None = None) -> dict[str, tuple]:
    """The settings in which ``tuned`` (a comparison file's ``chosen[method]``) differs from the
    published recipe (``PeerConfig()``'s defaults: DSOL's rate, batch and epochs on the real
    ResNet-18 at 224 px, with ImageNet weights, the method's own tau and FNAC's weights of 100):
    ``{setting: (published, tuned here)}``; settings of other methods are left out."""
    from dsol_lite.methods import _OWN_PREFIX

    paper = paper or PeerConfig(method=method, imagenet=True)
    others = tuple(p for m, p in _OWN_PREFIX.items() if m != method)
    moved = {}
    for field in dataclasses.fields(paper):
        name = field.name
        if name in ("method", "seed", "checkpoint_every", "prepared", "label") or name.startswith(others):
            continue
        before, after = getattr(paper, name), tuned.get(name)
        if name == "tau":
            before, after = before or PAPER_TAU.get(method), after or PAPER_TAU.get(method)
        after = tuple(after) if isinstance(after, list) else after
        if before != after:
            moved[name] = (before, after)
    return moved


__all__ = ["PAPER_TAU", "TEMPERATURES", "MOSAIC", "sweep_grid", "swept_settings", "run_folder", "Trial",
           "tune_method", "tuned_comparison", "paper_vs_tuned"]
