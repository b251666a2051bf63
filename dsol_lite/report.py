"""Figures and the Markdown report of a pipeline run.

Notebook: 04_stage_two (class-aware maps), 05_evaluation (galleries, curves, the report).

Every figure function takes tensors (already computed by ``evaluate``) and returns a
matplotlib figure, so a notebook can show the same figure the report saves.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle
from sklearn.decomposition import PCA

from dsol_lite.data.images import denormalize
from dsol_lite.folders import write_text
from dsol_lite.metrics import relative_region, upsample
from dsol_lite.viz import SILENT, SOUNDING


def _mask_boxes(mask: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Bounding rectangles of a union-of-boxes mask's connected rows/columns (for drawing only)."""
    if not mask.any():
        return []
    from scipy import ndimage

    labelled, n = ndimage.label(mask.numpy())
    out = []
    for sl in ndimage.find_objects(labelled):
        ys, xs = sl
        out.append((xs.start, ys.start, xs.stop, ys.stop))
    return out


def _draw_boxes(ax: plt.Axes, mask: torch.Tensor, colour: str, dashed: bool = False) -> None:
    for x1, y1, x2, y2 in _mask_boxes(mask.bool()):
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.5, ec=colour,
                               ls="--" if dashed else "-"))


def overlay(ax: plt.Axes, image: torch.Tensor, heat: torch.Tensor, title: str = "", vmax: float | None = None) -> None:
    """An image (normalised tensor) with a heatmap at image resolution on top."""
    ax.imshow(denormalize(image).permute(1, 2, 0).numpy())
    ax.imshow(heat.numpy(), cmap="jet", alpha=0.45, vmin=0, vmax=vmax if vmax is not None else float(heat.max()))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def heatmap_gallery(images: torch.Tensor, maps: torch.Tensor, gts: torch.Tensor, scores: torch.Tensor | None = None,
                    ncols: int = 6) -> plt.Figure:
    """Solo scenes: the localization map over the frame, the GT box in green, the predicted region
    (map > 0.1 x max, DSOL's protocol) outlined in white."""
    n = len(images)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.3 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        title = f"IoU {scores[i]:.2f}" if scores is not None else ""
        overlay(ax, images[i], maps[i], title)
        ax.contour(relative_region(maps[i:i + 1], 0.1)[0].numpy(), levels=[0.5], colors="white", linewidths=0.8)
        _draw_boxes(ax, gts[i], SOUNDING)
    fig.tight_layout()
    return fig


def method_grid(images: torch.Tensor, maps_by_method: dict[str, torch.Tensor], gts: torch.Tensor) -> plt.Figure:
    """Methods x scenes (notebook 06): each method's map ``(N, h, w)`` over the same frames, the
    sounding box in green, DSOL's region (map > 0.1 x max) outlined in white."""
    n, size = len(images), images.shape[-1]
    fig, axes = plt.subplots(len(maps_by_method), n, figsize=(1.9 * n, 2.0 * len(maps_by_method)), squeeze=False)
    for row, (name, maps) in enumerate(maps_by_method.items()):
        up = upsample(maps, size)
        for col in range(n):
            ax = axes[row, col]
            overlay(ax, images[col], up[col])
            ax.contour(relative_region(up[col:col + 1], 0.1)[0].numpy(), levels=[0.5], colors="white", linewidths=0.8)
            _draw_boxes(ax, upsample(gts[col:col + 1].float(), size)[0] > 0.5, SOUNDING)
            ax.axis("off")
        axes[row, 0].set_title(name, loc="left", fontsize=9)
    fig.tight_layout()
    return fig


def class_map_gallery(images: torch.Tensor, class_maps: torch.Tensor, loc_maps: torch.Tensor,
                      class_boxes: torch.Tensor, sounding: torch.Tensor, present: torch.Tensor,
                      classes: tuple[str, ...]) -> plt.Figure:
    """Multi-source scenes, one row each: the frame (green = sounding, dashed red = silent
    object's class), stage one's localization map, then the class map of every class in view."""
    n = len(images)
    ncols = 2 + int(present.sum(1).max())
    fig, axes = plt.subplots(n, ncols, figsize=(2.2 * ncols, 2.3 * n), squeeze=False)
    for row in range(n):
        for ax in axes[row]:
            ax.axis("off")
        ax = axes[row, 0]
        ax.imshow(denormalize(images[row]).permute(1, 2, 0).numpy())
        heard = [classes[c] for c in torch.nonzero(sounding[row]).flatten().tolist()]
        ax.set_title("heard: " + ", ".join(heard), fontsize=8)
        for c in torch.nonzero(sounding[row]).flatten().tolist():
            _draw_boxes(ax, class_boxes[row, c], SOUNDING)
        overlay(axes[row, 1], images[row], loc_maps[row], "stage one map", vmax=1.0)
        for j, c in enumerate(torch.nonzero(present[row]).flatten().tolist()):
            state = "sounding" if sounding[row, c] else "silent"
            overlay(axes[row, 2 + j], images[row], class_maps[row, c], f"{classes[c]} ({state})", vmax=1.0)
            axes[row, 2 + j].title.set_color(SOUNDING if sounding[row, c] else SILENT)
    fig.tight_layout()
    return fig


def cluster_plot(features: torch.Tensor, assign: np.ndarray, labels: np.ndarray,
                 classes: tuple[str, ...]) -> plt.Figure:
    """Object features in 2-D (PCA of the L2-normalised features): by cluster and by true class."""
    x = torch.nn.functional.normalize(features.double(), dim=1).numpy()
    xy = PCA(n_components=2, random_state=0).fit_transform(x)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, colour, title in ((axes[0], assign, "k-means cluster"), (axes[1], labels, "true class")):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab10", s=6, vmin=0, vmax=9)
        ax.set_title(f"object features, coloured by {title}")
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], ls="", marker="o", color=sc.cmap(sc.norm(k)), label=name)
               for k, name in enumerate(classes)]
    axes[1].legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def _smooth(values: list[float], window: int = 20) -> np.ndarray:
    v = np.asarray(values, float)
    if len(v) < window:
        return v
    return np.convolve(v, np.ones(window) / window, mode="valid")


def training_curves(stage_one_log: list[dict], stage_two_log: list[dict]) -> plt.Figure:
    """Loss and validation metrics of both stages, from their ``metrics.jsonl``."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    loc = [r for r in stage_one_log if r.get("phase") == "localize"]
    axes[0].plot(_smooth([r["loss"] for r in loc]), label="loss")
    axes[0].plot(_smooth([r["match_acc"] for r in loc]), label="matching accuracy")
    axes[0].set_title("stage one: localization steps")
    val1 = [r for r in stage_one_log if r.get("phase") == "validate"]
    axes[1].plot([r["epoch"] for r in val1], [r["val_iou@0.5"] for r in val1], "o-", label="val IoU@0.5")
    with_nmi = [r for r in val1 if "val_nmi" in r]  # runs made before validation reported it have none
    axes[1].plot([r["epoch"] for r in with_nmi], [r["val_nmi"] for r in with_nmi], "^--", label="val k-means NMI")
    clusters = [r for r in stage_one_log if r.get("phase") == "cluster"]
    axes[1].plot([r["epoch"] for r in clusters], [r["nmi"] for r in clusters], "s-", label="dictionary NMI")
    axes[1].set_title("stage one: per epoch")
    train2 = [r for r in stage_two_log if r.get("phase") == "train"]
    axes[2].plot(_smooth([r["kl"] for r in train2], 10), label="KL(audio || visual)")
    axes[2].plot(_smooth([r["loc"] for r in train2], 10), label="localization BCE")
    axes[2].set_title("stage two: steps")
    val2 = [r for r in stage_two_log if r.get("phase") == "validate"]
    axes[3].plot([r["epoch"] for r in val2], [r["val_ciou@0.3"] for r in val2], "o-", label="val CIoU@0.3")
    axes[3].plot([r["epoch"] for r in val2], [r["val_nsa"] for r in val2], "s-", label="val NSA")
    axes[3].set_title("stage two: per epoch")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.set_xlabel("step" if ax in (axes[0], axes[2]) else "epoch")
    fig.tight_layout()
    return fig


def _fmt(v) -> str:
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def markdown_table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    """A Markdown table: one row per method/baseline, one column per metric."""
    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(row.get(c, float("nan"))) for c in columns) + " |")
    return "\n".join(lines)


# What the course asks of the quick preset on 2 CPU cores (README, Results: the measured spread)
COURSE_TARGETS = {"solo_iou@0.5": 0.8, "points_above_prior": 0.30, "nmi": 0.85, "cocktail_ciou@0.3": 0.7,
                  "cocktail_nsa": 0.9, "stage_one_seconds": 360.0, "run_seconds": 600.0}


def _at_least(value: float, target: float) -> bool:
    # metrics are float32 fractions of a few hundred scenes: 140/200 is stored as 0.69999999
    return round(value, 6) >= target


def course_targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """Each course target with this run's number and whether it is met (``None``: this run cannot tell).

    Times count only when this invocation ran the stage from its start (``setup["fresh"]``): a
    resumed stage's seconds are only what was left of it.
    """
    t, solo, setup = COURSE_TARGETS, results["solo"], results["setup"]
    iou, prior = solo["DSOL stage one"]["dsol_iou@0.5"], solo["centre prior"]["dsol_iou@0.5"]
    nmi = results["dictionary"]["nmi"]
    rows = [(f"solo IoU@0.5 (DSOL protocol, stage one) >= {t['solo_iou@0.5']}", f"{iou:.3f}",
             _at_least(iou, t["solo_iou@0.5"])),
            (f"... at least {100 * t['points_above_prior']:.0f} points above the centre prior ({prior:.3f})",
             f"{100 * (iou - prior):+.1f} points", _at_least(iou - prior, t["points_above_prior"])),
            (f"dictionary NMI >= {t['nmi']}", f"{nmi:.3f}", _at_least(nmi, t["nmi"]))]
    cocktail = results["multi"].get("cocktail")
    if cocktail:
        two, one = cocktail["DSOL stage two"], cocktail["stage-one map for every class"]
        rows += [(f"cocktail CIoU@0.3 (stage two) >= {t['cocktail_ciou@0.3']}", f"{two['ciou@0.3']:.3f}",
                  _at_least(two["ciou@0.3"], t["cocktail_ciou@0.3"])),
                 (f"cocktail NSA >= {t['cocktail_nsa']}", f"{two['nsa']:.3f}",
                  _at_least(two["nsa"], t["cocktail_nsa"])),
                 ("stage two beats the stage-one map on cocktails (CIoU@0.3)",
                  f"{two['ciou@0.3']:.3f} against {one['ciou@0.3']:.3f}", two["ciou@0.3"] > one["ciou@0.3"])]
    seconds, fresh = setup["seconds"], setup.get("fresh", {})
    s1 = seconds["stage_one"]
    rows.append((f"stage one + dictionary <= {t['stage_one_seconds'] / 60:.0f} minutes",
                 f"{s1:.0f} s" if fresh.get("stage_one") else "made or begun earlier: not timed",
                 s1 <= t["stage_one_seconds"] if fresh.get("stage_one") else None))
    total, everything = sum(seconds.values()), all(fresh.get(k) for k in ("world", "stage_one", "stage_two"))
    rows.append((f"the whole run <= {t['run_seconds'] / 60:.0f} minutes",
                 f"{total:.0f} s" if everything else "world or a stage made earlier: not timed",
                 total <= t["run_seconds"] if everything else None))
    return rows


def targets_table(rows: list[tuple[str, str, bool | None]]) -> str:
    mark = {True: "yes", False: "**no**", None: "–"}
    return "\n".join(["| target | this run | met |", "|---|---|---|"]
                     + [f"| {name} | {value} | {mark[met]} |" for name, value, met in rows])


def write_report(run_dir: str | Path, results: dict, figures: dict[str, plt.Figure]) -> Path:
    """Save the figures as PNG and write ``report.md`` next to them; returns the report path."""
    run_dir = Path(run_dir)
    (run_dir / "figures").mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(run_dir / "figures" / f"{name}.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
    solo, multi, setup = results["solo"], results["multi"], results["setup"]
    text = [f"# dsol_lite run `{run_dir.name}`", "",
            f"World `{setup['world']}` ({setup['classes']} classes), preset `{setup['preset']}`, device "
            f"`{setup['device']}`. Stage one {setup['seconds']['stage_one']:.0f} s, stage two "
            f"{setup['seconds']['stage_two']:.0f} s, evaluation {setup['seconds']['evaluate']:.0f} s "
            "(this invocation; a resumed stage counts only what was left).", ""]
    sizes = results["image_sizes"]
    text += [f"Input sizes: training crops {sizes['train']} px; solo scenes scored at {sizes['solo']} px, "
             f"multi-source scenes at {sizes['multi_source']} px (each stage's `eval_size`).", ""]
    if setup["preset"] == "quick":
        text += ["## The course's targets (quick preset, 2 CPU cores)", "",
                 "What the course asks of a quick run. One run is one draw (notebook 02, section 8): the README "
                 "(Results) gives the spread over seeds, docs/results.md over more draws.", "",
                 targets_table(course_targets(results)), ""]
    text += [
            "## Single source (test solo scenes, silent distractors included)", "",
            "DSOL protocol (`dsol_`): the map resized with the half-pixel convention, region = map > 0.1 x max, "
            "IoU with the GT box. EZ-VSL protocol (`ezvsl_`): the map resized with `align_corners=True`, min-max "
            "normalised (a constant map unchanged), region = pixels >= the upper median, cIoU. Success rates "
            "count a score s at t = 0.05 i when s >= 0.05 i. Checkpoints chosen on val.", "",
            markdown_table(solo, ["dsol_iou@0.5", "dsol_auc", "ezvsl_ciou@0.5", "ezvsl_auc"]), "",
            f"Dictionary (stage one's selected round {setup['round']}): NMI {setup['nmi']:.3f}, purity "
            f"{setup['purity']:.3f}.", "",
            "![solo gallery](figures/solo_gallery.png)", "",
            "## Multi source (test duet, cocktail and 2x2 scenes)", "",
            "DSOL protocol (`ciou@0.3`, `auc`, `nsa`): class maps = softmax(3 x class-aware maps) summed per "
            "class over the Hungarian cluster-to-class map; CIoU over sounding classes on the whole frame "
            "(region > 0.5 x max; 0.2 x max on real MUSIC duets, as DSOL); NSA = fraction of pixels <= 0.2 "
            "in the maps of the classes without a box in the frame. On real duets also `nsa_not_heard` (the "
            "classes the video does not list) and `halves_ciou@0.3` (each source scored on its own half of the "
            "frame, as some later papers do: not DSOL's protocol). AVGN style: per source CIoU@0.3, "
            "class-aware AP (CAP) "
            "and permutation-invariant AP (PIAP). The row `dictionary maps, no audio` never hears the mixture "
            "(stage one's class-aware maps, unfiltered): it finds objects by their look, so it bounds what "
            "CIoU alone can credit to sound.", ""]
    for kind, rows in multi.items():
        columns = ["ciou@0.3", "auc", "nsa", "nsa_not_heard", "halves_ciou@0.3", "avgn_ciou@0.3", "cap", "piap"]
        columns = [c for c in columns if any(c in row for row in rows.values())]
        text += [f"### {kind}", "", markdown_table(rows, columns), ""]
    silent = results.get("silent_objects")
    if silent:
        text += ["### Silent objects (cocktail and 2x2 scenes with a silent object)", "",
                 "One map per scene: stage one's localization map of the mixture, or stage two's class maps "
                 "(softmax over clusters) weighted by the categories the frozen stage-one audio classifier hears. "
                 "Region = map > 0.5 x max. `sounding_iou`: IoU with the sounding boxes; `silent_coverage`: "
                 "share of silent-object pixels inside the region (lower is better).", "",
                 markdown_table(silent, ["sounding_iou", "silent_coverage", "scenes"]), ""]
    if "class_maps" in figures:
        text += ["![class-aware maps](figures/class_maps.png)", ""]
    text += ["## Object dictionary", "",
             "![clusters](figures/clusters.png)", "", "## Training", "", "![curves](figures/training_curves.png)", ""]
    return write_text(run_dir / "report.md", "\n".join(text))


__all__ = ["overlay", "heatmap_gallery", "class_map_gallery", "cluster_plot", "training_curves", "markdown_table",
           "COURSE_TARGETS", "course_targets", "targets_table", "write_report"]
