"""Write the synthetic world to disk in the shared layout (``data.schema``), atomically.

Notebook: 00_setup_and_data.

Scenes are generated in parallel worker processes into a temporary folder next to the target;
only when every scene and the manifest are written is the folder swapped into place
(``dsol_lite.folders``). An interrupted run leaves nothing behind that could be mistaken for a
finished world, one process at a time writes a world, ``overwrite`` replaces only a world this
package generated, and the files are identical whatever the number of workers.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from pathlib import Path

import soundfile as sf
from PIL import Image
from tqdm.auto import tqdm

from dsol_lite import __version__
from dsol_lite.data.schema import (CLIP_FILE, MANIFEST_FILE, NOISE_LABEL, ClipAnnotation, ClipEntry,
                                   DatasetManifest, FrameAnnotation, ObjectAnnotation, SourceAnnotation,
                                   clip_to_json, read_manifest, write_json)
from dsol_lite.errors import ConfigError
from dsol_lite.folders import check_replaceable, is_empty_folder, read_json_or_none, write_folder
from dsol_lite.synth.classes import CLASS_NAMES
from dsol_lite.synth.config import KINDS, SPLITS, WorldConfig
from dsol_lite.synth.scenes import Scene, make_scene

FRAME_FILE, MASK_FILE, AUDIO_FILE = "frame_000.jpg", "mask_000.png", "audio.wav"


def clip_id(kind: str, split: str, index: int) -> str:
    return f"{kind}-{split}-{index:05d}"


def scene_annotation(cfg: WorldConfig, scene: Scene, split: str, index: int) -> ClipAnnotation:
    """The schema annotation of a generated scene (the frame sits in the middle of the audio)."""
    names = CLASS_NAMES
    objects = tuple(ObjectAnnotation(names[o.class_id], tuple(int(v) for v in o.box), o.sounding, o.mask_value)
                    for o in scene.objects)
    frame = FrameAnnotation(FRAME_FILE, cfg.clip_seconds / 2, cfg.image_size, cfg.image_size, MASK_FILE, objects)
    sources = tuple(SourceAnnotation(NOISE_LABEL if s.class_id is None else names[s.class_id], s.on_screen)
                    for s in scene.sources)
    return ClipAnnotation(clip_id(scene.plan.kind, split, index), scene.plan.kind, split, AUDIO_FILE,
                          cfg.sample_rate, len(scene.mixture), (frame,), sources,
                          {"noise_snr_db": scene.plan.noise_snr_db, "generator": "dsol_lite.synth"})


def write_scene(cfg: WorldConfig, root: Path, kind: str, split: str, index: int) -> ClipEntry:
    scene = make_scene(cfg, kind, split, index)
    ann = scene_annotation(cfg, scene, split, index)
    folder = root / "clips" / ann.clip_id
    folder.mkdir(parents=True)
    Image.fromarray(scene.image).save(folder / FRAME_FILE, quality=cfg.jpeg_quality)
    Image.fromarray(scene.labels).save(folder / MASK_FILE, optimize=False)
    sf.write(folder / AUDIO_FILE, scene.mixture, cfg.sample_rate, subtype="PCM_16")
    write_json(folder / CLIP_FILE, clip_to_json(ann))
    return ClipEntry(ann.clip_id, kind, split)


def _write_chunk(cfg_dict: dict, root: str, jobs: list[tuple[str, str, int]]) -> list[tuple[str, str, str]]:
    cfg = WorldConfig.from_dict(cfg_dict)
    entries = [write_scene(cfg, Path(root), *job) for job in jobs]
    return [(e.clip_id, e.kind, e.split) for e in entries]


def world_jobs(cfg: WorldConfig) -> list[tuple[str, str, int]]:
    return [(kind, split, i) for kind in KINDS for s, split in enumerate(SPLITS)
            for i in range(cfg.counts.get(kind, (0, 0, 0))[s])]


def is_complete(out: Path, cfg: WorldConfig) -> bool:
    """True when ``out`` holds a finished world made from exactly this configuration."""
    try:
        manifest = read_manifest(out)
        clips = sum(1 for _ in os.scandir(Path(out) / "clips"))
    except (OSError, ValueError):
        return False
    return manifest.source.get("fingerprint") == cfg.fingerprint() and clips == len(manifest.clips)


def is_generated_world(folder: Path) -> bool:
    """Whether ``folder`` holds a world this package generated (its manifest says so)."""
    manifest = read_json_or_none(Path(folder) / MANIFEST_FILE) or {}
    source = manifest.get("source")
    return isinstance(source, dict) and source.get("type") == "synthetic" and str(
        source.get("generator", "")).startswith("dsol_lite")


def _write_in_workers(cfg: WorldConfig, tmp: Path, chunks: list[list], workers: int, bar) -> list:
    """``_write_chunk`` for every chunk in spawned worker processes; the clear error when one dies."""
    entries = []
    try:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for done in pool.map(_write_chunk, [cfg.to_dict()] * len(chunks), [str(tmp)] * len(chunks), chunks):
                entries += done
                bar.update(len(done))
    except BrokenProcessPool as err:
        raise RuntimeError(
            f"generating world {cfg.name!r} in {tmp.parent}: a worker process died. From a script, the usual "
            f"cause is a call at the top level: spawned workers re-run the script, so put the call under "
            f"'if __name__ == \"__main__\":'. Otherwise a worker ran out of memory; workers=1 writes the world "
            f"in this process") from err
    return entries


def generate_world(cfg: WorldConfig, out: str | Path, workers: int | None = None, progress: bool = True,
                   overwrite: bool = False, chunk: int = 32) -> Path:
    """Generate the world described by ``cfg`` into ``out``; returns ``out``.

    Skips the work when ``out`` already holds this exact world. Refuses to replace a different
    folder unless ``overwrite``, and even then replaces only a world this package generated (never
    ``.`` or a parent of it); the old world stays whole until the new one is. An empty folder is
    written into. With more than one worker the scenes are written by *spawned* processes, which
    re-import the calling script: in a script, call this under ``if __name__ == "__main__":``
    (notebooks and ``dsol-lite`` need nothing), or pass ``workers=1``.
    """
    cfg.validate()
    out = Path(out)
    if out.exists() and not overwrite and not is_empty_folder(out):
        if is_complete(out, cfg):
            return out
        raise ConfigError(f"out={out}: exists and is not the world this configuration makes; "
                          f"choose another folder or pass overwrite=True (--overwrite)")
    if overwrite:
        check_replaceable(out, "synthetic world", is_generated_world)
    write_folder(out, f"world {cfg.name!r}", lambda tmp: _write_world(cfg, tmp, workers, progress, chunk),
                 done=lambda: not overwrite and is_complete(out, cfg))  # another process may have finished it
    return out


def _write_world(cfg: WorldConfig, tmp: Path, workers: int | None, progress: bool, chunk: int) -> None:
    """Every scene and the manifest of ``cfg`` into the empty folder ``tmp``."""
    jobs = world_jobs(cfg)
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) // chunk + 1))
    (tmp / "clips").mkdir(parents=True)
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    bar = tqdm(total=len(jobs), desc=f"world {cfg.name}", unit="scene", disable=not progress)
    entries = []
    if workers == 1:
        for c in chunks:
            entries += _write_chunk(cfg.to_dict(), str(tmp), c)
            bar.update(len(c))
    else:
        entries = _write_in_workers(cfg, tmp, chunks, workers, bar)
    bar.close()
    manifest = DatasetManifest(tmp, f"synthetic-{cfg.name}", CLASS_NAMES[: cfg.num_classes], cfg.sample_rate,
                               tuple(ClipEntry(*e) for e in entries),
                               {"type": "synthetic", "generator": f"dsol_lite {__version__}",
                                "config": cfg.to_dict(), "fingerprint": cfg.fingerprint()})
    write_json(tmp / MANIFEST_FILE, manifest.to_json())


def manifest_summary(root: str | Path) -> dict[str, dict[str, int]]:
    """Scene counts per kind and split, e.g. for ``dsol-lite info``."""
    manifest = read_manifest(root)
    table: dict[str, dict[str, int]] = {}
    for c in manifest.clips:
        table.setdefault(c.kind, {s: 0 for s in SPLITS})[c.split] += 1
    return table


__all__ = ["generate_world", "write_scene", "scene_annotation", "is_complete", "is_generated_world", "clip_id",
           "manifest_summary"]
