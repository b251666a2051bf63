"""Every method on the same world, backbone and metrics: training over seeds and one table.

Notebook: 06_method_comparison; ``dsol-lite run --method NAME`` (``run_method``).

Columns, each named by its protocol:

* single source (test solo scenes, half with a silent distractor): DSOL IoU@0.5 / AUC and
  EZ-VSL cIoU@0.5 / AUC of the class-agnostic map;
* silent objects (test cocktail scenes): IoU of the map (> 0.5 x max) with the sounding
  objects, and how much of the silent objects it covers (lower is better);
* off-screen sound (solo scenes whose audio also holds a sound from an object not in view):
  DSOL IoU@0.5 again;
* multi source (test cocktail scenes), only for networks with one map per source: DSOL
  CIoU@0.3 / AUC / NSA and AVGN-style CAP / PIAP. The others get the reason instead of a number.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dsol_lite.config import default_device
from dsol_lite.data.audio import AudioConfig, LogMel
from dsol_lite.data.datasets import MultiSourceScenes, SoloPairs
from dsol_lite.data.schema import MANIFEST_FILE
from dsol_lite.errors import ConfigError
from dsol_lite.folders import exclusive, write_text
from dsol_lite.evaluate import evaluate_single_source, localization_maps, mean_box_area
from dsol_lite.methods import PEER_PRESETS, PeerConfig, PeerTrainer, get_method
from dsol_lite.metrics import avgn_multi_source, dsol_multi_source, silent_object_scores, upsample
from dsol_lite.training import iterate, sequential_batches, to_device


def offscreen_world(path: str | Path, scenes: int = 100, progress: bool = False) -> Path:
    """A test-only world of solo scenes that each also hear one object that is not in view."""
    from dsol_lite.synth.config import preset
    from dsol_lite.synth.writer import generate_world

    path = Path(path)
    if (path / MANIFEST_FILE).exists():
        return path
    cfg = dataclasses.replace(preset("quick", seed=11, counts={"solo": (0, 0, scenes)}, offscreen_prob=1.0),
                              name="quick-offscreen")
    return generate_world(cfg, path, progress=progress)


@torch.no_grad()
def scene_maps(model: nn.Module, dataset: MultiSourceScenes, log_mel: LogMel, device: torch.device,
               per_source: bool = False, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """One pass over multi-source scenes: class-agnostic ``maps (N, h, w)`` and, with ``per_source``
    (AVGN only), per-class maps ``(N, K, h, w)`` of the predicted classes (``class_maps``) and of
    the true ones (``class_maps_gt``), from one encoding; ground truth ``class_boxes`` (sounding
    only), ``sounding_mask``, ``silent_mask`` and ``sounding``."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for batch in iterate(dataset, sequential_batches(len(dataset), batch_size)):
        batch = to_device(batch, device)
        mel = log_mel(batch["audio"])
        boxes, heard = batch["class_boxes"] > 0.5, batch["sounding"][:, :, None, None] > 0
        out = {"class_boxes": boxes & heard, "sounding": batch["sounding"],
               "sounding_mask": (boxes & heard).any(1), "silent_mask": (boxes & ~heard).any(1)}
        if per_source:
            encoded = model.encode(batch["image"], mel)
            out |= {"maps": model.agnostic_map(encoded), "class_maps": model.source_maps(encoded),
                    "class_maps_gt": model.source_maps(encoded, batch["sounding"])}
        else:
            out["maps"] = model(batch["image"], mel)
        for k, v in out.items():
            parts.setdefault(k, []).append(v.float().cpu() if v.is_floating_point() else v.cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def _multi_source(maps: dict[str, torch.Tensor]) -> dict[str, float]:
    size = maps["class_boxes"].shape[-1]
    n, k = maps["class_maps"].shape[:2]
    up = upsample(maps["class_maps"].flatten(0, 1), size).view(n, k, size, size)
    dsol = dsol_multi_source(up, maps["class_boxes"], maps["sounding"])
    avgn = avgn_multi_source(up, maps["class_boxes"], maps["sounding"])
    return {"ciou@0.3": dsol["ciou@0.3"], "auc": dsol["auc"], "nsa": dsol["nsa"], "cap": avgn["cap"],
            "piap": avgn["piap"]}


def evaluate_method(method: str, model: nn.Module, world: str | Path, image_size: int,
                    device: torch.device | None = None, offscreen: str | Path | None = None,
                    solo_maps: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Every column of the comparison for one trained network (test splits only); ``solo_maps``:
    the test solo maps and masks when the caller has them already (``localization_maps``)."""
    device = device or default_device()
    log_mel = LogMel(AudioConfig()).to(device)
    solo = SoloPairs(world, "test", image_size=image_size, device=device)
    maps, gt = solo_maps if solo_maps is not None else localization_maps(model, solo, log_mel, device)
    single = evaluate_single_source(maps, gt, mean_box_area(solo))
    row = {k: single["model"][k] for k in ("dsol_iou@0.5", "dsol_auc", "ezvsl_ciou@0.5", "ezvsl_auc")}
    row["centre_prior_iou@0.5"] = single["centre prior"]["dsol_iou@0.5"]
    cocktail = MultiSourceScenes(world, "test", kinds=("cocktail",), image_size=image_size, device=device)
    reason = get_method(method).per_source
    scenes = scene_maps(model, cocktail, log_mel, device, per_source=not reason)
    size = scenes["sounding_mask"].shape[-1]
    silent = silent_object_scores(upsample(scenes["maps"], size), scenes["sounding_mask"], scenes["silent_mask"])
    row["silent_sounding_iou"], row["silent_coverage"] = silent["sounding_iou"], silent["silent_coverage"]
    if offscreen is not None:
        off = SoloPairs(offscreen, "test", image_size=image_size, device=device)
        off_maps, off_gt = localization_maps(model, off, log_mel, device)
        row["offscreen_iou@0.5"] = evaluate_single_source(off_maps, off_gt, mean_box_area(off))["model"]["dsol_iou@0.5"]
    if reason:
        row["multi_source"] = reason
    else:
        row |= {f"multi_{k}": v for k, v in _multi_source(scenes).items()}
        truth = {**scenes, "class_maps": scenes["class_maps_gt"]}
        row |= {f"multi_gt_{k}": v for k, v in _multi_source(truth).items()}
    return {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in row.items()}


def compare_methods(world: str | Path, runs: str | Path, methods: list[str], seeds: list[int],
                    base: PeerConfig | None = None, device: torch.device | None = None,
                    offscreen: str | Path | None = None, progress: bool = True) -> list[dict]:
    """Train (or resume) every method with every seed into ``runs/<method>-s<seed>`` and evaluate
    the checkpoint chosen on val. Returns one row per run (``method``, ``seed`` and the columns)."""
    base = base or PEER_PRESETS["quick"]
    for m in methods:
        get_method(m)  # fail before any training on a misspelt name
    rows = []
    for method in methods:
        for seed in seeds:
            cfg = dataclasses.replace(base, method=method, seed=seed)
            trainer = PeerTrainer(world, Path(runs) / f"{method}-s{seed}", cfg, device, progress)
            trainer.fit()
            row = evaluate_method(method, trainer.load_best(), world, cfg.image_size, trainer.device, offscreen)
            rows.append({"method": method, "seed": seed, "best_val_iou@0.5": trainer.best} | row)
    return rows


def summarise(rows: list[dict]) -> dict[str, dict[str, str]]:
    """Per method and column: ``mean ± std`` over seeds (sample std), or the reason a column is missing."""
    table: dict[str, dict[str, str]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        runs = [r for r in rows if r["method"] == method]
        cells = {}
        for key in runs[0]:
            if key in ("method", "seed"):
                continue
            values = [r[key] for r in runs]
            if isinstance(values[0], str):
                cells[key] = "n/a"
                continue
            arr = np.array(values, dtype=float)
            spread = float(arr.std(ddof=1)) if len(arr) > 1 else math.nan
            cells[key] = f"{arr.mean():.3f} ± {spread:.3f}" if len(arr) > 1 else f"{arr.mean():.3f}"
        table[get_method(method).title] = cells
    return table


def comparison_markdown(record: dict) -> str:
    """The Markdown table of a comparison file (``dsol-lite compare``): per method its chosen
    configuration and, as mean ± sd over seeds, the test scores and the robustness scores."""
    from dsol_lite.report import markdown_table

    table, robust = summarise(record["rows"]), summarise(record.get("robustness") or record["rows"])
    columns = {"dsol_iou@0.5": "solo IoU@0.5", "dsol_auc": "AUC", "noise10_iou@0.5": "IoU@0.5, noise 10 dB",
               "offscreen_iou@0.5": "IoU@0.5, off-screen", "silent_alarm": "silent alarm"}
    cells = {}
    for title, row in table.items():
        method = next(r for r in record["rows"] if get_method(r["method"]).title == title)
        cells[title] = {"configuration": method.get("config", "preset")}
        cells[title] |= {name: robust[title].get(key, row.get(key, "")) for key, name in columns.items()}
    prior = float(np.mean([r["centre_prior_iou@0.5"] for r in record["rows"]]))
    return (markdown_table(cells, ["configuration", *columns.values()]) +
            f"\n\nCentre prior: solo IoU@0.5 {prior:.3f}. Seeds: {sorted({r['seed'] for r in record['rows']})}.")


def write_rows(rows: list[dict], path: str | Path) -> Path:
    """The per-run rows as JSON (atomic: written to a temporary file, then renamed)."""
    return write_text(path, json.dumps(rows, indent=2, default=float))


def peak_places(maps: torch.Tensor, dataset: SoloPairs) -> dict[str, float]:
    """Where each solo map ``(N, h, w)`` peaks: on the sounding object, on a silent distractor, or
    elsewhere (fractions over the scenes that have a distractor, and the peak-on-sounding rate over all)."""
    from dsol_lite.data.images import box_mask

    size = dataset.image_size
    up = upsample(maps, size).flatten(1).argmax(1)
    ys, xs = (up // size).tolist(), (up % size).tolist()
    counts = {"sounding": 0, "silent distractor": 0, "elsewhere": 0}
    hits = 0
    for i, (y, x) in enumerate(zip(ys, xs)):
        frame = dataset.frame_of(i)
        scale = (size / frame.width, size / frame.height)

        def inside(objects) -> bool:
            boxes = [(round(x1 * scale[0]), round(y1 * scale[1]), round(x2 * scale[0]), round(y2 * scale[1]))
                     for x1, y1, x2, y2 in (o.box for o in objects)]
            return bool(box_mask(boxes, size, size)[y, x])

        on_sound = inside(frame.sounding_objects())
        hits += on_sound
        silent = [o for o in frame.objects if not o.sounding]
        if silent:
            key = "sounding" if on_sound else ("silent distractor" if inside(silent) else "elsewhere")
            counts[key] += 1
    n_distractor = max(sum(counts.values()), 1)
    return {"peak_on_sounding": hits / max(len(ys), 1)} | {f"with distractor: {k}": v / n_distractor
                                                            for k, v in counts.items()}


def run_method(method: str, preset: str | None = None, world: str | Path | None = None, runs: str | Path = "runs",
               name: str | None = None, device: torch.device | None = None, progress: bool = True,
               cfg: PeerConfig | None = None) -> Path:
    """``dsol-lite run --method NAME`` for a peer method: world if missing -> training (resumes) ->
    evaluation -> ``runs/<name>/metrics.json`` and ``report.md`` with a heatmap gallery."""
    import matplotlib.pyplot as plt

    from dsol_lite.pipeline import PIPELINE_PRESETS, ensure_world
    from dsol_lite.report import heatmap_gallery, markdown_table

    get_method(method)
    device = device or default_device()
    preset = preset or "quick"
    if preset not in ("quick", "full"):
        raise ConfigError(f"unknown preset {preset!r}; choose quick or full")
    cfg = dataclasses.replace(cfg or PEER_PRESETS[preset], method=method).validate()  # before anything runs
    world = Path(world) if world is not None else Path("worlds") / PIPELINE_PRESETS[preset].world
    run_dir = Path(runs) / (name or f"{preset}-{method}")
    ensure_world(world, PIPELINE_PRESETS[preset].world, progress)
    with exclusive(run_dir, f"the {method} run"):  # one process at a time writes a run folder
        trainer = PeerTrainer(world, run_dir / "train", cfg, device, progress)
        trainer.fit()
        model = trainer.load_best()
        solo = SoloPairs(world, "test", image_size=cfg.image_size, device=device)
        maps, gt = localization_maps(model, solo, LogMel(AudioConfig()).to(device), device)
        row = {"method": method, "best_val_iou@0.5": trainer.best} | evaluate_method(
            method, model, world, cfg.image_size, device, solo_maps=(maps, gt))
        write_rows([row], run_dir / "metrics.json")
        pick = list(range(min(12, len(solo))))
        images = torch.stack([solo[i]["image"] for i in pick])
        fig = heatmap_gallery(images, upsample(maps[pick], cfg.image_size),
                              upsample(gt[pick].float(), cfg.image_size) > 0.5)
        (run_dir / "figures").mkdir(exist_ok=True)
        fig.savefig(run_dir / "figures" / "heatmaps.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        numbers = {k: v for k, v in row.items() if isinstance(v, float)}
        lines = [f"# {get_method(method).title} on {world}", "", get_method(method).idea + ".", "",
                 markdown_table({get_method(method).title: numbers}, list(numbers)), ""]
        if isinstance(row.get("multi_source"), str):
            lines += [f"Multi-source protocols: not applicable ({row['multi_source']}).", ""]
        lines += ["![solo test scenes](figures/heatmaps.png)", ""]
        write_text(run_dir / "report.md", "\n".join(lines))
    return run_dir


__all__ = ["offscreen_world", "scene_maps", "evaluate_method", "compare_methods", "summarise", "comparison_markdown",
           "write_rows", "peak_places", "run_method"]
