"""Loading training batches: the prepared cache vs decoding files per item, side by side.

    python benchmarks/cache_loader.py                       # a MUSIC-like set made from local videos
    python benchmarks/cache_loader.py --data worlds/quick   # any dataset in the shared layout

Both loaders produce the same batch: B frames as uint8 at the training size and B one-second
16 kHz audio windows around them. The per-item loader does what the original code does for
every clip: decode the JPEG (PIL), resize, load the audio file with librosa, cut the window.
The cache loader gathers rows of memory-mapped arrays (``data.prepared``). Printed: clips/s of
each, measured alternately in one run, and the ratio (the cache is meant to be >= 10x faster).

A third row times what training iterates over: whole batches of ``SoloPairs(train=True,
prepared=...)``, made from the clip store the cache loads into (``data.store``): indexing its
tensors, the random resized crop, flip and colour jitter of the batch, and the audio windows
(the log-mel runs with the model). On a GPU these are a few kernels per batch.

Opening a cache checks that none of the files it was built from changed (their sizes and
modification times, one ``stat`` each); the last line times that check against hashing the
same files' contents (the stricter alternative), on the same files in one run.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
from PIL import Image

from dsol_lite.data.annotations import MusicIndex
from dsol_lite.data.audio import crop_window
from dsol_lite.data.datasets import SoloPairs
from dsol_lite.data.music import PrepareConfig, prepare_music
from dsol_lite.data.prepared import CACHE_FILE, build_cache, changed_sources, open_cache
from dsol_lite.data.schema import read_clip, read_manifest
from dsol_lite.data.video import make_video


def music_like(folder: Path, videos: int, seconds: float) -> Path:
    """Prepared MUSIC-style clips (10-s segments, 256-px-high frames) from locally made videos."""
    rng = np.random.default_rng(0)
    for v in range(videos):
        frames = [rng.integers(0, 255, (360, 640, 3), np.uint8) for _ in range(8)]
        make_video(folder / "videos" / f"video{v:04d}.mp4", seconds, 25, (640, 360), frames=frames,
                   tone_hz=200 + 50 * v)
    index = MusicIndex(folder / "index", "solo", {f"video{v:04d}": ("flute",) for v in range(videos)})
    prepare_music(folder / "music", index, folder / "videos", cfg=PrepareConfig(frames_per_segment=4), progress=False)
    return folder / "music"


def per_item_batch(root: Path, clips, picks: list[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    images, audio = [], []
    for i in picks:
        clip = clips[i]
        frame = clip.frames[len(clip.frames) // 2]
        with Image.open(root / "clips" / clip.clip_id / frame.file) as im:
            images.append(np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR)))
        wave, _ = librosa.load(root / "clips" / clip.clip_id / clip.audio, sr=16000)
        audio.append(window(wave, frame.time))
    return np.stack(images), np.stack(audio)


def cache_batch(cache, clips, picks: list[int]) -> tuple[np.ndarray, np.ndarray]:
    ids = [clips[i].clip_id for i in picks]
    images = cache.frames(ids, [len(clips[i].frames) // 2 for i in picks])
    audio = [window(cache.waveform(c), clips[i].frames[len(clips[i].frames) // 2].time) for c, i in zip(ids, picks)]
    return images, np.stack(audio)


def window(wave: np.ndarray, centre: float) -> np.ndarray:
    return crop_window(wave, 16000, centre, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a dataset in the shared layout (default: make a MUSIC-like one)")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or music_like(Path(tmp), args.videos, args.seconds)
        manifest = read_manifest(root)
        clips = [read_clip(manifest, e.clip_id) for e in manifest.clips if (e.kind, e.split) == ("solo", "train")]
        t = time.perf_counter()
        build_cache(root, Path(tmp) / "cache", args.size, progress=False)
        print(f"{len(clips)} solo training clips in {root}; cache built once in {time.perf_counter() - t:.1f} s")
        cache = open_cache(Path(tmp) / "cache", manifest, args.size)
        rng = np.random.default_rng(0)
        training = SoloPairs(root, "train", image_size=args.size, train=True, prepared=Path(tmp) / "cache",
                             masks=False)  # loads the split into the store once
        position = {c.clip_id: i for i, c in enumerate(training.clips)}
        times = {"per item": [], "cache": [], "training batches (clip store)": []}
        for _ in range(args.rounds):
            picks = rng.choice(len(clips), args.batch, replace=len(clips) < args.batch).tolist()
            for name in times:
                t = time.perf_counter()
                if name == "per item":
                    a = per_item_batch(root, clips, picks, args.size)
                elif name == "cache":
                    b = cache_batch(cache, clips, picks)
                else:
                    batch = training.batch([position[clips[i].clip_id] for i in picks])
                times[name].append(time.perf_counter() - t)
            assert a[0].shape == b[0].shape and a[1].shape == b[1].shape and len(batch["image"]) == len(picks)
        rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
        for k, v in rate.items():
            print(f"{k:>9}: {v:9.0f} clips/s (median of {args.rounds} batches of {args.batch}, one process)")
        print(f"ratio cache / per item: {rate['cache'] / rate['per item']:.1f}x")
        freshness_check(manifest, Path(tmp) / "cache")


def freshness_check(manifest, cache: Path, rounds: int = 3) -> None:
    """Time the stale-cache check (a stat per source file) against hashing the files' contents."""
    import json

    stamps = json.loads((cache / CACHE_FILE).read_text())["sources"]
    paths = [manifest.clip_dir(c) / name for c, files in stamps.items() for name, *_ in files]
    stat, digest = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        assert not changed_sources(manifest, stamps)
        stat.append(time.perf_counter() - t)
        t = time.perf_counter()
        for p in paths:
            hashlib.sha256(p.read_bytes()).digest()
        digest.append(time.perf_counter() - t)
    size = sum(p.stat().st_size for p in paths) / 2 ** 20
    s, d = statistics.median(stat), statistics.median(digest)
    print(f"stale-cache check of {len(paths)} source files ({size:.0f} MB): sizes and times {1000 * s:.0f} ms, "
          f"content hashes {1000 * d:.0f} ms ({d / s:.0f}x; medians of {rounds}, files in the page cache)")


if __name__ == "__main__":
    main()
