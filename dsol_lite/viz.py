"""Figures and widgets for the notebooks.

Notebook: 00_setup_and_data (scenes, class catalogue, statistics, scene browser).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from dsol_lite.data.audio import LogMel, crop_window, load_audio
from dsol_lite.data.images import load_image
from dsol_lite.data.schema import ClipAnnotation, DatasetManifest, read_clip, read_manifest

SOUNDING, SILENT = "#2ecc40", "#ff4136"


def show_clip(ax: plt.Axes, manifest: DatasetManifest, clip: ClipAnnotation, masks: bool = False,
              title: bool = True) -> None:
    """A clip's frame with its boxes: solid green = sounding, dashed red = silent."""
    frame = clip.frames[len(clip.frames) // 2]
    folder = manifest.clip_dir(clip.clip_id)
    ax.imshow(load_image(folder / frame.file, (frame.width, frame.height)))
    if masks and frame.mask:
        labels = load_image(folder / frame.mask, mode="L")
        overlay = np.ma.masked_equal(labels, 0)
        ax.imshow(overlay, cmap="tab10", alpha=0.45, vmin=0, vmax=10, interpolation="nearest")
    for obj in frame.objects or ():
        x1, y1, x2, y2 = obj.box
        colour = SOUNDING if obj.sounding else SILENT
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=1.8, ec=colour,
                               ls="-" if obj.sounding else "--"))
        ax.text(x1, y1 - 2, obj.label, color="white", fontsize=7, va="bottom",
                bbox={"fc": colour, "ec": "none", "pad": 1})
    if title:
        heard = ", ".join(s.label for s in clip.sources)
        ax.set_title(f"{clip.clip_id}\nheard: {heard}", fontsize=8)
    ax.axis("off")


def scene_gallery(root: str | Path, clip_ids: list[str], ncols: int = 4, masks: bool = False) -> plt.Figure:
    manifest = read_manifest(root)
    nrows = int(np.ceil(len(clip_ids) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3 * ncols, 3.2 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, cid in zip(axes.flat, clip_ids):
        show_clip(ax, manifest, read_clip(manifest, cid), masks=masks)
    fig.tight_layout()
    return fig


def class_catalogue(num_classes: int = 10, size: int = 96) -> plt.Figure:
    """One instance of every class, drawn on a plain background, with its timbre family."""
    from dsol_lite.synth.classes import CLASSES
    from dsol_lite.synth.visuals import sample_instance

    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(1, num_classes, figsize=(1.6 * num_classes, 2.0))
    for ax, cls in zip(axes, CLASSES[:num_classes]):
        mask, rgb = sample_instance(cls, size, (0.12, 0.15), rng)
        canvas = np.ones((*mask.shape, 3)) * 0.92
        canvas[mask] = rgb[mask]
        ax.imshow(canvas)
        ax.set_title(f"{cls.name}\n({cls.timbre.family})", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def clip_log_mel(manifest: DatasetManifest, clip: ClipAnnotation, log_mel: LogMel | None = None) -> np.ndarray:
    """The (frames, mel) log-mel image of the 1-s window around a clip's frame."""
    import torch

    log_mel = log_mel or LogMel()
    wave = load_audio(manifest.clip_dir(clip.clip_id) / clip.audio, manifest.sample_rate)
    window = crop_window(wave, manifest.sample_rate, clip.frames[len(clip.frames) // 2].time)
    return log_mel(torch.from_numpy(window))[0].numpy()


def plot_log_mel(ax: plt.Axes, mel: np.ndarray, title: str = "", hop_seconds: float = 0.005) -> None:
    """Mel bands upwards, time to the right."""
    ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma",
              extent=(0, mel.shape[0] * hop_seconds, 0, mel.shape[1]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    ax.set_title(title, fontsize=9)


def object_table(root: str | Path) -> pd.DataFrame:
    """One row per annotated object: clip, kind, split, class, sounding, box area fraction."""
    manifest = read_manifest(root)
    rows = []
    for entry in manifest.clips:
        clip = read_clip(manifest, entry.clip_id)
        frame = clip.frames[len(clip.frames) // 2]
        for obj in frame.objects or ():
            x1, y1, x2, y2 = obj.box
            rows.append({"clip": clip.clip_id, "kind": clip.kind, "split": clip.split, "class": obj.label,
                         "sounding": obj.sounding,
                         "box_fraction": (x2 - x1) * (y2 - y1) / (frame.width * frame.height)})
    return pd.DataFrame(rows)


def scene_browser(root: str | Path):
    """An ipywidgets browser: pick a kind and a scene, see the frame with boxes and hear it."""
    import ipywidgets as widgets
    from IPython.display import Audio, display

    manifest = read_manifest(root)
    kinds = sorted({c.kind for c in manifest.clips})
    kind = widgets.Dropdown(options=kinds, description="kind")
    index = widgets.IntSlider(value=0, min=0, max=0, description="scene")
    masks = widgets.Checkbox(value=False, description="masks")
    out = widgets.Output()

    def refresh(*_):
        entries = manifest.select(kinds=(kind.value,))
        index.max = len(entries) - 1
        clip = read_clip(manifest, entries[min(index.value, index.max)].clip_id)
        with out:
            out.clear_output(wait=True)
            fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.4))
            show_clip(a, manifest, clip, masks=masks.value)
            plot_log_mel(b, clip_log_mel(manifest, clip), "log-mel of the 1-s window")
            fig.tight_layout()
            plt.show()
            wave = load_audio(manifest.clip_dir(clip.clip_id) / clip.audio, manifest.sample_rate)
            display(Audio(wave, rate=manifest.sample_rate))

    for w in (kind, index, masks):
        w.observe(refresh, names="value")
    refresh()
    return widgets.VBox([widgets.HBox([kind, index, masks]), out])
