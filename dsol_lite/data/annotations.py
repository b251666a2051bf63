"""Readers for the box files and index files real audio-visual datasets ship with.

Notebook: 07_real_data_music.

Every reader returns the same thing: a list of ``FrameBoxes`` (one annotated frame of one
video, its time in seconds and its boxes as *normalised* ``[x1, y1, x2, y2]``) plus the
entries it had to skip and why. Conventions differ between files, and a wrong one is a
silent disaster (boxes shifted by half their size still overlap the object a little):

=====================  ===========================================  ======================
file                   box                                          key -> time
=====================  ===========================================  ======================
DSOL MUSIC solo/duet   ``box`` pixels ``[x, y, w, h]`` of the       ``<id>_0_1000/frame_SSS/
                       ``wdith`` (sic) x ``height`` frame, also     NNNNN.jpg``: NNNNN is a
                       ``normbox`` normalised ``[x, y, w, h]``      frame index at 30 fps
AVGN MUSIC solo/duet   normalised ``[x, y, w, h]`` (AVGN's own      ``<id>_SSS_NNNNN``, 30 fps
                       code reads it as x1, y1, x2, y2: wrong)
VGG-SS                 several normalised ``[x1, y1, x2, y2]``      ``<id>_<start>``: the 10-s
                                                                    clip's middle frame
DSOL AudioSet          ``normbox`` normalised ``[x, y, w, h]``,     ``<id>/<second>``: the
instruments            ``category`` (an id, or a name)              frame at that second
=====================  ===========================================  ======================

Frame keys are turned into times (``NNNNN / 30`` s), never into frame numbers, so a 25-fps
video is sampled at the same instants as the 30-fps one the annotators saw.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsol_lite.errors import AnnotationError, DataError

MUSIC_CLASSES = ("accordion", "acoustic_guitar", "cello", "clarinet", "erhu", "flute", "saxophone", "trumpet",
                 "tuba", "violin", "xylophone")
# category ids of DSOL's MUSIC box files (a detector's classes; the other four are never boxed)
DSOL_CATEGORY_IDS = {1: "cello", 3: "acoustic_guitar", 8: "saxophone", 10: "trumpet", 11: "violin", 12: "flute",
                     13: "accordion"}
ANNOTATION_FPS = 30.0  # the frame rate frame numbers in the MUSIC box keys assume
VGGSS_CLIP_SECONDS = 10.0

_DSOL_KEY = re.compile(r"^(?P<video>.+)_(?P<start>\d+)_(?P<end>\d+)/frame_(?P<second>\d+)/(?P<frame>\d+)\.jpg$")
_AVGN_KEY = re.compile(r"^(?P<video>.+)_(?P<second>\d{3})_(?P<frame>\d{5})$")
_VGGSS_KEY = re.compile(r"^(?P<video>.+)_(?P<start>\d+)$")
_AUDIOSET_KEY = re.compile(r"^(?P<video>[^/]+)/(?P<second>\d+)$")


@dataclass(frozen=True)
class Box:
    """One labelled box, normalised to the frame: ``0 <= x1 < x2 <= 1``, ``0 <= y1 < y2 <= 1``."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float

    def pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Half-open pixel box ``[x1, y1, x2, y2]`` (the layout's convention) in a ``width x height``
        frame: every pixel the box touches, rounded outwards after removing float noise."""
        def lo(v: float, n: int) -> int:
            return min(max(math.floor(round(v * n, 6)), 0), n - 1)

        def hi(v: float, n: int, low: int) -> int:
            return max(min(math.ceil(round(v * n, 6)), n), low + 1)

        x1, y1 = lo(self.x1, width), lo(self.y1, height)
        return x1, y1, hi(self.x2, width, x1), hi(self.y2, height, y1)


@dataclass(frozen=True)
class FrameBoxes:
    """The boxes of one annotated frame: ``video`` id, ``time`` in seconds from the video's start."""

    video: str
    time: float
    boxes: tuple[Box, ...]
    key: str  # the entry's key in its file, for messages
    size: tuple[int, int] | None = None  # (width, height) the annotators saw, when the file says


@dataclass
class BoxFile:
    """What a reader found: the frames and the entries skipped (key, reason)."""

    path: Path
    frames: list[FrameBoxes]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def by_video(self) -> dict[str, list[FrameBoxes]]:
        out: dict[str, list[FrameBoxes]] = {}
        for f in self.frames:
            out.setdefault(f.video, []).append(f)
        return out


def _load(path: str | Path) -> tuple[Path, Any]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "annotation file is missing")
    try:
        return path, json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AnnotationError(path, f"not valid JSON ({err})") from None


def _load_list(path: str | Path) -> tuple[Path, list]:
    """An AVGN or VGG-SS file: a JSON list of ``{file, class, bbox}`` entries."""
    path, d = _load(path)
    if not isinstance(d, list):
        raise AnnotationError(path, f"expected a list of {{file, class, bbox}} entries, got {type(d).__name__}")
    return path, d


def _four_numbers(raw: Any, path: Path, where: str) -> tuple[float, float, float, float]:
    if not (isinstance(raw, list) and len(raw) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                             for v in raw)):
        raise AnnotationError(path, f"{where}: a box must be four numbers, got {raw!r}")
    return tuple(float(v) for v in raw)


def _normalised(label: str, x1: float, y1: float, x2: float, y2: float, path: Path, where: str) -> Box:
    eps = 1e-6
    if not (-eps <= x1 < x2 <= 1 + eps and -eps <= y1 < y2 <= 1 + eps):
        raise AnnotationError(path, f"{where}: box x1={x1:.4f} y1={y1:.4f} x2={x2:.4f} y2={y2:.4f} is empty or "
                                    f"outside the normalised frame [0, 1] (wrong convention?)")
    return Box(label, max(x1, 0.0), max(y1, 0.0), min(x2, 1.0), min(y2, 1.0))


def read_dsol_boxes(path: str | Path, fps: float = ANNOTATION_FPS) -> BoxFile:
    """DSOL's MUSIC solo or duet test boxes (``music_*_test_boxes.json``).

    The pixel ``box`` and the ``normbox`` must agree (within one pixel), which checks the
    ``[x, y, w, h]`` reading on every entry. Frames annotated with no box are skipped.
    """
    path, d = _load(path)
    if not isinstance(d, dict):
        raise AnnotationError(path, f"expected an object keyed by '<id>_0_1000/frame_SSS/NNNNN.jpg', "
                                    f"got {type(d).__name__} (an AVGN or VGG-SS file? use its reader)")
    out = BoxFile(path, [])
    for key, entry in d.items():
        m = _DSOL_KEY.match(key)
        if not m:
            raise AnnotationError(path, f"key {key!r} is not '<id>_<start>_<end>/frame_SSS/NNNNN.jpg'")
        second, frame = int(m["second"]), int(m["frame"])
        if frame // round(fps) != second:
            raise AnnotationError(path, f"{key}: frame {frame} is not in second {second} at {fps:g} fps")
        if not isinstance(entry, dict) or "bbox" not in entry or "height" not in entry:
            raise AnnotationError(path, f"{key}: expected 'bbox', 'height' and 'wdith' (sic) or 'width'")
        width, height = entry.get("wdith", entry.get("width")), entry["height"]
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise AnnotationError(path, f"{key}: frame size {width!r} x {height!r} is not two positive integers")
        if not entry["bbox"]:
            out.skipped.append((key, "annotated frame without a box"))
            continue
        boxes = []
        for j, b in enumerate(entry["bbox"]):
            where = f"{key} bbox[{j}]"
            cat = b.get("category_id") if isinstance(b, dict) else None
            if cat not in DSOL_CATEGORY_IDS:
                raise AnnotationError(path, f"{where}: category_id {cat!r} is not one of {sorted(DSOL_CATEGORY_IDS)}")
            x, y, w, h = _four_numbers(b.get("box"), path, where)
            if "normbox" in b:  # the box DSOL's evaluation draws: kept as it is
                nx, ny, nw, nh = _four_numbers(b["normbox"], path, where)
                if max(abs(x - nx * width), abs(w - nw * width), abs(y - ny * height), abs(h - nh * height)) > 1:
                    raise AnnotationError(path, f"{where}: box {b['box']} and normbox {b['normbox']} disagree "
                                                f"for a {width}x{height} frame")
                boxes.append(_normalised(DSOL_CATEGORY_IDS[cat], nx, ny, nx + nw, ny + nh, path, where))
            else:
                boxes.append(_normalised(DSOL_CATEGORY_IDS[cat], x / width, y / height, (x + w) / width,
                                         (y + h) / height, path, where))
        out.frames.append(FrameBoxes(m["video"], frame / fps, tuple(boxes), key, (width, height)))
    return out


def read_avgn_boxes(path: str | Path, fps: float = ANNOTATION_FPS) -> BoxFile:
    """AVGN's MUSIC solo (``class``, ``bbox``) or duet (``class_src1``, ``bbox_src1``, ...) boxes:
    normalised ``[x, y, w, h]`` keyed by ``<id>_SSS_NNNNN`` (frame NNNNN at 30 fps)."""
    path, d = _load_list(path)
    out = BoxFile(path, [])
    for i, entry in enumerate(d):
        key = entry.get("file") if isinstance(entry, dict) else None
        m = _AVGN_KEY.match(key) if isinstance(key, str) else None
        if not m:
            raise AnnotationError(path, f"entry {i}: 'file' must be '<id>_SSS_NNNNN', got {key!r}")
        suffixes = [""] if "class" in entry else sorted(k[len("class"):] for k in entry if k.startswith("class_src"))
        if not suffixes:
            raise AnnotationError(path, f"{key}: no 'class' or 'class_srcN' field")
        boxes = []
        for s in suffixes:
            label = entry[f"class{s}"]
            if label not in MUSIC_CLASSES:
                raise AnnotationError(path, f"{key}: class {label!r} is not a MUSIC class")
            x, y, w, h = _four_numbers(entry.get(f"bbox{s}"), path, f"{key} bbox{s}")
            boxes.append(_normalised(label, x, y, x + w, y + h, path, f"{key} bbox{s}"))
        out.frames.append(FrameBoxes(m["video"], int(m["frame"]) / fps, tuple(boxes), key))
    return out


def read_vggss_boxes(path: str | Path) -> BoxFile:
    """VGG-SS: ``{file: <id>_<start>, class, bbox: [[x1, y1, x2, y2], ...]}`` normalised, for the
    middle frame of the 10-s clip (``time`` = 5 s into the clip; ``video`` = the clip's file name).
    Degenerate boxes (x2 <= x1 or y2 <= y1; the real file has some) are dropped and counted."""
    path, d = _load_list(path)
    out = BoxFile(path, [])
    for i, entry in enumerate(d):
        key = entry.get("file") if isinstance(entry, dict) else None
        if not (isinstance(key, str) and _VGGSS_KEY.match(key)) or not isinstance(entry.get("bbox"), list):
            raise AnnotationError(path, f"entry {i}: needs 'file' '<id>_<start>' and a list 'bbox', got {entry!r}")
        boxes = []
        for j, raw in enumerate(entry["bbox"]):
            x1, y1, x2, y2 = _four_numbers(raw, path, f"{key} bbox[{j}]")
            if x2 <= x1 or y2 <= y1:
                out.skipped.append((f"{key} bbox[{j}]", f"degenerate box {raw}"))
                continue
            boxes.append(_normalised(str(entry.get("class", "")), x1, y1, x2, y2, path, f"{key} bbox[{j}]"))
        if boxes:
            out.frames.append(FrameBoxes(key, VGGSS_CLIP_SECONDS / 2, tuple(boxes), key))
        else:
            out.skipped.append((key, "no usable box"))
    return out


def read_audioset_boxes(path: str | Path) -> BoxFile:
    """DSOL's AudioSet-instrument boxes (its second benchmark): keyed by ``<id>/<second>``, each a list
    ``bbox`` of ``{category, normbox: [x, y, w, h]}`` normalised, for the frame at that second. A
    numeric category is kept as the label ``"category N"`` (the file names no classes)."""
    path, d = _load(path)
    if not isinstance(d, dict):
        raise AnnotationError(path, f"expected an object keyed by '<id>/<second>', got {type(d).__name__}")
    out = BoxFile(path, [])
    for key, entry in d.items():
        m = _AUDIOSET_KEY.match(key)
        if not m:
            raise AnnotationError(path, f"key {key!r} is not '<youtube id>/<second>'")
        if not isinstance(entry, dict) or not isinstance(entry.get("bbox"), list):
            raise AnnotationError(path, f"{key}: expected {{'bbox': [{{category, normbox}}, ...]}}")
        if not entry["bbox"]:
            out.skipped.append((key, "annotated frame without a box"))
            continue
        boxes = []
        for j, b in enumerate(entry["bbox"]):
            where = f"{key} bbox[{j}]"
            cat = b.get("category") if isinstance(b, dict) else None
            if isinstance(cat, bool) or not isinstance(cat, (int, str)):
                raise AnnotationError(path, f"{where}: 'category' must be an id or a name, got {cat!r}")
            x, y, w, h = _four_numbers(b.get("normbox"), path, where)
            boxes.append(_normalised(cat if isinstance(cat, str) else f"category {cat}", x, y, x + w, y + h, path,
                                     where))
        out.frames.append(FrameBoxes(m["video"], float(m["second"]), tuple(boxes), key))
    return out


def box_file_format(path: str | Path) -> str:
    """Which box file this is, from the structure of *every* entry: "dsol" (MUSIC), "audioset" (DSOL's
    AudioSet instruments), "avgn" or "vggss"; a clear error naming an entry that fits none."""
    path, d = _load(path)
    if isinstance(d, dict):
        if d and all(isinstance(k, str) and _AUDIOSET_KEY.match(k) for k in d):
            return "audioset"
        bad = next((k for k in d if not (isinstance(k, str) and _DSOL_KEY.match(k))), None)
        if bad is None and d:
            return "dsol"
        raise AnnotationError(path, f"key {bad!r} is neither DSOL's MUSIC '<id>_0_1000/frame_SSS/NNNNN.jpg' nor "
                                    f"its AudioSet '<id>/<second>' (an empty file, or another format)")
    if isinstance(d, list) and d and all(isinstance(e, dict) for e in d):
        if any("class_src1" in e for e in d):
            return "avgn"
        boxed = [e["bbox"] for e in d if isinstance(e.get("bbox"), list) and e["bbox"]]
        if boxed and all(isinstance(b[0], list) for b in boxed):
            return "vggss"  # several [x1, y1, x2, y2] per entry (some entries have none)
        if boxed and all(not isinstance(b[0], list) for b in boxed):
            return "avgn"  # one [x, y, w, h] per entry
    raise AnnotationError(path, "not a DSOL (MUSIC or AudioSet), AVGN or VGG-SS box file (see "
                                "dsol_lite.data.annotations)")


def read_boxes(path: str | Path) -> BoxFile:
    """Any of the box files above, recognised by its structure (``box_file_format``)."""
    readers = {"dsol": read_dsol_boxes, "audioset": read_audioset_boxes, "avgn": read_avgn_boxes,
               "vggss": read_vggss_boxes}
    return readers[box_file_format(path)](path)


# the official MUSIC index files (the copies DSOL ships are byte-identical); fetched by checksum
MUSIC_INDEX_URLS = {
    "solo": ("https://raw.githubusercontent.com/roudimit/MUSIC_dataset/master/MUSIC_solo_videos.json",
             "cddd3e9544cac4b5e5ebd55c2707bad0eb6ad29ebff571afb70a5545d4740304"),
    "duet": ("https://raw.githubusercontent.com/roudimit/MUSIC_dataset/master/MUSIC_duet_videos.json",
             "f53c60f22d1901b88a15592b55a7e9891ae70016d08fb6f7ec7acd04091cd2e9"),
}


@dataclass(frozen=True)
class MusicIndex:
    """A MUSIC index file: ``kind`` solo or duet; ``videos`` maps a YouTube id to its classes."""

    path: Path
    kind: str
    videos: dict[str, tuple[str, ...]]


def read_music_index(path: str | Path) -> MusicIndex:
    """``MUSIC_solo_videos.json`` / ``MUSIC_duet_videos.json``: ``{"videos": {class: [ids]}}``;
    duet keys name two classes (``"flute violin"``)."""
    path, d = _load(path)
    if not (isinstance(d, dict) and isinstance(d.get("videos"), dict)):
        raise AnnotationError(path, "expected {\"version\": ..., \"videos\": {class: [youtube ids]}} "
                                    "(a MUSIC index file)")
    videos: dict[str, tuple[str, ...]] = {}
    kinds = set()
    for key, ids in d["videos"].items():
        classes = tuple(key.split())
        bad = [c for c in classes if c not in MUSIC_CLASSES]
        if bad or len(classes) not in (1, 2):
            raise AnnotationError(path, f"videos key {key!r}: expected one or two of {MUSIC_CLASSES}")
        if not (isinstance(ids, list) and all(isinstance(v, str) and re.fullmatch(r"[\w-]{6,}", v) for v in ids)):
            raise AnnotationError(path, f"videos[{key!r}] must be a list of YouTube ids")
        kinds.add(len(classes))
        for v in ids:
            if videos.get(v, classes) != classes:
                raise AnnotationError(path, f"video {v} is listed under {videos[v]} and {classes}")
            videos[v] = classes
    if len(kinds) != 1:
        raise AnnotationError(path, "mixes solo and duet entries")
    return MusicIndex(path, "solo" if kinds == {1} else "duet", videos)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(url: str, dest: str | Path, sha256: str, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` unless a file with the right SHA-256 is already there; the
    download goes to ``dest.part`` and is renamed only when its checksum matches."""
    dest = Path(dest)
    if dest.is_file() and sha256_of(dest) == sha256:
        return dest
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:  # noqa: S310 (https/file)
        while chunk := response.read(1 << 20):
            f.write(chunk)
    got = sha256_of(part)
    if got != sha256:
        part.unlink()
        raise DataError(url, f"SHA-256 is {got}, expected {sha256}: download refused")
    part.replace(dest)
    return dest
