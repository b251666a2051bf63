"""A tiny stand-in for MUSIC, made locally: videos, a MUSIC index file and a DSOL box file.

Notebook: 07_real_data_music (quick mode runs the real-data path on it, with no network).

Each video shows one "instrument" (a coloured disk of its class, moving slowly) over a noisy
background and plays its class's tone; half the videos are 25 fps, half 30 fps. The box file
is written exactly as DSOL's: keys ``<id>_0_1000/frame_SSS/NNNNN.jpg`` with NNNNN counted at
30 fps, pixel and normalised ``[x, y, w, h]``, ``category_id`` and the ``wdith`` misspelling.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dsol_lite.data.annotations import DSOL_CATEGORY_IDS
from dsol_lite.data.video import make_video

DEMO_CLASSES = ("cello", "flute", "trumpet")  # boxable in DSOL's files
_COLOURS = {"cello": (200, 60, 40), "flute": (40, 160, 220), "trumpet": (230, 200, 30)}
_TONES = {"cello": 130.8, "flute": 880.0, "trumpet": 466.2}
_IDS = {name: cid for cid, name in DSOL_CATEGORY_IDS.items()}


def _disk_centre(t: float, seconds: float, width: int, height: int, phase: float) -> tuple[float, float]:
    return (width * (0.3 + 0.4 * ((t / seconds + phase) % 1)), height * (0.5 + 0.15 * np.sin(2 * np.pi * t / seconds)))


def make_demo_music(folder: str | Path, videos_per_class: int = 3, seconds: float = 4.0,
                    size: tuple[int, int] = (192, 108), annotated_per_class: int = 1,
                    seed: int = 0) -> dict[str, Path]:
    """Write ``videos/``, ``MUSIC_solo_videos.json`` and ``music_solo_test_boxes.json`` into ``folder``.
    The first ``annotated_per_class`` videos of each class get boxes at the MUSIC key frames."""
    folder, rng = Path(folder), np.random.default_rng(seed)
    width, height = size
    radius = height // 5
    yy, xx = np.mgrid[:height, :width]
    index, boxes = {}, {}
    for c, name in enumerate(DEMO_CLASSES):
        for v in range(videos_per_class):
            video_id = f"demo{name[:4]}{v:02d}x"  # 11 characters, like a YouTube id
            fps = (25, 30)[(c + v) % 2]
            phase = rng.uniform()
            frames = []
            for i in range(int(seconds * fps)):
                cx, cy = _disk_centre(i / fps, seconds, width, height, phase)
                image = rng.integers(60, 120, (height, width, 3), dtype=np.uint8)
                image[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2] = _COLOURS[name]
                frames.append(image)
            t = np.arange(int(seconds * 16000)) / 16000
            audio = 0.3 * np.sin(2 * np.pi * _TONES[name] * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t + c))
            make_video(folder / "videos" / f"{video_id}.mp4", seconds, fps, size, frames=frames, audio=audio,
                       sample_rate=16000)
            index.setdefault(name, []).append(video_id)
            if v < annotated_per_class:
                for n in range(30, int(seconds * 30) - 30):
                    if n % 30 not in (0, 7, 14, 21):
                        continue
                    shown = int(np.floor(n / 30 * fps + 1e-9)) / fps  # the frame on screen at n / 30 s
                    cx, cy = _disk_centre(shown, seconds, width, height, phase)
                    x, y = int(cx - radius), int(cy - radius)
                    boxes[f"{video_id}_0_1000/frame_{n // 30:03d}/{n:05d}.jpg"] = {
                        "bbox": [{"box": [x, y, 2 * radius, 2 * radius],
                                  "normbox": [x / width, y / height, 2 * radius / width, 2 * radius / height],
                                  "category_id": _IDS[name]}], "wdith": width, "height": height}
    paths = {"videos": folder / "videos", "index": folder / "MUSIC_solo_videos.json",
             "boxes": folder / "music_solo_test_boxes.json"}
    paths["index"].write_text(json.dumps({"version": 1.0, "videos": index}, indent=1))
    paths["boxes"].write_text(json.dumps(boxes, indent=1))
    return paths
