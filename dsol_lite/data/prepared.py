"""A prepared cache: frames as uint8 at training resolution and audio as 16-bit PCM, in
memory-mappable ``.npy`` shards, built once from any dataset in the shared layout.

Notebook: 07_real_data_music. Command: ``dsol-lite cache``.

Decoding a JPEG and an audio file per item is what starves a GPU on a 2-core Colab runtime;
reading a row of a memory-mapped array is nearly free. Layout::

    CACHE/
      cache.json          settings, the dataset fingerprint, and where each clip's rows are
      frames_000.npy      (n_frames, S, S, 3) uint8, every frame of a shard's clips, resized
      audio_000.npy       (n_samples,) int16, the shard's clips' sound back to back

No pickle anywhere (``np.load(..., allow_pickle=False)``). A cache records the image size,
sample rate, the fingerprint of the dataset's manifest and the size and modification time of
every file it was built from (each clip's annotation, frames and audio); opening it for another
setting, or after any of those files changed, is a clear error naming them, never silently stale
data. Checking the files costs one ``stat`` per file (``benchmarks/cache_loader.py`` times it).
It is written beside its folder and swapped in when complete (``dsol_lite.folders``), and it
replaces only an empty folder or a cache this package built, never the dataset itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dsol_lite.data.audio import load_audio
from dsol_lite.data.images import load_image
from dsol_lite.data.schema import CLIP_FILE, MANIFEST_FILE, DatasetManifest, read_clip, read_manifest, write_json
from dsol_lite.errors import ConfigError, DataError
from dsol_lite.folders import check_replaceable, read_json_or_none, write_folder

CACHE_SCHEMA = "dsol_lite.cache/2"
CACHE_FILE = "cache.json"


def dataset_fingerprint(root: str | Path) -> str:
    """SHA-256 of the dataset's manifest (its clips, splits and provenance)."""
    return hashlib.sha256((Path(root) / MANIFEST_FILE).read_bytes()).hexdigest()[:16]


def is_cache(folder: Path) -> bool:
    """Whether ``folder`` holds a prepared cache this package built (of any schema version)."""
    meta = read_json_or_none(Path(folder) / CACHE_FILE) or {}
    return str(meta.get("schema", "")).startswith("dsol_lite.cache/")


def file_stamp(path: Path) -> list[int]:
    """``[size, modification time in ns]`` of a file: what tells the cache that it changed."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def build_cache(root: str | Path, out: str | Path, image_size: int, shard_clips: int = 1000,
                progress: bool = True) -> Path:
    """Build the cache of every clip of the dataset at ``root`` (returns ``out``). ``out`` must be a
    new or empty folder, or a cache built earlier (replaced only once the new one is complete)."""
    manifest = read_manifest(root)
    out = Path(out)
    if image_size < 16:
        raise ConfigError(f"image_size={image_size}: too small for a cache")
    check_replaceable(out, "prepared cache", is_cache, inputs=(manifest.root,))
    write_folder(out, "a prepared cache", lambda part: _write_cache(manifest, part, image_size, shard_clips, progress))
    return out


def _write_cache(manifest: DatasetManifest, part: Path, image_size: int, shard_clips: int, progress: bool) -> None:
    clips, shards, stamps = {}, [], {}
    entries = manifest.clips
    for s, first in enumerate(range(0, len(entries), shard_clips)):
        chunk = entries[first:first + shard_clips]
        frames, audio, rows, samples = [], [], 0, 0
        for e in tqdm(chunk, desc=f"cache shard {s}", disable=not progress):
            clip = read_clip(manifest, e.clip_id)
            folder = manifest.clip_dir(e.clip_id)
            stamps[e.clip_id] = [[name, *file_stamp(folder / name)]
                                 for name in (CLIP_FILE, clip.audio, *(f.file for f in clip.frames))]
            for f in clip.frames:
                image = load_image(folder / f.file, (f.width, f.height))
                frames.append(np.asarray(Image.fromarray(image).resize((image_size, image_size), Image.BILINEAR)))
            wave = load_audio(folder / clip.audio, manifest.sample_rate)
            audio.append(np.round(wave * 32768).clip(-32768, 32767).astype(np.int16))  # 16-bit files: exact
            clips[e.clip_id] = [s, rows, len(clip.frames), samples, len(wave)]
            rows, samples = rows + len(clip.frames), samples + len(wave)
        np.save(part / f"frames_{s:03d}.npy", np.stack(frames))
        np.save(part / f"audio_{s:03d}.npy", np.concatenate(audio))
        shards.append([f"frames_{s:03d}.npy", f"audio_{s:03d}.npy"])
    write_json(part / CACHE_FILE, {"schema": CACHE_SCHEMA, "image_size": image_size,
                                   "sample_rate": manifest.sample_rate, "dataset": dataset_fingerprint(manifest.root),
                                   "dataset_root": str(Path(manifest.root).resolve()), "shards": shards,
                                   "clips": clips, "sources": stamps})


def changed_sources(manifest: DatasetManifest, stamps: dict[str, list[list]]) -> list[str]:
    """The files, among those a cache was built from (``stamps``: per clip ``[name, size, mtime_ns]``
    of its annotation, audio and frames), whose size or modification time differ now, or that are gone."""
    changed = []
    for clip_id, files in stamps.items():
        folder = manifest.clip_dir(clip_id)
        for name, *stamp in files:
            try:
                now = file_stamp(folder / name)
            except OSError:
                now = None
            if now != stamp:
                changed.append(str(folder / name))
    return changed


@dataclass
class PreparedCache:
    """An opened cache: ``frame(clip_id, k)`` and ``waveform(clip_id)`` read memory-mapped rows.
    The arrays are opened lazily in each process (loader workers included)."""

    path: Path
    image_size: int
    sample_rate: int
    shards: list[list[str]]
    clips: dict[str, list[int]]

    def __post_init__(self) -> None:
        self._arrays: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __getstate__(self) -> dict:  # a worker process opens its own memory maps
        return {k: v for k, v in self.__dict__.items() if k != "_arrays"} | {"_arrays": None}

    def arrays(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = [(np.load(self.path / f, mmap_mode="r", allow_pickle=False),
                             np.load(self.path / a, mmap_mode="r", allow_pickle=False)) for f, a in self.shards]
        return self._arrays[shard]

    def _row(self, clip_id: str) -> list[int]:
        if clip_id not in self.clips:
            raise DataError(self.path, f"clip {clip_id!r} is not in this cache (rebuild it: dsol-lite cache)")
        return self.clips[clip_id]

    def frame(self, clip_id: str, k: int) -> np.ndarray:
        shard, row, n, _, _ = self._row(clip_id)
        if not 0 <= k < n:
            raise DataError(self.path, f"clip {clip_id!r} has {n} frames, asked for frame {k}")
        return np.array(self.arrays(shard)[0][row + k])

    def waveform(self, clip_id: str) -> np.ndarray:
        shard, _, _, start, n = self._row(clip_id)
        return self.arrays(shard)[1][start:start + n].astype(np.float32) / 32768

    def frames(self, clip_ids: list[str], ks: list[int]) -> np.ndarray:
        """A batch of frames (B, S, S, 3) uint8 in one gather per shard."""
        out = np.empty((len(clip_ids), self.image_size, self.image_size, 3), np.uint8)
        rows = [self._row(c) for c in clip_ids]
        for shard in {r[0] for r in rows}:
            sel = [i for i, r in enumerate(rows) if r[0] == shard]
            index = np.array([rows[i][1] + ks[i] for i in sel])
            order = np.argsort(index)  # ascending reads are kinder to the page cache
            out[np.array(sel)[order]] = self.arrays(shard)[0][index[order]]
        return out


def open_cache(path: str | Path, manifest: DatasetManifest, image_size: int) -> PreparedCache:
    """Open the cache at ``path`` for ``manifest``'s dataset at ``image_size``; refuse one built
    with other settings, from another version of the data, or from files that changed since."""
    path = Path(path)
    meta_path = path / CACHE_FILE
    if not meta_path.is_file():
        raise DataError(path, f"no {CACHE_FILE}: not a prepared cache. Build it with: dsol-lite cache "
                              f"{manifest.root} {path} --image-size {image_size}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(meta_path, f"not valid JSON ({err})") from None
    if meta.get("schema") != CACHE_SCHEMA:
        raise DataError(meta_path, f"schema {meta.get('schema')!r} is not {CACHE_SCHEMA!r} (built by another version "
                                   f"of dsol_lite). Rebuild it: dsol-lite cache {manifest.root} {path} "
                                   f"--image-size {image_size}")
    problems = []
    if meta["image_size"] != image_size:
        problems.append(f"it holds {meta['image_size']} px frames, training uses {image_size} px")
    if meta["sample_rate"] != manifest.sample_rate:
        problems.append(f"its audio is {meta['sample_rate']} Hz, the dataset's {manifest.sample_rate} Hz")
    if meta["dataset"] != dataset_fingerprint(manifest.root):
        problems.append(f"it was built from another version of the data ({meta['dataset_root']})")
    if problems:
        raise DataError(path, "cache built with other settings than this training: " + "; ".join(problems) +
                        f". Rebuild it: dsol-lite cache {manifest.root} {path} --image-size {image_size}")
    changed = changed_sources(manifest, meta["sources"])
    if changed:
        raise DataError(path, f"stale cache: {len(changed)} of the files it was built from changed since (e.g. "
                              f"{', '.join(changed[:3])}). Rebuild it: dsol-lite cache {manifest.root} {path} "
                              f"--image-size {image_size}")
    for f, a in meta["shards"]:
        for name in (f, a):
            if not (path / name).is_file():
                raise DataError(path / name, "cache shard is missing: rebuild the cache")
    return PreparedCache(path, meta["image_size"], meta["sample_rate"], meta["shards"], meta["clips"])
