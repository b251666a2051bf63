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

Every configuration trains the first ``sweep_epochs`` epochs of its full run (``SWEEP_FRACTION``
of them, the same steps, rates and warm-ups; a one-rung successive halving). The configuration
with the best validation IoU@0.5 so far is chosen; its seed-0 run goes on to the last epoch, it
is trained with the remaining seeds, and only then scored on test (``evaluate_method``). The
others stop there: tuning then adds about 1.1 full runs per method (three configurations at 3/8 of
a run) to the three seeds' training, instead of 3 when every configuration trains to the end.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from dsol_lite.errors import ConfigError
from dsol_lite.methods import PeerConfig, PeerTrainer, get_method

PAPER_TAU = {"ezvsl": 0.03, "fnac": 0.03, "alignment": 0.07, "avgn": 0.03}
TEMPERATURES = {method: (tau, 0.2) for method, tau in PAPER_TAU.items()} | {"dsol": (10.0, 20.0)}
MOSAIC = (False, True)
# the share of a run's epochs that every configuration trains before the choice: 3 of the quick
# preset's 8. On the logs of full-length sweeps of all five methods the choice after 3 epochs was
# the choice after 8 for four methods, and for the fifth within a point of validation (docs/results.md)
SWEEP_FRACTION = 3 / 8


def sweep_epochs(base: PeerConfig) -> int:
    """How many epochs each configuration trains before the choice: ``SWEEP_FRACTION`` of the run
    rounded up, at least one epoch past FNAC's warm-up (for every method, so that the budget is the
    same and FNAC's sweep sees its own terms), and at most the whole run."""
    return min(base.epochs, max(math.ceil(SWEEP_FRACTION * base.epochs), base.fnac_warmup_epochs + 1))


def check_sweep_epochs(epochs: int, base: PeerConfig, name: str = "sweep epochs") -> int:
    """``epochs`` if a sweep can train that many epochs per configuration of runs like ``base``
    (between 1 and the run's own epochs); otherwise a ``ConfigError`` naming ``name``."""
    if not 1 <= epochs <= base.epochs:
        raise ConfigError(f"{name} {epochs}: the sweep's epochs per configuration, between 1 and the run's "
                          f"{base.epochs} epochs")
    return epochs


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
    """One configuration of the sweep and how it validated (``best_val``: its best validation
    IoU@0.5 over its first ``epochs`` epochs; ``seconds``: what training them took in this call)."""

    method: str
    label: str
    settings: dict
    best_val: float
    epochs: int
    seconds: float = 0.0
    chosen: bool = False


def best_val_within(trainer: PeerTrainer, epochs: int) -> float:
    """The best validation IoU@0.5 of the run's first ``epochs`` epochs, read from its log (the
    same for a run stopped there and for one trained further)."""
    scores = [r["val_iou@0.5"] for r in trainer.log.read() if r.get("phase") == "validate" and r["epoch"] < epochs]
    if not scores:
        raise RuntimeError(f"{trainer.run_dir}: no validation of the first {epochs} epochs in its log")
    return float(max(scores))


def tune_method(world, runs: str | Path, method: str, base: PeerConfig, device: torch.device | None = None,
                seed: int = 0, progress: bool = True, epochs: int | None = None) -> tuple[PeerConfig, list[Trial]]:
    """Train the first ``epochs`` (default ``sweep_epochs(base)``) of every configuration of
    ``method``'s grid with ``seed`` (or resume, or reuse a run that went further) and return the one
    with the best validation IoU@0.5 so far, with the record of all. Ties go to the configuration
    listed first (the paper's temperature, no mosaic)."""
    epochs = sweep_epochs(base) if epochs is None else check_sweep_epochs(epochs, base)
    trials, configs = [], {}
    for label, cfg in sweep_grid(method, base).items():
        cfg = dataclasses.replace(cfg, seed=seed)
        start = time.perf_counter()
        trainer = PeerTrainer(world, run_folder(runs, method, label, seed), cfg, device, progress)
        trainer.fit(until_epoch=epochs)
        seconds = round(time.perf_counter() - start, 1)
        trials.append(Trial(method, label, swept_settings(cfg), best_val_within(trainer, epochs), epochs, seconds))
        configs[label] = cfg
    best = max(trials, key=lambda t: t.best_val)  # max keeps the first of equals
    best.chosen = True
    return configs[best.label], trials


def tuned_comparison(world, runs: str | Path, methods: list[str], seeds: list[int], base: PeerConfig,
                     device: torch.device | None = None, offscreen: str | Path | None = None,
                     robustness: dict[str, Path] | None = None, progress: bool = True,
                     epochs: int | None = None) -> dict:
    """The whole comparison: each method's sweep on ``seeds[0]`` (``tune_method``, ``epochs`` each),
    its chosen configuration trained to the end with every seed (the sweep's seed-0 run goes on
    where it stopped), each run scored on the test split (``comparison.evaluate_method``) and, given
    ``robustness`` (variant -> test set, ``synth.variants``), on each robustness set. Returns
    ``{"sweep_epochs": n, "sweep": [...], "chosen": {method: settings}, "rows": [...], "robustness": [...]}``
    (one row per method and seed in ``rows`` and ``robustness``). Seconds spent in this call: each
    trial's ``seconds`` (its first epochs), each row's ``train_seconds`` (training to the end and
    loading the best checkpoint; for seed 0, the epochs after the sweep) and ``score_seconds`` (the
    test split and the robustness sets); a run reused from an earlier call costs nothing here."""
    from dsol_lite.comparison import evaluate_method
    from dsol_lite.robustness import evaluate_robustness

    for m in methods:
        get_method(m)  # fail before any training on a misspelt name
    epochs = sweep_epochs(base) if epochs is None else epochs  # tune_method checks it before any training
    sweep, chosen_settings, rows, robust = [], {}, [], []
    for method in methods:
        chosen, trials = tune_method(world, runs, method, base, device, seeds[0], progress, epochs)
        sweep += [dataclasses.asdict(t) for t in trials]
        label = next(t.label for t in trials if t.chosen)
        chosen_settings[method] = {"label": label} | dataclasses.asdict(chosen)
        for seed in seeds:
            cfg = dataclasses.replace(chosen, seed=seed)
            start = time.perf_counter()
            trainer = PeerTrainer(world, run_folder(runs, method, label, seed), cfg, device, progress)
            trainer.fit()
            model = trainer.load_best()
            trained = time.perf_counter()
            head = {"method": method, "seed": seed, "config": label, "best_val_iou@0.5": float(trainer.best)}
            row = evaluate_method(method, model, world, cfg.image_size, trainer.device, offscreen)
            if robustness:
                robust.append(head | evaluate_robustness(model, world, robustness, cfg.image_size, trainer.device))
            scored = time.perf_counter()
            rows.append(head | row | {"train_seconds": round(trained - start, 1),
                                      "score_seconds": round(scored - trained, 1)})
    return {"sweep_epochs": epochs, "sweep": sweep, "chosen": chosen_settings, "rows": rows, "robustness": robust}


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


__all__ = ["PAPER_TAU", "TEMPERATURES", "MOSAIC", "SWEEP_FRACTION", "sweep_epochs", "check_sweep_epochs",
           "sweep_grid", "swept_settings", "run_folder", "Trial", "best_val_within", "tune_method", "tuned_comparison",
           "paper_vs_tuned"]
